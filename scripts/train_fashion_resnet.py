"""Train the bundled default model on Fashion-MNIST (run once; weights are committed).

Data: the Debian package ``dataset-fashion-mnist`` (Expat licence), installed with
``apt-get install dataset-fashion-mnist``. Usage:

    .venv/bin/python scripts/train_fashion_resnet.py --epochs 8

Writes ``optim/sources/weights/fashion_resnet.safetensors`` and a JSON sidecar
with the training settings and the measured test accuracy.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from optim.data.idx import read_idx
from optim.sources.fashion_resnet import MEAN, STD, FashionResNet

DATA = Path("/usr/share/datasets/fashion-mnist")
OUT = Path(__file__).resolve().parents[1] / "optim" / "sources" / "weights"


def load(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images = read_idx(DATA / f"{split}-images-idx3-ubyte.gz")
    labels = read_idx(DATA / f"{split}-labels-idx1-ubyte.gz")
    x = (torch.from_numpy(images).float().div(255.0).unsqueeze(1) - MEAN) / STD
    return x, torch.from_numpy(labels.astype(np.int64))


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a random shift of up to 2 pixels."""
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    pad = nn.functional.pad(x, (2, 2, 2, 2), value=float(-MEAN / STD))
    dy, dx = torch.randint(0, 5, (2,), generator=gen).tolist()
    return pad[:, :, dy : dy + 28, dx : dx + 28]


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = sum(
        (model(x[i : i + 1000]).argmax(1) == y[i : i + 1000]).sum().item()
        for i in range(0, len(x), 1000)
    )
    return 100.0 * correct / len(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    xtr, ytr = load("train")
    xte, yte = load("t10k")
    model = FashionResNet()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
    steps = args.epochs * ((len(xtr) + args.batch_size - 1) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr), args.batch_size):
            idx = perm[i : i + args.batch_size]
            loss = loss_fn(model(augment(xtr[idx], gen)), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        acc = evaluate(model, xte, yte)
        print(f"epoch {epoch + 1}/{args.epochs}: test top-1 {acc:.2f}% "
              f"({time.time() - t0:.0f} s)", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, OUT / "fashion_resnet.safetensors")
    meta = {
        "model": "FashionResNet", "dataset": "Fashion-MNIST (Debian dataset-fashion-mnist)",
        "test_top1": round(acc, 2), "epochs": args.epochs, "batch_size": args.batch_size,
        "lr": args.lr, "seed": args.seed, "torch": torch.__version__,
        "train_seconds": round(time.time() - t0), "host": platform.processor() or platform.machine(),
    }
    (OUT / "fashion_resnet.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
