"""Shared fixtures: a tiny CNN built in code, its exported ONNX, and small data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OPTIM_NO_PROGRESS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

REPO = Path(__file__).resolve().parents[1]
TINY_SHAPE = (3, 16, 16)


def tiny_cnn(seed: int = 0):
    """Wide enough (32 channels) that FP8 quantizes its convolutions."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 5),
    ).eval()


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    from optim.stages.export import onnx_from_torch
    from optim.recipe import ExportSettings, InputSpec
    from optim.sources import LoadedModel

    out = tmp_path_factory.mktemp("tiny") / "tiny.fp32.onnx"
    onnx_from_torch(LoadedModel(tiny_cnn(), "tests:tiny_cnn", None), InputSpec(shape=TINY_SHAPE),
                    ExportSettings(output_names=("logits",)), out)
    return out


@pytest.fixture(scope="session")
def calib_x() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((32, *TINY_SHAPE)).astype(np.float32)


@pytest.fixture(scope="session")
def eval_xy(tiny_onnx) -> tuple[np.ndarray, np.ndarray]:
    """Inputs, and labels = the FP32 model's own predictions (so FP32 top-1 is 100%)."""
    from optim.backends import open_runner

    x = np.random.default_rng(2).standard_normal((64, *TINY_SHAPE)).astype(np.float32)
    with open_runner(tiny_onnx) as r:
        y = r.infer({"input": x})["logits"].argmax(1)
    return x, y.astype(np.int64)
