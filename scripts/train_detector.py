"""Train the bundled detector (``bundled:fashion_detector``, YOLOv8n structure) on Fashion-MNIST scenes.

Data: every epoch draws fresh training scenes (``optim.data.scenes``, 160x160) from the
Fashion-MNIST *training* images (Debian ``dataset-fashion-mnist``): epoch ``e`` uses scenes
``e * n .. (e + 1) * n - 1`` of the seed, so a run is reproducible and never shows the
model the same scene twice. mAP is measured on evaluation scenes made from the *test*
images only (``make_scenes("eval", 500, seed=0)``, what ``scripts/make_scenes.py`` writes).

Loss (YOLOv8's recipe, written here):

* assignment: task-aligned (TAL). For each ground-truth box, the anchors whose centre lies
  inside it are candidates; each gets ``s ** 0.5 * iou ** 6`` (``s`` the predicted score of
  the box's class, ``iou`` of the predicted box with the ground truth); the top 10 are
  positives; an anchor claimed by two boxes goes to the one it overlaps most. The class
  target of a positive is that alignment, normalised so that the best anchor of each box
  gets the box's best IoU (a soft, quality-aware target); every other anchor's target is 0.
* losses: BCE on all class logits against those targets; for positives, CIoU loss and DFL
  (cross-entropy on the two bins around each left/top/right/bottom distance), both
  weighted by the target score; all three divided by the sum of target scores.
  Total = 7.5 box + 0.5 cls + 1.5 dfl.
* AdamW (weight decay on conv weights only), linear warm-up then cosine decay, an EMA of
  the weights (what is evaluated and saved), gradient clipping at norm 10.

Speed on 2 CPU cores: channels-last, and bfloat16 autocast for the forward pass where the
CPU has native bf16 (``--bf16 auto``; the loss, the optimizer and the saved weights stay
FP32). A time budget (``--max-minutes``, default 55) bounds the run on a shared machine:
the cosine schedule follows whichever of steps or time is further along and training
stops when either is spent, so the learning rate always anneals. With
``--max-minutes 0`` the run depends only on the seed (on one machine and thread count).
One thread by default: on 2 shared cores, 2 threads ran 5-10x slower a step than 1 whenever
another process was busy.

Usage (``nice`` it on a shared machine):

    nice -n 19 .venv/bin/python scripts/train_detector.py            # the bundled weights (55 min)
    .venv/bin/python scripts/train_detector.py --smoke --out /tmp/d  # a few seconds' check

Writes ``OUT/fashion_detector.safetensors`` and ``OUT/fashion_detector.json`` (seed,
epochs, time, final mAP on the evaluation scenes); OUT is ``optim/sources/weights``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from optim.data.scenes import make_scenes, source_images
from optim.sources.detector import REG_MAX, FashionDetector, make_anchors
from optim.tasks.detect_ops import BoxLabels, coco_map, decode

OUT = Path(__file__).resolve().parents[1] / "optim" / "sources" / "weights"
GAINS = {"box": 7.5, "cls": 0.5, "dfl": 1.5}
TOPK, ALPHA, BETA = 10, 0.5, 6.0


def box_iou_pairs(a: torch.Tensor, b: torch.Tensor, ciou: bool = False, eps: float = 1e-7) -> torch.Tensor:
    """IoU (or CIoU) of matching xyxy boxes ``a[..., 4]`` and ``b[..., 4]``."""
    iw = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(0)
    ih = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(0)
    wa, ha = a[..., 2] - a[..., 0], a[..., 3] - a[..., 1] + eps
    wb, hb = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1] + eps
    inter = iw * ih
    iou = inter / (wa * ha + wb * hb - inter + eps)
    if not ciou:
        return iou
    cw = torch.maximum(a[..., 2], b[..., 2]) - torch.minimum(a[..., 0], b[..., 0])
    ch = torch.maximum(a[..., 3], b[..., 3]) - torch.minimum(a[..., 1], b[..., 1])
    c2 = cw ** 2 + ch ** 2 + eps
    rho2 = ((a[..., 0] + a[..., 2] - b[..., 0] - b[..., 2]) ** 2 + (a[..., 1] + a[..., 3] - b[..., 1] - b[..., 3]) ** 2) / 4
    v = (4 / math.pi ** 2) * (torch.atan(wb / hb) - torch.atan(wa / ha)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


@torch.no_grad()
def assign(scores: torch.Tensor, pboxes: torch.Tensor, centers: torch.Tensor, gt_boxes: torch.Tensor,
           gt_cls: torch.Tensor, gt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Task-aligned assignment. scores (B, A, nc) sigmoid, pboxes (B, A, 4) px, centers (A, 2) px,
    gt_boxes (B, M, 4), gt_cls (B, M), gt_mask (B, M). Returns target boxes (B, A, 4),
    target scores (B, A, nc) and the positive mask (B, A)."""
    b, a, nc = scores.shape
    m = gt_boxes.shape[1]
    if m == 0:
        return pboxes.new_zeros(b, a, 4), scores.new_zeros(b, a, nc), torch.zeros(b, a, dtype=torch.bool)
    c = centers.view(1, 1, a, 2)
    inside = torch.cat((c - gt_boxes[:, :, None, :2], gt_boxes[:, :, None, 2:] - c), -1).amin(-1) > 1e-9
    inside &= gt_mask[:, :, None]
    iou = box_iou_pairs(gt_boxes[:, :, None, :], pboxes[:, None, :, :]).clamp(0) * inside  # (B, M, A)
    cls_score = scores.gather(2, gt_cls.clamp(min=0)[:, None, :].expand(b, a, m)).permute(0, 2, 1)  # (B, M, A)
    align = cls_score.pow(ALPHA) * iou.pow(BETA) * inside
    top = align.topk(min(TOPK, a), dim=-1).indices
    pos = torch.zeros_like(align, dtype=torch.bool).scatter_(-1, top, True) & inside
    multi = pos.sum(1, keepdim=True) > 1  # anchors claimed by several boxes: keep the best IoU
    if multi.any():
        best = torch.zeros_like(pos).scatter_(1, iou.argmax(1, keepdim=True), True)
        pos = torch.where(multi, best, pos)
    fg = pos.any(1)  # (B, A)
    idx = pos.float().argmax(1)  # (B, A)
    tboxes = gt_boxes.gather(1, idx[..., None].expand(b, a, 4))
    tcls = gt_cls.gather(1, idx).clamp(min=0)
    align = align * pos
    norm = (align * (iou * pos).amax(-1, keepdim=True) / (align.amax(-1, keepdim=True) + 1e-9)).amax(1)  # (B, A)
    tscores = F.one_hot(tcls, nc).float() * (norm * fg)[..., None]
    return tboxes, tscores, fg


