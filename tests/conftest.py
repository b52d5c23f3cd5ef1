"""Shared fixtures: a tiny CNN built in code, its exported ONNX, and small data."""

from __future__ import annotations

import os
import shutil
import subprocess
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


def _cxx_compiler() -> str | None:
    cxx = os.environ.get("CXX", "").split()
    for name in ([cxx[0]] if cxx else []) + ["c++", "g++", "clang++"]:
        if shutil.which(name):
            return name
    return None


@pytest.fixture(scope="session")
def plugin_libraries() -> Path:
    """The csrc/ plugin libraries, built once per session (``bash scripts/build_plugins.sh``,
    incremental). Returns the CPU preprocessing library. Skips when cmake or a C++ compiler
    is missing and no library was built before; a failing build is a test failure."""
    from optim.ops.plugins import find

    missing = [what for what, ok in (("cmake", shutil.which("cmake")), ("a C++ compiler", _cxx_compiler()))
               if not ok]
    if missing:
        if find("cpu") is not None:
            return find("cpu")
        pytest.skip(f"the csrc/ plugin libraries are not built and cannot be: {' and '.join(missing)} "
                    "not found (apt-get install cmake g++, then bash scripts/build_plugins.sh)")
    done = subprocess.run(["bash", str(REPO / "scripts/build_plugins.sh")], cwd=REPO,
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"scripts/build_plugins.sh failed:\n{done.stdout}\n{done.stderr}", pytrace=False)
    lib = find("cpu")
    assert lib is not None, f"scripts/build_plugins.sh did not build the CPU library:\n{done.stdout}"
    return lib
