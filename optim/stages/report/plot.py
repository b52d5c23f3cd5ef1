"""The report's picture: accuracy change vs FP32 against speed-up over FP32, one panel per backend.

Each entry is one marker (colour and shape from a fixed cycle) named in a legend beside the
panels, so labels never overlap; FP32 sits at (1x, 0). The gates' budgets (``max_*_drop``)
are drawn as bands below 0. Entries that have no point (not timed, not checked) are listed
under the panels with the reason, never left out silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from optim.artifacts import atomic_path
from optim.runfolder import RunInfo

if TYPE_CHECKING:
    from optim.tasks import Task

# ``rows`` below are optim.stages.report.stage.Row objects (not imported: report imports this module)

MARKERS = "osD^vP*Xph<>"
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
          "#7f7f7f", "#bcbd22")


@dataclass
class Panel:
    title: str
    points: dict[str, tuple[float, float]]  # tag -> (speed-up, change in points)
    missing: dict[str, str]  # tag -> why it has no point


def y_key(task: Task, rows: list) -> tuple[str, str]:
    """(how to read a row's y, axis label): the headline metric's change with labels, else agreement."""
    delta = f"{task.headline}_delta"
    if any(r.accuracy.get(delta) is not None for r in rows):
        return delta, f"Δ {task.column(task.headline).header} vs FP32 (points)"
    return task.agreement, f"{task.column(task.agreement).header} − 100 (points; no labels)"


def _y(row_acc: dict, key: str, task: Task) -> float | None:
    v = row_acc.get(key)
    if v is None:
        return None
    return v - 100.0 if key == task.agreement else v


TITLES = {"onnxruntime": "CPU: ONNX Runtime", "openvino": "CPU: OpenVINO"}


def _panel(title: str, rows: list, speed: str, acc: str, method: str, key: str, task: Task) -> Panel:
    pts, missing = {}, {}
    for r in rows:
        x, y = getattr(r, speed), _y(getattr(r, acc), key, task)
        if x is not None and y is not None:
            pts[r.tag] = (x, y)
        else:
            why = getattr(r, method) if x is None else "not checked"
            missing[r.tag] = why.split(";")[0]
    return Panel(title, pts, missing)


def panels(task: Task, rows: list) -> tuple[list[Panel], str]:
    """One panel per CPU backend (x: speed-up over ONNX Runtime FP32), one for the TensorRT engines
    (x: over the FP32 engine); only panels with at least one point."""
    key, label = y_key(task, rows)
    families = list(dict.fromkeys(r.backend for r in rows))
    out = [_panel(TITLES.get(f, f"CPU: {f}"), [r for r in rows if r.backend == f], "speedup_vs_fp32", "accuracy",
                  "timing_method", key, task) for f in families]
    out.append(_panel("GPU: TensorRT engines", [r for r in rows if r.primary], "gpu_speedup_vs_fp32",
                      "gpu_accuracy", "gpu_method", key, task))
    return [p for p in out if p.points], label


def _bands(rows: list) -> dict[float, list[str]]:
    """Gate budgets on a metric drop (``max_*_drop``): limit -> the entries it applies to."""
    bands: dict[float, list[str]] = {}
    for r in rows:
        for gate, limit in r.gate_limits.items():
            if gate.startswith("max_") and gate.endswith("_drop"):
                if r.tag not in bands.setdefault(limit, []):
                    bands[limit].append(r.tag)
    return bands


def plot(run: RunInfo | dict, task: Task, rows: list, out: Path) -> bool:
    """Write the picture to ``out``; False (and no file) when no entry has both numbers."""
    ps, ylabel = panels(task, rows)
    if not ps:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    tags = list(dict.fromkeys(r.tag for r in rows))
    style = {t: (MARKERS[i % len(MARKERS)], COLORS[i % len(COLORS)]) for i, t in enumerate(tags)}
    fig, axes = plt.subplots(1, len(ps), figsize=(5.6 * len(ps), 4.6), dpi=110, squeeze=False)
    bands = _bands(rows)
    for ax, p in zip(axes[0], ps):
        xs = [x for x, _ in p.points.values()]
        ys = [y for _, y in p.points.values()] + [0.0] + [-lim for lim in bands]
        for i, (limit, tags) in enumerate(sorted(bands.items())):
            who = ", ".join(tags) if len(tags) <= 2 else f"{len(tags)} entries"
            ax.axhspan(-limit, 0, color="#2ca02c", alpha=0.08 + 0.04 * i, lw=0,
                       label=f"gate: lose ≤ {limit:g} pts ({who})")
        ax.axhline(0, color="#555", lw=0.8)
        ax.axvline(1, color="#555", lw=0.8, ls=":")
        for tag, (x, y) in p.points.items():
            marker, color = style[tag]
            ax.scatter([x], [y], s=70, marker=marker, color=color, edgecolor="black", lw=0.5, zorder=3,
                       label=tag)
        ax.set_xscale("log")
        lo, hi = min(xs + [1.0]), max(xs + [1.0])
        ax.set_xlim(lo / 1.6, hi * 1.6)
        ticks = [t for t in (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50) if lo / 1.6 <= t <= hi * 1.6]
        ax.set_xticks(ticks, [f"{t:g}×" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())  # only the labelled ticks: minor labels collide
        span = max(ys) - min(ys) or 1.0
        floor = max(span, 0.5)  # never let hundredths of a point fill the whole axis
        mid = (max(ys) + min(ys)) / 2
        ax.set_ylim(mid - 0.6 * floor - 0.05, mid + 0.6 * floor + 0.05)
        ax.set_xlabel("speed-up over FP32 (× throughput; CPU: vs ONNX Runtime FP32; log scale)", fontsize=8)
        ax.set_title(p.title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        if p.missing:
            text = "not on this panel: " + "; ".join(f"{t} ({why})" for t, why in p.missing.items())
            ax.text(0.0, -0.2, text[:300], transform=ax.transAxes, fontsize=6.5, va="top", wrap=True)
    axes[0][0].set_ylabel(ylabel)
    handles: dict[str, object] = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles.keys()), loc="center left", bbox_to_anchor=(1.0, 0.5),
               fontsize=8, frameon=False)
    run = RunInfo.of(run)
    title = f"{run.recipe or ''}: accuracy change vs speed-up, per precision"
    if run.accuracy_meaningful is False:
        title += " (accuracy NOT meaningful: " + (run.accuracy_reason or "see notes")[:60] + ")"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")  # grows to hold the legend beside the panels
    plt.close(fig)
    return True
