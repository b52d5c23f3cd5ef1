"""The tiny CNN with optim's preprocessing op fused in front (uint8 BGR frames 21x27 in)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def write_fused(folder: Path, tiny_onnx: Path):
    """folder/tiny.frames.onnx and its PreprocessOp; the body of the ``fused`` fixture."""
    import onnx

    from optim.ops.preprocess import PreprocessOp, prepend

    op = PreprocessOp(out_h=16, out_w=16, channel_order="BGR", **IMAGENET)
    out = folder / "tiny.frames.onnx"
    onnx.save(prepend(onnx.load(str(tiny_onnx)), op, (21, 27)), str(out))
    return out, op


def random_frames(n, h, w, c, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)
