"""Find and load the plugin libraries built from ``csrc/`` (``scripts/build_plugins.sh``).

Libraries are looked for in ``$OPTIM_PLUGIN_DIR``, then in ``build/plugins/`` at the
repository root. ``status()`` says, per library, whether it is built and loadable and
why not; ``cpu_library()`` loads the CPU preprocessing library with ctypes.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from optim.errors import BackendUnavailable

REPO = Path(__file__).resolve().parents[2]
LIBRARIES = {
    "cpu": ("liboptim_preprocess_cpu.so", "CPU preprocessing op (ONNX Runtime route)"),
    "cuda": ("liboptim_preprocess_cuda.so", "CUDA preprocessing kernel (sm_90)"),
    "tensorrt": ("liboptim_preprocess_trt.so", "TensorRT plugin OptimPreprocess (namespace optim)"),
}
BUILD_HINT = ("build them with: bash scripts/build_plugins.sh (the TensorRT glue also needs the TensorRT headers: "
              "TENSORRT_ROOT=/path/to/TensorRT bash scripts/build_plugins.sh)")


def plugin_dirs() -> list[Path]:
    dirs = [Path(os.environ["OPTIM_PLUGIN_DIR"])] if os.environ.get("OPTIM_PLUGIN_DIR") else []
    return dirs + [REPO / "build" / "plugins"]


def find(kind: str) -> Path | None:
    name = LIBRARIES[kind][0]
    return next((d / name for d in plugin_dirs() if (d / name).is_file()), None)


@dataclass
class PluginStatus:
    kind: str
    what: str
    path: Path | None
    loadable: bool
    why: str


def status() -> list[PluginStatus]:
    out = []
    for kind, (name, what) in LIBRARIES.items():
        path = find(kind)
        if path is None:
            why = {"cuda": "not built (needs nvcc at build time)",
                   "tensorrt": "not built (needs the TensorRT headers at build time)"}.get(kind, "not built")
            out.append(PluginStatus(kind, what, None, False, f"{why}; {BUILD_HINT}"))
            continue
        try:
            ctypes.CDLL(str(path))
            out.append(PluginStatus(kind, what, path, True, "loads"))
        except OSError as exc:
            reason = str(exc).split(":")[-1].strip() or "dlopen failed"
            out.append(PluginStatus(kind, what, path, False, f"built but does not load here ({reason})"))
    return out


class Params(ctypes.Structure):
    """Mirror of ``OptimPreprocessParams`` in csrc/preprocess/preprocess_api.h."""

    _fields_ = [
        ("n", ctypes.c_int64), ("h", ctypes.c_int64), ("w", ctypes.c_int64), ("c", ctypes.c_int64),
        ("out_h", ctypes.c_int64), ("out_w", ctypes.c_int64), ("scale", ctypes.c_float),
        ("mean", ctypes.c_float * 3), ("std", ctypes.c_float * 3),
        ("bgr", ctypes.c_int32), ("out_fp16", ctypes.c_int32),
    ]


@lru_cache(maxsize=1)
def cpu_library() -> ctypes.CDLL:
    path = find("cpu")
    if path is None:
        raise BackendUnavailable(f"the CPU preprocessing library ({LIBRARIES['cpu'][0]}) is not built; "
                                 f"{BUILD_HINT}")
    lib = ctypes.CDLL(str(path))
    for fn in (lib.optim_preprocess_cpu, lib.optim_preprocess_cpu_f32):
        fn.argtypes = [ctypes.POINTER(Params), ctypes.c_void_p, ctypes.c_void_p]
        fn.restype = ctypes.c_int
    lib.optim_preprocess_version.restype = ctypes.c_char_p
    return lib
