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
    gpu_ms = None
    note = ("not run: kernel timing is not implemented yet" if _has_gpu()
            else "not run: no NVIDIA GPU here")
    return PreprocessBench((h, w, c), (c, op.out_h, op.out_w), batch, iterations,
                           c * op.out_h * op.out_w * itemsize, h * w * c, round(numpy_ms, 4),
                           None if lib_ms is None else round(lib_ms, 4), gpu_ms, note)
