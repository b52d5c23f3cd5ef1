"""The csrc/ preprocessing libraries: where scripts/build_plugins.sh puts them, their parameter struct,
and building them when missing."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO

PLUGINS = REPO / "build" / "plugins"
CPU_LIB = PLUGINS / "liboptim_preprocess_cpu.so"
CUDA_LIB = PLUGINS / "liboptim_preprocess_cuda.so"


class Params(ctypes.Structure):
    """OptimPreprocessParams of csrc/preprocess/preprocess_api.h."""

    _fields_ = [(name, ctypes.c_int64) for name in ("n", "h", "w", "c", "out_h", "out_w")] + [
        ("scale", ctypes.c_float), ("mean", ctypes.c_float * 3), ("std", ctypes.c_float * 3),
        ("bgr", ctypes.c_int32), ("out_fp16", ctypes.c_int32)]


def build_if_missing(*libs: Path) -> None:
    if all(lib.exists() for lib in libs):
        return
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed, so csrc/ cannot be built (apt-get install cmake)")
    done = subprocess.run(["bash", "scripts/build_plugins.sh"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, f"scripts/build_plugins.sh failed:\n{done.stdout}\n{done.stderr}"
