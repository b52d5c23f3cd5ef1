"""The report's speed at other input sizes (a recipe's ``bench.sizes``: 640 and 1280 for a detector).

``bench/<size>/<entry>.json`` hold the timings of each entry carried over to that size
(``optim.stages.resize``); each row of the report gets ``sizes[<size>]`` with the p50/p99
latency at the smallest batch, the throughput at the largest and the ratio to ONNX Runtime
FP32 at that size, and the markdown gets one table with a column group per size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from optim.runfolder import NOT_RUN, Entry, RunInfo, RunLayout
from optim.stages.bench import BenchResult


def attach(run_dir: Path, run: RunInfo | dict[str, Any], rows: list, load) -> None:
    """Fill ``row.sizes`` from ``bench/<size>/`` (``load``: the report's typed-result loader)."""
    run = RunInfo.of(run)
    layout = RunLayout(run_dir)
    not_run = run.size_not_run
    for label in run.sizes:
        results: dict[str, BenchResult] = load(layout.dir(layout.bench_dir(label)), BenchResult, "bench")
        base = _timings(results.get(Entry("fp32").result_name))
        for r in rows:
            e = Entry.parse(r.tag).replace(backend=r.backend, size=label)
            b = results.get(e.result_name)
            cell = _cell(b, base) or {"why": (b.skipped if b and b.skipped else "")
                                      or not_run.get(e.sized_name) or ("" if b else NOT_RUN)}
            r.sizes[label] = cell
        gpu = load(layout.dir(layout.gpu_dir("bench", label)), BenchResult, "bench")
        gpu_base = _timings(gpu.get("fp32"))
        for r in rows:
            g = _cell(gpu.get(r.tag), gpu_base) if r.primary else None
            if g:
                r.sizes[label]["gpu"] = g


def _timings(b: BenchResult | None) -> dict:
    return {t.batch: t for t in b.timings} if b and not b.skipped else {}


def _cell(b: BenchResult | None, base: dict) -> dict[str, Any] | None:
    """One result's numbers at one size: p50/p99 at its smallest batch, throughput at its largest,
    and the ratio to ``base``'s (FP32's timings there) at that batch; None without timings."""
    t = _timings(b)
    if not t:
        return None
    small, large = min(t), max(t)
    cell = {"latency_batch": small, "p50_ms": t[small].median_ms, "p99_ms": t[small].p99_ms,
            "throughput_batch": large, "throughput": t[large].throughput, "method": b.method}
    if large in base and base[large].throughput:
        cell["speedup_vs_fp32"] = round(t[large].throughput / base[large].throughput, 3)
    return cell


def markdown(run: RunInfo | dict[str, Any], rows: list) -> list[str]:
    """The section, or nothing when the recipe timed no other size."""
    run = RunInfo.of(run)
    sizes = run.sizes
    if not sizes:
        return []
    head = ["precision", "target", "backend"]
    for label in sizes:
        cells = [r.sizes.get(label, {}) for r in rows]
        lb = next((c["latency_batch"] for c in cells if "latency_batch" in c), 1)
        tb = next((c["throughput_batch"] for c in cells if "throughput_batch" in c), None)
        head += [f"{label}: p50 b{lb} ms", f"{label}: p99 b{lb} ms", f"{label}: img/s b{tb}" if tb else
                 f"{label}: img/s", f"{label}: × ORT fp32"]
    gpu_why = run.gpu.not_run
    engines = ("TensorRT engines are built from the same files where TensorRT and a GPU are"
               + (f" (not run here: {next(iter(gpu_why.values()))})" if gpu_why and not any(
                   "gpu" in r.sizes.get(label, {}) for r in rows for label in sizes) else "") + ". ")
    out = ["## Speed at other input sizes", "",
           "Each entry's file carried over to the size (re-exported FP32 model, the same Q/DQ scales, "
           "casts and exclusions; accuracy is measured at the recipe's size only) and timed on each CPU "
           "backend in this run; × is against ONNX Runtime FP32 at that size. " + engines
           + ", ".join(f"{label}: {_fps_note(rows, label)}" for label in sizes), "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        out.append(_line([r.precision, r.target, r.backend], [r.sizes.get(label, {}) for label in sizes]))
    gpu_rows = [r for r in rows if any("gpu" in r.sizes.get(label, {}) for label in sizes)]
    for r in gpu_rows:  # TensorRT engines built from the same carried-over files (× is against the fp32 engine)
        out.append(_line([r.precision, r.target, "TensorRT engine (GPU)"],
                         [r.sizes.get(label, {}).get("gpu", {}) for label in sizes]))
    whys = sorted({f"{r.tag}@{r.backend} at {label}: {r.sizes[label]['why']}" for r in rows for label in sizes
                   if r.sizes.get(label, {}).get("why")})
    if whys:
        out += ["", "Not timed at a size:", ""] + [f"- {w}" for w in whys]
    return out + [""]


def _line(first: list[str], cells: list[dict[str, Any]]) -> str:
    for c in cells:
        if "p50_ms" in c:
            first += [f"{c['p50_ms']:.2f}", f"{c['p99_ms']:.2f}", f"{c['throughput']:.1f}",
                      f"{c['speedup_vs_fp32']:.2f}" if "speedup_vs_fp32" in c else NOT_RUN]
        else:
            first += [NOT_RUN] * 4
    return "| " + " | ".join(first) + " |"


def _fps_note(rows: list, label: str) -> str:
    best = max((r for r in rows if "throughput" in r.sizes.get(label, {})),
               key=lambda r: r.sizes[label]["throughput"], default=None)
    if best is None:
        return "nothing timed"
    c = best.sizes[label]
    return f"fastest {best.tag}@{best.backend}, {c['throughput']:.1f} img/s at batch {c['throughput_batch']}"
