"""The report's speed at other input sizes (a recipe's ``bench.sizes``: 640 and 1280 for a detector).

``bench/<size>/<entry>.json`` hold the timings of each entry carried over to that size
(``optim.stages.resize``); each row of the report gets ``sizes[<size>]`` with the p50/p99
latency at the smallest batch, the throughput at the largest and the ratio to ONNX Runtime
FP32 at that size, and the markdown gets one table with a column group per size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from optim.backends import cpu
from optim.stages.bench import BenchResult

NOT_RUN = "not run"


def attach(run_dir: Path, run: dict[str, Any], rows: list, load) -> None:
    """Fill ``row.sizes`` from ``bench/<size>/`` (``load``: the report's typed-result loader)."""
    sizes = run.get("sizes") or []
    not_run = run.get("size_not_run") or {}
    for label in sizes:
        results: dict[str, BenchResult] = load(Path(run_dir) / "bench" / label, BenchResult, "bench")
        base = results.get(cpu.result_name("fp32", cpu.PRIMARY))
        base_t = _timings(base)
        for r in rows:
            name = cpu.result_name(r.tag, r.backend)
            b = results.get(name)
            cell: dict[str, Any] = {"why": not_run.get(f"{label}/{name}") or ("" if b else NOT_RUN)}
            t = _timings(b)
            if t:
                small, large = min(t), max(t)
                cell = {"latency_batch": small, "p50_ms": t[small].median_ms, "p99_ms": t[small].p99_ms,
                        "throughput_batch": large, "throughput": t[large].throughput, "method": b.method}
                if base_t and large in base_t and base_t[large].throughput:
                    cell["speedup_vs_fp32"] = round(t[large].throughput / base_t[large].throughput, 3)
            elif b and b.skipped:
                cell = {"why": b.skipped}
            r.sizes[label] = cell
        gpu = load(Path(run_dir) / "gpu" / "bench" / label, BenchResult, "bench")
        gpu_base = _timings(gpu.get("fp32"))
        for r in rows:
            t = _timings(gpu.get(r.tag)) if r.primary else {}
            if t:
                small, large = min(t), max(t)
                g = {"latency_batch": small, "p50_ms": t[small].median_ms, "p99_ms": t[small].p99_ms,
                     "throughput_batch": large, "throughput": t[large].throughput, "method": gpu[r.tag].method}
                if large in gpu_base and gpu_base[large].throughput:
                    g["speedup_vs_fp32"] = round(t[large].throughput / gpu_base[large].throughput, 3)
                r.sizes[label]["gpu"] = g


def _timings(b: BenchResult | None) -> dict:
    return {t.batch: t for t in b.timings} if b and not b.skipped else {}


def markdown(run: dict[str, Any], rows: list) -> list[str]:
    """The section, or nothing when the recipe timed no other size."""
    sizes = run.get("sizes") or []
    if not sizes:
        return []
    head = ["precision", "target", "backend"]
    for label in sizes:
        cells = [r.sizes.get(label, {}) for r in rows]
        lb = next((c["latency_batch"] for c in cells if "latency_batch" in c), 1)
        tb = next((c["throughput_batch"] for c in cells if "throughput_batch" in c), None)
        head += [f"{label}: p50 b{lb} ms", f"{label}: p99 b{lb} ms", f"{label}: img/s b{tb}" if tb else
                 f"{label}: img/s", f"{label}: × ORT fp32"]
    gpu_why = ((run.get("gpu") or {}).get("not_run") or {})
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
