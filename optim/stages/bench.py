"""Stage 4: latency and throughput of one model on one backend, any backend.

For each batch size the runner's ``measure`` makes ``warmup`` untimed runs, then
``iterations`` timed runs of the same random input, timed as its ``timing_method``
says (ONNX Runtime: wall time around each run with host arrays; TensorRT engines:
CUDA events with the input already on the GPU); median / p90 / p99 latency and
throughput = batch / median latency. Rows from one ``bench`` call are measured
side by side, so their ratios are comparable; numbers from separate runs on a
shared machine are not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from optim.console import progress
from optim.executor import StageOutput
from optim.settings import BenchSettings
from optim.backends import backend_packages, open_runner
from optim.stages.check import doctor  # noqa: F401  (a bench runs where a check runs)


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


def stats(batch: int, times_s: list[float]) -> BatchTiming:
    ms = np.asarray(times_s) * 1e3
    med = float(np.median(ms))
    return BatchTiming(batch, len(ms), round(med, 4), round(float(np.percentile(ms, 90)), 4),
                       round(float(np.percentile(ms, 99)), 4), round(float(ms.mean()), 4),
                       round(float(ms.min()), 4), round(batch / (med / 1e3), 2))


def bench_model(path: Path, s: BenchSettings, *, tag: str = "", backend: str = "auto") -> BenchResult:
    """Time ``path`` on ``backend`` (any registered one; ``auto``: ONNX on ORT CPU, engines on TensorRT)
    with the runner's own ``measure``, per batch size; ``method`` says how it ran and how it was timed."""
    path = Path(path)
    tag = tag or path.stem
    runner = open_runner(path, backend=backend, threads=s.threads, cuda_graph=s.cuda_graph)
    res = BenchResult(str(path), tag, runner.method, s.model_dump(mode="json"), note=runner.timing_note)
    if not runner.timing_meaningful:
        res.skipped = runner.timing_note
        return res
    with runner, progress() as bar:
        res.method = f"{runner.method}; {runner.timing_method}"  # after activate: engines describe the GPU then
        for b in s.batch_sizes:
            task = bar.add_task(f"bench {tag} batch {b}", total=s.warmup + s.iterations)
            times = runner.measure(b, s.warmup, s.iterations, on_run=lambda task=task: bar.advance(task))
            res.timings.append(stats(b, times))
    return res


NAME = "bench"
SUMMARY = "latency percentiles at batch 1, throughput at large batch"
#: the packages of every registered backend (any of them may run the model)
TOOLS = backend_packages


def environment() -> dict:
    """Timings belong to the machine that measured them."""
    from optim.artifacts import host_info

    return host_info()


class Settings(BenchSettings):
    """The recipe's bench settings, and the backend that runs the model (``auto``: ORT CPU for
    ONNX, TensorRT for engines; any registered name)."""

    backend: str = "auto"


def run(inputs: list, settings: BenchSettings, ctx) -> StageOutput:
    """``inputs``: the model (ONNX or engine). Writes the timings to ``ctx.out``."""
    from optim.artifacts import write_json
    from optim.console import info, skipped

    (model,) = inputs
    res = bench_model(model.path, settings, tag=model.tag or model.name, backend=getattr(settings, "backend", "auto"))
    res.model = model.path.name
    if res.skipped:
        skipped(f"bench {res.tag}", res.skipped)
    else:
        info("  " + ", ".join(f"b{t.batch}: p50 {t.median_ms:.2f} ms, {t.throughput:.1f}/s" for t in res.timings))
    write_json(ctx.out, res.as_dict())
    return StageOutput(settings.model_dump(mode="json"), res)
