"""``optim bench-preprocess``: what fusing preprocessing into the engine saves, per image.

Host path: the host turns each uint8 frame into the normalised float tensor (the
NumPy statement of the op, and the csrc/ CPU library doing the same on the host),
then copies that float tensor to the GPU. Fused path: the host copies the uint8
frame and the GPU runs the op. Bytes copied host-to-device are computed from the
shapes; host CPU times are measured here; the GPU kernel time needs a GPU and is
reported as not run without one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from optim.ops.preprocess import PreprocessOp, reference


@dataclass
class PreprocessBench:
    frame: tuple[int, int, int]
    out: tuple[int, int, int]
    batch: int
    iterations: int
    h2d_bytes_host_path: int  # per image: the float tensor
    h2d_bytes_fused: int  # per image: the uint8 frame
    host_ms_numpy: float  # per image, median over iterations
    host_ms_cpu_library: float | None
    gpu_kernel_ms: float | None
    gpu_note: str

    def as_dict(self) -> dict:
        return asdict(self)


def _median_ms(fn, iterations: int, per: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3 / per


def _has_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def _kernel_ms(frames: np.ndarray, op: PreprocessOp, iterations: int) -> tuple[float | None, str]:
    """Median per-image time of the CUDA kernel between CUDA events (input already on the GPU)."""
    import ctypes

    import torch

    from optim.ops.preprocess_cpu import make_params
    from optim.ops.plugins import Params, find

    lib_path = find("cuda")
    if lib_path is None:
        return None, "not run: liboptim_preprocess_cuda.so is not built (bash scripts/build_plugins.sh)"
    lib = ctypes.CDLL(str(lib_path))
    lib.optim_preprocess_cuda.argtypes = [ctypes.POINTER(Params), ctypes.c_void_p, ctypes.c_void_p,
                                          ctypes.c_void_p]
    n, c = frames.shape[0], frames.shape[3]
    p = make_params(frames.shape, op)
    src = torch.from_numpy(frames).cuda()
    dst = torch.empty((n, c, op.out_h, op.out_w),
                      dtype=torch.float16 if op.out_dtype == "float16" else torch.float32, device="cuda")
    stream = torch.cuda.current_stream()
    times = []
    for i in range(iterations + 1):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        rc = lib.optim_preprocess_cuda(p, src.data_ptr(), dst.data_ptr(), ctypes.c_void_p(stream.cuda_stream))
        end.record(stream)
        end.synchronize()
        if rc != 0:
            return None, f"not run: optim_preprocess_cuda returned {rc}"
        if i:  # the first call is a warm-up
            times.append(start.elapsed_time(end))
    return round(float(np.median(times)) / n, 5), f"{torch.cuda.get_device_name()} (CUDA events)"


def bench_preprocess(frame_hwc: tuple[int, int, int], op: PreprocessOp, batch: int = 8,
                     iterations: int = 20) -> PreprocessBench:
    h, w, c = frame_hwc
    frames = np.random.default_rng(0).integers(0, 256, (batch, h, w, c), dtype=np.uint8)
    itemsize = 2 if op.out_dtype == "float16" else 4
    numpy_ms = _median_ms(lambda: reference(frames, op), iterations, batch)
    lib_ms = None
    try:
        from optim.ops.preprocess_cpu import run_cpu

        lib_ms = _median_ms(lambda: run_cpu(frames, op), iterations, batch)
    except Exception:  # not built: reported as not run
        lib_ms = None
    gpu_ms, note = _kernel_ms(frames, op, iterations) if _has_gpu() else (None, "not run: no NVIDIA GPU here")
    return PreprocessBench((h, w, c), (c, op.out_h, op.out_w), batch, iterations,
                           c * op.out_h * op.out_w * itemsize, h * w * c, round(numpy_ms, 4),
                           None if lib_ms is None else round(lib_ms, 4), gpu_ms, note)