def detection_loss(model: FashionDetector, x: torch.Tensor, gt_boxes: torch.Tensor, gt_cls: torch.Tensor,
                   gt_mask: torch.Tensor, bf16: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        dist, logits, shapes = model.forward_train(x)
    dist, logits = dist.float(), logits.float()
    b = x.shape[0]
    points, strides = make_anchors(shapes)  # (A, 2) cells, (A, 1)
    dist = dist.view(b, 4, REG_MAX, -1).permute(0, 3, 1, 2)  # (B, A, 4, R)
    logits = logits.permute(0, 2, 1)  # (B, A, nc)
    ltrb = (dist.softmax(-1) * torch.arange(REG_MAX, dtype=dist.dtype)).sum(-1)  # cells
    pboxes = torch.cat((points - ltrb[..., :2], points + ltrb[..., 2:]), -1) * strides  # px
    tboxes, tscores, fg = assign(logits.detach().sigmoid(), pboxes.detach(), points * strides, gt_boxes,
                                 gt_cls, gt_mask)
    tss = tscores.sum().clamp(min=1.0)
    loss_cls = F.binary_cross_entropy_with_logits(logits, tscores, reduction="sum") / tss
    if fg.any():
        w = tscores.sum(-1)[fg]
        loss_box = ((1.0 - box_iou_pairs(pboxes[fg], tboxes[fg], ciou=True)) * w).sum() / tss
        anchor = (points[None].expand(b, -1, -1))[fg]
        s = strides[None].expand(b, -1, -1)[fg]
        target = torch.cat((anchor - tboxes[fg][:, :2] / s, tboxes[fg][:, 2:] / s - anchor), -1)
        target = target.clamp(0, REG_MAX - 1 - 0.01)
        left = target.long()
        wl = left + 1 - target
        logp = dist[fg].log_softmax(-1)  # (P, 4, R)
        dfl = -(logp.gather(-1, left[..., None])[..., 0] * wl + logp.gather(-1, (left + 1)[..., None])[..., 0] * (1 - wl))
        loss_dfl = (dfl.mean(-1) * w).sum() / tss
    else:
        loss_box = loss_dfl = logits.sum() * 0.0
    total = GAINS["box"] * loss_box + GAINS["cls"] * loss_cls + GAINS["dfl"] * loss_dfl
    return total, {"box": float(loss_box.detach()), "cls": float(loss_cls.detach()), "dfl": float(loss_dfl.detach())}


def batch_targets(boxes: list[np.ndarray], classes: list[np.ndarray]) -> tuple[torch.Tensor, ...]:
    m = max((len(b) for b in boxes), default=0)
    gb, gc, gm = torch.zeros(len(boxes), m, 4), torch.full((len(boxes), m), -1, dtype=torch.long), \
        torch.zeros(len(boxes), m, dtype=torch.bool)
    for i, (b, c) in enumerate(zip(boxes, classes)):
        gb[i, : len(b)] = torch.from_numpy(b)
        gc[i, : len(c)] = torch.from_numpy(c)
        gm[i, : len(b)] = True
    return gb, gc, gm


def to_input(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0).contiguous()


@torch.no_grad()
def evaluate(model: FashionDetector, scenes, batch: int = 50) -> dict[str, float]:
    model.eval()
    out = np.concatenate([model(to_input(scenes.images[i : i + batch])).numpy()
                          for i in range(0, len(scenes), batch)])
    return coco_map(BoxLabels(scenes.boxes, scenes.classes), decode(out), model.nc)


class EMA:
    """Exponential moving average of the weights; decay ramps up over the first ``tau`` updates."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999, tau: float = 400.0) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        src = model.state_dict()
        for k, v in self.model.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src[k].detach(), alpha=1 - d)
            else:
                v.copy_(src[k])


def param_groups(model: torch.nn.Module, wd: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim == 4 else no_decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--scenes-per-epoch", type=int, default=4000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--warmup-steps", type=int, default=300)
    ap.add_argument("--size", type=int, default=160, help="scene side in pixels (multiple of 32)")
    ap.add_argument("--eval-scenes", type=int, default=500)
    ap.add_argument("--eval-every", type=int, default=10, help="epochs between evaluations (and the last)")
    ap.add_argument("--variant", default="n", choices=("n", "s"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads; 1 by default: on 2 shared cores, 2 threads ran 5-10x slower a step "
                         "than 1 whenever another process was busy (threads wait on each other at every op)")
    ap.add_argument("--max-minutes", type=float, default=55.0,
                    help="time budget: the LR schedule follows max(step share, time share) and training stops "
                         "when either is used up (0: steps only, fully reproducible)")
    ap.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                    help="bfloat16 autocast for the forward pass (auto: where the CPU has native bf16)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--smoke", action="store_true", help="a one-minute check: 2 epochs of 64 scenes, 32 eval scenes")
    args = ap.parse_args(argv)
    if args.smoke:
        args.epochs, args.scenes_per_epoch, args.eval_scenes, args.eval_every, args.warmup_steps = 2, 64, 32, 1, 2
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    size = (args.size, args.size)
    train_src = source_images("train")
    eval_scenes = make_scenes("eval", args.eval_scenes, seed=0, size=size)
    model = FashionDetector(variant=args.variant).to(memory_format=torch.channels_last)
    model.head.init_bias(args.size)
    bf16 = args.bf16 == "on" or (args.bf16 == "auto" and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    ema = EMA(model)
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.999))
    steps_per_epoch = math.ceil(args.scenes_per_epoch / args.batch_size)
    total = args.epochs * steps_per_epoch

    budget = args.max_minutes * 60.0

    def progress(step: int) -> float:
        return max(step / total, (time.time() - t0) / budget if budget > 0 else 0.0)

    def lr_at(step: int) -> float:
        if step < args.warmup_steps:
            return args.lr * (step + 1) / args.warmup_steps
        p = min(1.0, progress(step))
        return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * p)))

    t0, step, history, stopped = time.time(), 0, [], False
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        if stopped:
            break
        scenes = make_scenes("train", args.scenes_per_epoch, seed=args.seed, size=size,
                             start=epoch * args.scenes_per_epoch, source=train_src[:2])
        model.train()
        perm = torch.randperm(len(scenes), generator=gen).numpy()
        sums, done = {"box": 0.0, "cls": 0.0, "dfl": 0.0}, 0
        for i in range(0, len(perm), args.batch_size):
            if step >= args.warmup_steps and progress(step) >= 1.0:
                stopped = True  # the time budget is spent
                break
            idx = perm[i : i + args.batch_size]
            gb, gc, gm = batch_targets([scenes.boxes[j] for j in idx], [scenes.classes[j] for j in idx])
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            x = to_input(scenes.images[idx]).contiguous(memory_format=torch.channels_last)
            loss, parts = detection_loss(model, x, gb, gc, gm, bf16)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            ema.update(model)
            step += 1
            done += 1
            if step % 50 == 0:
                print(f"step {step}: loss {float(loss.detach()):.3f}, lr {lr_at(step):.2e}, "
                      f"{time.time() - t0:.0f} s", flush=True)
            for k in sums:
                sums[k] += parts[k]
        rec = {"epoch": epoch + 1, "seconds": round(time.time() - t0), **{k: round(v / max(done, 1), 4) for k, v in sums.items()}}
        rec["steps"] = step
        if (epoch + 1) % args.eval_every == 0 and epoch + 1 < args.epochs and not stopped:
            rec.update({k: round(v, 2) for k, v in evaluate(ema.model, eval_scenes[:200]).items()})
        history.append(rec)
        print(json.dumps(rec), flush=True)
    seconds = round(time.time() - t0)
    final = evaluate(ema.model, eval_scenes)
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in ema.model.state_dict().items()}, str(args.out / "fashion_detector.safetensors"))
    meta = {
        "model": f"FashionDetector (YOLOv8{args.variant} structure)", "variant": args.variant,
        "dataset": f"Fashion-MNIST detection scenes {args.size}x{args.size} (optim.data.scenes); training "
                   f"images from {train_src[2]}, evaluation scenes from the test images",
        "eval_scenes": {"split": "eval", "n": args.eval_scenes, "seed": 0, "size": args.size},
        "eval_map50_95": round(final["map"], 2), "eval_map50": round(final["map50"], 2),
        "seed": args.seed, "epochs": len(history), "epochs_planned": args.epochs,
        "scenes_per_epoch": args.scenes_per_epoch, "stopped_by_time_budget": stopped, "max_minutes": args.max_minutes,
        "bf16_autocast": bf16, "steps": step, "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
        "loss": "TAL assignment (top 10, alpha 0.5, beta 6), BCE + CIoU + DFL (7.5 / 0.5 / 1.5), EMA",
        "train_seconds": seconds, "threads": args.threads, "torch": torch.__version__,
        "host": platform.processor() or platform.machine(), "history": history,
    }
    (args.out / "fashion_detector.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps({k: v for k, v in meta.items() if k != "history"}))
    return meta


if __name__ == "__main__":
    main()
