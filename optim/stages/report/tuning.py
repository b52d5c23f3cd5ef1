"""Report sections for accuracy-aware quantization: budget, sensitivity ranking, calibration study.

Reads ``tune/<tag>.json`` and ``study/calibration.json`` from a run folder and
renders Markdown lines, HTML fragments and a bar chart of per-node sensitivity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from optim.artifacts import atomic_path
from optim.runfolder import Entry, RunLayout
from optim.tasks import Task
from optim.verify import read_result

TOP = 10


def collect_tuning(run_dir: Path, tags: list[str] | None = None) -> dict[str, Any]:
    """Tuning results of the run's entries (``tags``; all files when None)."""
    layout = RunLayout(run_dir)
    tune = {p.stem: t for p in sorted(layout.dir(layout.TUNE_DIR).glob("*.json"))
            if (tags is None or p.stem in tags) and (t := read_result(p)) is not None}
    study_p = layout.path(RunLayout.STUDY)
    kept = {}
    for p in sorted(layout.dir(layout.QUANTIZE_DIR).glob("*.json")):
        q = read_result(p) or {}  # None: it does not match the run's manifest (optim.verify)
        entry = Entry.parse(p.stem).base_tag  # the budgeted entry starts from the -nobudget model: name the entry
        if q.get("kept") and (tags is None or p.stem in tags or entry in tags):
            kept[entry] = {"nodes": q["kept"], "patterns": q.get("kept_patterns", [])}
    return {"tune": tune, "kept": kept,
            "study": read_result(study_p) if study_p.is_file() else None}


def _kept_lines(t: dict[str, Any], task: Task) -> list[str]:
    """Nodes the recipe's exclusions (or the task's head, ``quantize.keep_head``) kept in high precision."""
    if not t.get("kept"):
        return []
    out = ["## Kept in high precision before any budget", "",
           "Nodes matching the recipe's `quantize.exclude_nodes` / `exclude_op_types`, plus the task's output "
           f"head where `quantize.keep_head` holds (task {task.name}: "
           f"{task.keep_head_why or 'no head of its own'}).", ""]
    for tag, k in t["kept"].items():
        pats = ", ".join(f"`{p}`" for p in k["patterns"])
        nodes = ", ".join(f"`{n}`" for n in k["nodes"][:8]) + (f" (+{len(k['nodes']) - 8} more)"
                                                                  if len(k["nodes"]) > 8 else "")
        out.append(f"- **{tag}**: {len(k['nodes'])} nodes by {pats}: {nodes}")
    return out + [""]


def _budget_lines(tag: str, t: dict, task: Task) -> list[str]:
    b = t.get("budget")
    if not b:
        return []
    out = [f"**{tag}**: budget {b['max_drop']:g} points of {task.metric_label(b['metric'])} on {t['samples']} "
           f"tuning samples ({t.get('data', '')}): drop {b['before']['drop']:.3f} without the budget, "
           f"{b['after']['drop']:.3f} with it; {len(b['excluded'])} node(s) kept in high precision; "
           f"{b['evaluations']} evaluations, {b['seconds']:.1f} s.", ""]
    out += [f"- `{e['node']}` ({e['op_type']}): {e['why']}" for e in b["excluded"]]
    return out + [""]


def _sens_rows(t: dict) -> list[list[str]]:
    s = t.get("sensitivity") or {}
    return [[str(i + 1), f"`{r['node']}`", r["op_type"], f"{r['output_error']:.3g}",
             f"{r['max_abs_error']:.3g}", f"{r['metric_drop']:+.2f}"]
            for i, r in enumerate(s.get("rows", [])[:TOP])]


def markdown(t: dict[str, Any], task: Task) -> list[str]:
    out: list[str] = _kept_lines(t, task)
    if any(v.get("budget") for v in t["tune"].values()):
        out += ["## Accuracy budget", ""]
        for tag, v in t["tune"].items():
            out += _budget_lines(tag, v, task)
    for tag, v in t["tune"].items():
        s = v.get("sensitivity")
        if not s:
            continue
        out += [f"## Sensitivity: {tag}", "",
                f"Each node quantized alone (all others in high precision, calibration reused), scored "
                f"against FP32 on {s['samples']} tuning samples; {s['evaluations']} evaluations in "
                f"{s['seconds']:.1f} s. Top {min(TOP, len(s['rows']))} of {len(s['rows'])} nodes by "
                "output error (1 - cosine).", "",
                f"| rank | node | op | output error | max abs | {task.metric_label(s['metric'])} lost (pts) |",
                "|---|---|---|---|---|---|"]
        out += ["| " + " | ".join(r) + " |" for r in _sens_rows(v)]
        out.append("")
    st = t.get("study")
    if st:
        out += ["## Calibration study", "",
                f"{st['precision'].upper()} for {st['target']}, scored against FP32 on {st['samples']} "
                f"tuning samples ({st.get('data') or 'the tuning data'}; never the evaluation set).", "",
                f"| method | calibration samples | {task.column(task.headline).header} | "
                f"Δ {task.metric_label(st['metric'])} (pts) | {task.column(task.agreement).header} | cosine | quantize s |",
                "|---|---|---|---|---|---|---|"]
        for r in st["rows"]:
            score = "no labels" if r["score"] is None else f"{r['score']:.2f}"
            out.append(f"| {r['method']} | {r['calibration_samples']} | {score} | {0.0 - r['drop'] + 0.0:+.2f} | "
                       f"{r['agreement']:.2f} | {r['cosine']:.5f} | {r['quantize_seconds']:.1f} |")
        out += [f"- skipped: {s}" for s in st.get("skipped", [])] + [""]
    return out


def sensitivity_plot(t: dict[str, Any], out: Path) -> bool:
    tags = [tag for tag, v in t["tune"].items() if (v.get("sensitivity") or {}).get("rows")]
    if not tags:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(len(tags), 1, figsize=(8, 3.2 * len(tags)), dpi=110, squeeze=False)
    for ax, tag in zip(axes[:, 0], tags):
        rows = t["tune"][tag]["sensitivity"]["rows"][:15][::-1]
        excluded = {e["node"] for e in (t["tune"][tag].get("budget") or {}).get("excluded", [])}
        colors = ["#c0392b" if r["node"] in excluded else "#2e86c1" for r in rows]
        ax.barh([r["node"][-40:] for r in rows], [r["output_error"] for r in rows], color=colors)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # decade labels only: minor ones collide
        ax.set_xlabel("output error, 1 − cosine vs FP32 (log scale)", fontsize=8)
        ax.set_title(f"{tag}: output error with only this node quantized (red: kept in high precision)",
                     fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return True
