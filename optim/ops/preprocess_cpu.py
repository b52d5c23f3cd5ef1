"""The preprocessing op on CPU: the csrc/ library through ctypes, and its ONNX Runtime registration.

``run_cpu`` calls ``optim_preprocess_cpu`` (the arithmetic of csrc/preprocess/preprocess.h).
``register()`` defines the onnxruntime-extensions Python op ``OptimPreprocess`` (domain
``ai.onnx.contrib``) whose body is ``run_cpu``; sessions then register
``onnxruntime_extensions.get_library_path()`` to find it.
"""

from __future__ import annotations

import ctypes

import numpy as np

from optim.errors import DataError
from optim.ops.preprocess import OP_TYPE, PreprocessOp
from optim.ops.plugins import Params, cpu_library

_registered = False


def make_params(shape: tuple[int, ...], op: PreprocessOp) -> Params:
    """The C struct for frames of ``shape`` (N, H, W, C) and ``op``."""
    n, h, w, c = shape
    mean, std = op.channels(c)
    f3 = ctypes.c_float * 3
    return Params(n, h, w, c, op.out_h, op.out_w, op.scale, f3(*np.resize(mean, 3).tolist()),
                  f3(*np.resize(std, 3).tolist()), int(op.channel_order == "BGR" and c == 3),
                  int(op.out_dtype == "float16"))


def run_cpu(frames: np.ndarray, op: PreprocessOp) -> np.ndarray:
    """The op on uint8 frames, or on frames already cast to float32 (what the graph feeds it)."""
    if frames.dtype not in (np.uint8, np.float32) or frames.ndim != 4 or frames.shape[3] not in (1, 3):
        raise DataError(f"frames must be uint8 or float32 (N,H,W,C) with C 1 or 3, got "
                        f"{frames.dtype} {frames.shape}")
    frames = np.ascontiguousarray(frames)
    n, h, w, c = frames.shape
    p = make_params(frames.shape, op)
    out = np.empty((n, c, op.out_h, op.out_w), np.uint16 if op.out_dtype == "float16" else np.float32)
    lib = cpu_library()
    fn = lib.optim_preprocess_cpu if frames.dtype == np.uint8 else lib.optim_preprocess_cpu_f32
    rc = fn(p, frames.ctypes.data, out.ctypes.data)
    if rc != 0:
        raise DataError(f"optim_preprocess_cpu refused its parameters (code {rc})")
    return out.view(np.float16) if op.out_dtype == "float16" else out


def register() -> None:
    """Define the ONNX Runtime custom op (once per process)."""
    global _registered
    if _registered:
        return
    cpu_library()  # fail here, with the build hint, if the library is missing
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    attrs = {"scale": PyCustomOpDef.dt_float, "mean": PyCustomOpDef.dt_string,
             "std": PyCustomOpDef.dt_string, "out_h": PyCustomOpDef.dt_int64,
             "out_w": PyCustomOpDef.dt_int64, "out_dtype": PyCustomOpDef.dt_string,
             "channel_order": PyCustomOpDef.dt_string}

    @onnx_op(op_type=OP_TYPE, inputs=[PyCustomOpDef.dt_float], outputs=[PyCustomOpDef.dt_float], attrs=attrs)
    def _optim_preprocess(frames, **kw):  # frames: float32 NHWC, cast from uint8 by the graph
        # float16 results travel as float32 (the Python op API has no float16 outputs);
        # the values are float16-exact and the graph's Cast gives them their type.
        return run_cpu(frames, PreprocessOp.from_attributes(kw)).astype(np.float32)

    _registered = True
