"""Shared fixtures: a tiny CNN built in code, its exported ONNX, small data, a hand-written run folder,
the fused preprocessing model and a toy backend. The helpers they use live in tests/helpers/."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OPTIM_NO_PROGRESS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

from tests.helpers import REPO  # noqa: E402
# tiny_cnn stays importable from here: recipes and commands name the model source tests.conftest:tiny_cnn
from tests.helpers.models import TINY_SHAPE, tiny_cnn  # noqa: E402,F401
from tests.helpers.plugins import write_fused  # noqa: E402
from tests.helpers.runs import write_run_folder  # noqa: E402


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    from optim.stages.export import onnx_from_torch
    from optim.settings import ExportSettings, InputSpec
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


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A run folder written by hand: fp32, int8-tensorrt (a gate failed) and bf16 (bench skipped)."""
    return write_run_folder(tmp_path)


@pytest.fixture(scope="module")
def fused(tmp_path_factory, tiny_onnx):
    """(tiny CNN with the preprocessing op fused in front, that PreprocessOp)."""
    return write_fused(tmp_path_factory.mktemp("fused"), tiny_onnx)


@pytest.fixture
def toy_backend():
    """Backend "toy" (runs .toy files) for one test."""
    from tests.helpers.runners import toy_backend_registered

    with toy_backend_registered() as name:
        yield name


@pytest.fixture(scope="module")
def cpu_library_built():
    """The csrc/ CPU preprocessing library, built if missing (tests/test_plugins.py, tests/test_fuse.py)."""
    from optim.ops.plugins import find

    if find("cpu") is None:
        subprocess.run(["bash", str(REPO / "scripts/build_plugins.sh")], check=True, capture_output=True)
    assert find("cpu") is not None, "scripts/build_plugins.sh did not build the CPU library"
