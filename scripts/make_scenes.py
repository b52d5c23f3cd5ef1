"""Write Fashion-MNIST detection scenes: <split>.npz (images + boxes) and <split>.json (COCO).

Training scenes come from the training images (Debian ``dataset-fashion-mnist``, else the
1,024 bundled ones), evaluation scenes from the test images only. The same seed gives the
same bytes. Usage:

    .venv/bin/python scripts/make_scenes.py --out data/scenes --train 4000 --eval 500 --seed 0

(the training script draws its own training scenes; the evaluation set it scores is
``--eval 500 --seed 0`` at 160x160).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from optim.data.scenes import make_scenes, source_images, write_split


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for train.* and eval.*")
    ap.add_argument("--train", type=int, default=4000, help="training scenes (0: none)")
    ap.add_argument("--eval", type=int, default=500, help="evaluation scenes (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, nargs=2, default=(160, 160), metavar=("H", "W"))
    ap.add_argument("--png", action="store_true", help="also one PNG per scene under <split>/")
    args = ap.parse_args(argv)
    for split, n in (("train", args.train), ("eval", args.eval)):
        if n <= 0:
            continue
        items, labels, where = source_images(split)
        scenes = make_scenes(split, n, seed=args.seed, size=tuple(args.size), source=(items, labels))
        paths = write_split(scenes, args.out, png=args.png)
        boxes = sum(len(b) for b in scenes.boxes)
        print(f"{split}: {n} scenes, {boxes} boxes, items from {where}")
        for kind in ("npz", "json"):
            digest = hashlib.sha256(paths[kind].read_bytes()).hexdigest()
            print(f"  {paths[kind]}  sha256 {digest}")


if __name__ == "__main__":
    main()
