"""Stage 4: latency and throughput of one model on one backend.

For each batch size: ``warmup`` untimed runs, then ``iterations`` timed runs of
the same random input; median / p90 / p99 latency and throughput = batch /
median latency. Rows from one ``bench`` call are measured side by side, so their
ratios are comparable; numbers from separate runs on a shared machine are not.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from optim.console import progress
from optim.errors import ModelError
from optim.onnx_tools import graph_inputs, load_onnx
from optim.recipe import BenchSettings
from optim.backends import open_runner


@dataclass
class BatchTiming:
    batch: int
    iterations: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    throughput: float  # samples per second at the median latency


@dataclass
class BenchResult:
    model: str
    tag: str
    method: str
    settings: dict
    timings: list[BatchTiming] = field(default_factory=list)
    skipped: str | None = None
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> BenchResult:
        d = dict(d)
        d["timings"] = [BatchTiming(**t) for t in d.get("timings", [])]
        return cls(**d)

    def at(self, batch: int) -> BatchTiming | None:
        return next((t for t in self.timings if t.batch == batch), None)


def _sample_shape(path: Path) -> tuple[str, tuple[int, ...], bool]:
    """Input name, per-sample shape, and whether it takes uint8 frames (fused preprocessing)."""
    ins = graph_inputs(load_onnx(path, check=False))
    if len(ins) != 1:
        raise ModelError(f"{path}: bench supports single-input models, this one has {len(ins)}")
    rest = ins[0].shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in rest):
        raise ModelError(f"{path}: input '{ins[0].name}' has non-fixed sizes {list(rest)} "
                         "besides the batch axis")
    return ins[0].name, tuple(int(d) for d in rest), ins[0].dtype_name == "uint8"


def stats(batch: int, times_s: list[float]) -> BatchTiming:
    ms = np.asarray(times_s) * 1e3
    med = float(np.median(ms))
    return BatchTiming(batch, len(ms), round(med, 4), round(float(np.percentile(ms, 90)), 4),
                       round(float(np.percentile(ms, 99)), 4), round(float(ms.mean()), 4),
                       round(float(ms.min()), 4), round(batch / (med / 1e3), 2))


def bench_model(path: Path, s: BenchSettings, *, tag: str = "") -> BenchResult:
    path = Path(path)
    tag = tag or path.stem
    name, shape, frames = _sample_shape(path)
    runner = open_runner(path, threads=s.threads)
    res = BenchResult(str(path), tag, runner.method, s.model_dump(mode="json"), note=runner.timing_note)
    if not runner.timing_meaningful:
        res.skipped = runner.timing_note
        return res
    rng = np.random.default_rng(0)
    with runner, progress() as bar:
        for b in s.batch_sizes:
            x = {name: rng.integers(0, 256, (b, *shape), dtype=np.uint8) if frames
                 else rng.standard_normal((b, *shape)).astype(np.float32)}
            task = bar.add_task(f"bench {tag} batch {b}", total=s.warmup + s.iterations)
            for _ in range(s.warmup):
                runner.infer(x)
                bar.advance(task)
            times = []
            for _ in range(s.iterations):
                t0 = time.perf_counter()
                runner.infer(x)
                times.append(time.perf_counter() - t0)
                bar.advance(task)
            res.timings.append(stats(b, times))
    return res
