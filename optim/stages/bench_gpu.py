"""Stage 4 on a GPU: latency and throughput of a TensorRT engine (or ONNX Runtime's GPU providers).

Engines are timed on the device: CUDA events around each ``execute_async_v3`` with
the input already in GPU memory (optionally replaying a captured CUDA graph), so
the numbers are the engine's own latency, not host copies. ONNX Runtime GPU
providers are timed around ``session.run`` with host arrays, and say so. Results
have the same form as the CPU bench (``optim.stages.bench.BenchResult``).
"""

from __future__ import annotations

from pathlib import Path

from optim.stages.bench import BenchResult, stats
from optim.recipe import BenchSettings
from optim.backends import open_runner


def bench_gpu(path: Path, s: BenchSettings, *, tag: str = "", backend: str = "auto") -> BenchResult:
    path = Path(path)
    runner = open_runner(path, threads=s.threads, backend=backend, cuda_graph=s.cuda_graph)
    res = BenchResult(str(path), tag or path.stem, runner.method, s.model_dump(mode="json"))
    with runner:
        how = getattr(runner, "timing_method", "wall time around each run, host arrays in and out")
        res.method = f"{runner.method}; {how}"
        for b in s.batch_sizes:
            res.timings.append(stats(b, runner.measure(b, s.warmup, s.iterations)))
    return res
