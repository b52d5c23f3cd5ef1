"""csrc/ build: the CPU preprocessing library against a NumPy reference written here, and
the CUDA library compiled for sm_90 (cuobjdump from the nvidia-cuda-cuobjdump wheel)."""

from __future__ import annotations

import ctypes
import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.csrc import CPU_LIB, CUDA_LIB, Params, build_if_missing


@pytest.fixture(scope="module")
def cpu_lib() -> ctypes.CDLL:
    build_if_missing(CPU_LIB)
    lib = ctypes.CDLL(str(CPU_LIB))
    lib.optim_preprocess_cpu.argtypes = [ctypes.POINTER(Params), ctypes.c_void_p, ctypes.c_void_p]
    lib.optim_preprocess_cpu.restype = ctypes.c_int
    lib.optim_preprocess_version.restype = ctypes.c_char_p
    return lib


def make_params(frames, out_hw, scale, mean, std, bgr, fp16) -> Params:
    n, h, w, c = frames.shape
    return Params(n, h, w, c, out_hw[0], out_hw[1], scale, (ctypes.c_float * 3)(*mean),
                  (ctypes.c_float * 3)(*std), int(bgr), int(fp16))


def run_cpu(lib, frames, out_hw, scale, mean, std, bgr=False, fp16=False) -> np.ndarray:
    n, _, _, c = frames.shape
    out = np.empty((n, c, *out_hw), np.uint16 if fp16 else np.float32)
    p = make_params(frames, out_hw, scale, mean, std, bgr, fp16)
    assert lib.optim_preprocess_cpu(ctypes.byref(p), frames.ctypes.data, out.ctypes.data) == 0
    return out


def axis_taps(out_size: int, in_size: int):
    """Half-pixel source taps along one axis, float32 step by step as the C header does."""
    f32 = np.float32
    s = (np.arange(out_size, dtype=f32) + f32(0.5)) * (f32(in_size) / f32(out_size)) - f32(0.5)
    s = np.maximum(s, f32(0))
    i0 = np.clip(np.floor(s).astype(np.int64), 0, in_size - 1)
    return i0, np.minimum(i0 + 1, in_size - 1), s - i0.astype(f32)


def reference(frames, out_hw, scale, mean, std, bgr=False, fp16=False) -> np.ndarray:
    """uint8 NHWC -> NCHW: channel swap, bilinear resize, (v*scale - mean) / std, all float32."""
    f32 = np.float32
    n, h, w, c = frames.shape
    src = frames.astype(f32)
    if bgr and c == 3:
        src = src[..., ::-1]
    if tuple(out_hw) == (h, w):
        v = src
    else:
        y0, y1, fy = axis_taps(out_hw[0], h)
        x0, x1, fx = axis_taps(out_hw[1], w)
        fy, fx = fy[None, :, None, None], fx[None, None, :, None]
        p00, p01 = src[:, y0][:, :, x0], src[:, y0][:, :, x1]
        p10, p11 = src[:, y1][:, :, x0], src[:, y1][:, :, x1]
        v = (f32(1) - fy) * ((f32(1) - fx) * p00 + fx * p01) + fy * ((f32(1) - fx) * p10 + fx * p11)
    out = (v * f32(scale) - np.asarray(mean[:c], f32)) / np.asarray(std[:c], f32)
    out = np.ascontiguousarray(out.transpose(0, 3, 1, 2))
    if not fp16:
        return out
    with np.errstate(over="ignore"):  # values past 65504 become inf, as in the C op
        return out.astype(np.float16).view(np.uint16)


IMAGENET = dict(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
CASES = {
    "no-resize-rgb": dict(shape=(2, 5, 7, 3), out_hw=(5, 7), **IMAGENET),
    "resize-bgr": dict(shape=(3, 13, 17, 3), out_hw=(8, 24), bgr=True, **IMAGENET),
    "resize-gray-fp16": dict(shape=(2, 9, 6, 1), out_hw=(4, 11), bgr=True, fp16=True, scale=1 / 255,
                             mean=(0.5, 0, 0), std=(0.25, 1, 1)),
    # float16 edge cases: subnormals (std 3e6), overflow to inf (std 1e-3), -0 (v == mean, std < 0)
    "fp16-edges": dict(shape=(1, 6, 5, 3), out_hw=(6, 5), fp16=True, scale=1.0,
                       mean=(0.0, 0.0, 128.0), std=(3e6, 1e-3, -1.0)),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_cpu_op_matches_numpy_reference(cpu_lib, case):
    kw = dict(CASES[case])
    frames = np.random.default_rng(len(case)).integers(0, 256, kw.pop("shape"), dtype=np.uint8)
    if case == "fp16-edges":
        frames[0, 0, 0, 2] = 128
    got = run_cpu(cpu_lib, frames, **kw)
    want = reference(frames, **kw)
    np.testing.assert_array_equal(got, want)  # same float32 operations in the same order: same bits


def test_cpu_op_refuses_bad_params(cpu_lib):
    frames = np.zeros((1, 4, 4, 3), np.uint8)
    out = np.zeros((1, 3, 4, 4), np.float32)
    good = dict(out_hw=(4, 4), scale=1.0, mean=(0, 0, 0), std=(1, 1, 1), bgr=False, fp16=False)

    def call(p, src=frames.ctypes.data, dst=out.ctypes.data):
        return cpu_lib.optim_preprocess_cpu(p if p is None else ctypes.byref(p), src, dst)

    assert call(make_params(frames, **good)) == 0
    assert call(None) < 0
    assert call(make_params(frames, **good), dst=None) < 0
    bad_channels = make_params(frames, **good)
    bad_channels.c = 2
    assert call(bad_channels) < 0
    assert call(make_params(frames, **{**good, "out_hw": (0, 4)})) < 0
    assert call(make_params(frames, **{**good, "std": (1, 0, 1)})) < 0
    assert cpu_lib.optim_preprocess_version()


def cuobjdump() -> Path | None:
    """cuobjdump from the nvidia-cuda-cuobjdump wheel (requirements.txt)."""
    spec = importlib.util.find_spec("nvidia")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        exe = Path(folder) / "cu13" / "bin" / "cuobjdump"
        if exe.is_file():
            return exe
    return None


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found: the CUDA kernel is not built here")
def test_cuda_library_is_built_for_sm90():
    build_if_missing(CPU_LIB, CUDA_LIB)
    assert CUDA_LIB.exists(), "nvcc is on PATH but build/plugins/liboptim_preprocess_cuda.so was not built"
    exe = cuobjdump()
    assert exe, "cuobjdump missing: pip install the nvidia-cuda-cuobjdump pin of requirements.txt"
    listed = subprocess.run([str(exe), "--list-elf", str(CUDA_LIB)], capture_output=True, text=True, check=True)
    assert "sm_90.cubin" in listed.stdout, listed.stdout
    # Loads without a GPU or libcudart.so; bad params are refused before any CUDA call.
    lib = ctypes.CDLL(str(CUDA_LIB))
    lib.optim_preprocess_cuda.argtypes = [ctypes.c_void_p] * 4
    assert lib.optim_preprocess_cuda(None, None, None, None) < 0
