"""``optim bench-preprocess``: what fusing preprocessing into the engine saves, per image.

Host path: the host turns each uint8 frame into the normalised float tensor (the
NumPy statement of the op, and the csrc/ CPU library doing the same on the host),
then copies that float tensor to the GPU. Fused path: the host copies the uint8
frame and the GPU runs the op. Bytes copied host-to-device are computed from the
shapes; host CPU times are measured here (on up to 2 frames a call: a per-image
time either way); the GPU kernel times need a GPU and are reported as not run
without one.

On a GPU the kernels are timed side by side, interleaved, in one run: the v2 kernels
(``tiled``, ``direct``; ``gpu_kernel`` is the first that can, the candidate) and the v1
kernel, the baseline (what ``optim_preprocess_cuda`` runs until v2 has been measured on a
GPU), each at batch 1 and at ``batch``. A sample is one pass
over several input/output buffer pairs, launched back to back behind a GPU sleep (so
the host's launch rate does not count) between two CUDA events; the buffers add up to
more than 4x the L2 cache (at most 32), so frames come from DRAM as they would in
serving. Reported per image: the median time, the bytes the kernel must move (frame
read + output written) over that time, and that as a fraction of the device's peak
DRAM bandwidth (memory clock x bus width, read from the device).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from optim.ops.preprocess import PreprocessOp, reference

HOST_FRAMES = 2  # host timings: frames per call (per-image times)
KERNELS = {"tiled": 3, "direct": 2, "v1": 1}  # OPTIM_PP_KERNEL_* of csrc/preprocess/preprocess_api.h
MAX_BUFFERS = 32


@dataclass
class KernelTime:
    kernel: str  # "tiled", "direct" (v2) or "v1" (the baseline)
    batch: int
    ms_per_image: float  # median over samples
    gb_per_s: float  # kernel bytes per image / ms_per_image
    peak_fraction: float | None  # gb_per_s / the device's peak DRAM bandwidth


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
    gpu_kernel_ms: float | None  # per image at `batch`: the v2 candidate (gpu_kernel)
    gpu_note: str
    kernel_bytes_per_image: int = 0  # frame read + output written by the kernel
    gpu_kernel: str | None = None  # the v2 candidate for these sizes ("tiled", "direct"; "v1" if none can)
    gpu_baseline_ms: float | None = None  # v1, per image at `batch`
    speedup_vs_baseline: float | None = None  # gpu_baseline_ms / gpu_kernel_ms
    gpu_gb_per_s: float | None = None  # kernel_bytes_per_image / gpu_kernel_ms
    peak_gb_per_s: float | None = None  # the device's peak DRAM bandwidth
    peak_fraction: float | None = None  # gpu_gb_per_s / peak_gb_per_s
    input_buffers: dict[int, int] = field(default_factory=dict)  # batch -> buffers rotated
    gpu_timings: list[KernelTime] = field(default_factory=list)  # every kernel, at batch 1 and `batch`

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


def _buffers(frame_bytes: int, out_bytes: int, l2_bytes: int) -> int:
    """Buffer pairs to rotate: their frames add up to more than 4x L2, 2..32, within 4 GB."""
    want = math.ceil(4 * max(l2_bytes, 1) / frame_bytes) + 1
    fit = max(2, (4 << 30) // (frame_bytes + out_bytes))
    return max(2, min(want, MAX_BUFFERS, fit))


def _gpu(frame_hwc: tuple[int, int, int], op: PreprocessOp, batch: int, iterations: int) -> dict:
    """Times of every kernel at batch 1 and `batch` (see the module doc); a dict of PreprocessBench fields."""
    import ctypes

    import torch

    from optim.ops.plugins import Params, find
    from optim.ops.preprocess_cpu import make_params

    lib_path = find("cuda")
    if lib_path is None:
        return {"gpu_note": "not run: liboptim_preprocess_cuda.so is not built (bash scripts/build_plugins.sh)"}
    lib = ctypes.CDLL(str(lib_path))
    if not hasattr(lib, "optim_preprocess_cuda_kernel"):
        return {"gpu_note": "not run: liboptim_preprocess_cuda.so predates 1.1.0 (bash scripts/build_plugins.sh)"}
    lib.optim_preprocess_cuda_kernel.argtypes = [ctypes.POINTER(Params), ctypes.c_void_p, ctypes.c_int32,
                                                 ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32]
    lib.optim_preprocess_cuda_kernel_for.argtypes = [ctypes.POINTER(Params), ctypes.c_int32]
    lib.optim_preprocess_cuda_peak_gbps.argtypes = [ctypes.c_int32, ctypes.POINTER(ctypes.c_double)]
    h, w, c = frame_hwc
    itemsize = 2 if op.out_dtype == "float16" else 4
    frame_bytes, out_bytes = h * w * c, c * op.out_h * op.out_w * itemsize
    per_image = frame_bytes + out_bytes
    peak = ctypes.c_double(0.0)
    peak_gbps = peak.value if lib.optim_preprocess_cuda_peak_gbps(-1, ctypes.byref(peak)) == 0 else None
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    stream = torch.cuda.current_stream()
    sleep = getattr(torch.cuda, "_sleep", None)  # hold the GPU while the host queues a sample's launches
    auto = {v: k for k, v in KERNELS.items()}.get(lib.optim_preprocess_cuda_kernel_for(
        make_params((batch, h, w, c), op), 0), "v1")
    timings, buffers = [], {}
    for n in sorted({1, batch}):
        p = make_params((n, h, w, c), op)
        k = _buffers(n * frame_bytes, n * out_bytes, getattr(props, "L2_cache_size", 64 << 20))
        buffers[n] = k
        src = [torch.randint(0, 256, (n, h, w, c), dtype=torch.uint8, device="cuda") for _ in range(k)]
        dst = [torch.empty((n, c, op.out_h, op.out_w),
                           dtype=torch.float16 if op.out_dtype == "float16" else torch.float32, device="cuda")
               for _ in range(k)]
        kernels = {}
        for name, kid in KERNELS.items():  # what each can run (tiled may not, for rows too wide)
            rc = lib.optim_preprocess_cuda_kernel(p, src[0].data_ptr(), 0, dst[0].data_ptr(),
                                                  ctypes.c_void_p(stream.cuda_stream), kid)
            if rc == 0:
                kernels[name] = kid
            elif rc != -5:  # OPTIM_PP_ERR_KERNEL: not for these sizes
                return {"gpu_note": f"not run: optim_preprocess_cuda_kernel({name}) returned {rc}"}
        torch.cuda.synchronize()
        samples = {name: [] for name in kernels}
        for _ in range(iterations):
            for name, kid in kernels.items():  # interleaved: each sample of each kernel in turn
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                if sleep is not None:
                    sleep(2_000_000)  # about 1 ms: the launches below queue behind it
                start.record(stream)
                for i in range(k):
                    lib.optim_preprocess_cuda_kernel(p, src[i].data_ptr(), 0, dst[i].data_ptr(),
                                                     ctypes.c_void_p(stream.cuda_stream), kid)
                end.record(stream)
                end.synchronize()
                samples[name].append(start.elapsed_time(end) / (k * n))
        for name, ms in samples.items():
            t = float(np.median(ms))
            gbps = per_image / (t * 1e-3) / 1e9
            timings.append(KernelTime(name, n, round(t, 6), round(gbps, 1),
                                      round(gbps / peak_gbps, 4) if peak_gbps else None))
        del src, dst
        torch.cuda.empty_cache()
    at = {(t.kernel, t.batch): t for t in timings}
    new, old = at.get((auto, batch)), at.get(("v1", batch))
    rotated = ", ".join(f"{k} buffers at batch {n}" for n, k in buffers.items())
    note = (f"{torch.cuda.get_device_name()} (CUDA events; median of {iterations} samples, each a pass over "
            f"{rotated}{'' if sleep else '; no torch.cuda._sleep: host launch time included'})")
    return {
        "gpu_kernel_ms": new.ms_per_image if new else None, "gpu_note": note, "gpu_kernel": auto,
        "gpu_baseline_ms": old.ms_per_image if old else None,
        "speedup_vs_baseline": round(old.ms_per_image / new.ms_per_image, 2) if new and old else None,
        "gpu_gb_per_s": new.gb_per_s if new else None, "peak_gb_per_s": round(peak_gbps, 1) if peak_gbps else None,
        "peak_fraction": new.peak_fraction if new else None, "input_buffers": buffers, "gpu_timings": timings,
    }


def bench_preprocess(frame_hwc: tuple[int, int, int], op: PreprocessOp, batch: int = 8,
                     iterations: int = 20) -> PreprocessBench:
    h, w, c = frame_hwc
    itemsize = 2 if op.out_dtype == "float16" else 4
    host_n = min(batch, HOST_FRAMES)
    frames = np.random.default_rng(0).integers(0, 256, (host_n, h, w, c), dtype=np.uint8)
    host_iterations = min(iterations, 5)
    numpy_ms = _median_ms(lambda: reference(frames, op), host_iterations, host_n)
    lib_ms = None
    try:
        from optim.ops.preprocess_cpu import run_cpu

        lib_ms = _median_ms(lambda: run_cpu(frames, op), host_iterations, host_n)
    except Exception:  # not built: reported as not run
        lib_ms = None
    gpu = _gpu((h, w, c), op, batch, iterations) if _has_gpu() else {"gpu_note": "not run: no NVIDIA GPU here"}
    out_bytes = c * op.out_h * op.out_w * itemsize
    return PreprocessBench((h, w, c), (c, op.out_h, op.out_w), batch, iterations, out_bytes, h * w * c,
                           round(numpy_ms, 4), None if lib_ms is None else round(lib_ms, 4),
                           gpu.pop("gpu_kernel_ms", None), gpu.pop("gpu_note"),
                           kernel_bytes_per_image=h * w * c + out_bytes, **gpu)
