"""Stage 5: one per-precision accuracy-vs-speed table from a run folder.

Reads the JSON results the stages left in RUN_DIR (``run.json``, ``quantize/``,
``check/``, ``bench/``, and ``gpu/{build,check,bench}/`` for TensorRT engines) and
writes ``report.md``, ``report.html``, ``report.json`` and ``report.png``. Each row is
one precision: its ONNX file on the CPU backend, and its TensorRT engine in the GPU
columns. A number that was not measured is shown as "not run" with the reason, never
left blank or filled in.
"""

from __future__ import annotations

import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from optim.artifacts import write_json, write_text
from optim.backends import cpu
from optim.errors import InputError
from optim.executor import StageOutput
from optim.runfolder import NOT_RUN, Entry, RunInfo, RunLayout
from optim.stages.report import html as report_html, plot as report_plot, sizes as report_sizes, tuning as report_tuning
from optim.stages.bench import BatchTiming, BenchResult
from optim.stages.check import CheckResult
from optim.tasks import Task, get_task
from optim.verify import Trust, current_trust, mark_unverified, read_result, read_run_info, reading

ORDER = ("fp32", "fp16", "bf16", "int8", "fp8")


@dataclass
class Row:
    """One entry of the run: its file on the CPU backend, and its TensorRT engine in the GPU columns.

    ``accuracy`` holds the task's column values (``Task.row_values``), None where not measured."""

    tag: str
    precision: str
    target: str
    file: str
    backend: str = cpu.PRIMARY  # the CPU backend of the accuracy and timing columns
    primary: bool = True  # the entry's first row: it carries the GPU columns
    fastest: bool = False  # the fastest row of its precision and target that passed its gates
    timing_caveat: bool = False  # the backend said its timing is not this precision's speed
    #: this backend computes the entry's file wrongly where another backend computes it right (one phrase)
    disagrees: str | None = None
    #: onnxruntime INT8: the integer format and why this CPU got it (``optim.stages.quantize.scheme``)
    int8_scheme: str | None = None
    #: from quantize/<tag>.json: the tool that made the file, its calibration method and sample count,
    #: and the INT8 format chosen for this CPU class (``u8s8``, ...); None where not applicable
    quantizer: str | None = None
    calibration_method: str | None = None
    calibration_samples: int | None = None
    int8_format: str | None = None
    size_bytes: int | None = None
    coverage: str | None = None
    checked: bool = False
    accuracy: dict[str, float | None] = field(default_factory=dict)
    gates: str = "none set"
    gate_limits: dict[str, float] = field(default_factory=dict)  # gate name -> limit (the plot's bands)
    latency_batch: int | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    throughput_batch: int | None = None
    throughput: float | None = None
    speedup_vs_fp32: float | None = None
    accuracy_method: str = NOT_RUN
    timing_method: str = NOT_RUN
    notes: list[str] = field(default_factory=list)
    # the TensorRT engine of this precision, on the GPU
    gpu_engine: str | None = None
    gpu_checked: bool = False
    gpu_accuracy: dict[str, float | None] = field(default_factory=dict)
    gpu_gates: str | None = None
    gpu_p50_ms: float | None = None
    gpu_p99_ms: float | None = None
    gpu_throughput: float | None = None
    gpu_speedup_vs_fp32: float | None = None
    gpu_layers: dict | None = None
    gpu_method: str = NOT_RUN
    #: engines built without a GPU (``build.extra_targets``), by target: "built (RTX ...)" or "not built: why"
    engines: dict[str, str] = field(default_factory=dict)
    # timings at the recipe's other input sizes (``bench.sizes``), by size label: see report_sizes
    sizes: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: a file of this row did not match the run's manifest (one line naming it): never ★, never "passed"
    unverified: str | None = None


def _by_tag(folder: Path) -> dict[str, dict[str, Any]]:
    """The result files of a folder by stem; those that do not match the manifest are left out
    (``optim.verify``: the rows that needed them are marked unverified)."""
    if not folder.is_dir():
        return {}
    found = {p.stem: read_result(p) for p in sorted(folder.glob("*.json"))}
    return {k: v for k, v in found.items() if v is not None}


def _results(folder: Path, kind: type, what: str) -> dict[str, Any]:
    """The typed results (``CheckResult``/``BenchResult``) in a folder, by file stem."""
    try:
        return {tag: kind.from_dict(d) for tag, d in _by_tag(folder).items()}
    except (TypeError, KeyError) as exc:
        raise InputError(f"{folder} holds a {what} result optim cannot read ({exc}); rerun the {what}") from None


def task_of(run: RunInfo | dict[str, Any]) -> Task:
    return get_task(RunInfo.of(run).task or "classification")


def collect(run_dir: Path) -> tuple[RunInfo, list[Row]]:
    """The run's rows, read through the run's manifest (``optim.verify``): a result file that does not
    match it is not read, and the rows that needed it say so (``Row.unverified``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"run folder not found: {run_dir}")
    if current_trust() is None:
        with reading(Trust(run_dir)):
            return collect(run_dir)
    trust = current_trust()
    layout = RunLayout(run_dir)
    run = read_run_info(run_dir)  # no run.json: the defaults; one that is not valid: an InputError naming it
    if run is None:
        raise InputError(f"{trust.untrusted[RunLayout.RUN_JSON]}: `optim run RECIPE` redoes it; "
                         f"`optim verify {run_dir}` lists every problem")
    task = task_of(run)
    quant, checks, benches = _by_tag(layout.dir(layout.QUANTIZE_DIR)), \
        _results(layout.dir(layout.CHECK_DIR), CheckResult, "check"), \
        _results(layout.dir(layout.bench_dir()), BenchResult, "bench")
    for tag, t in _by_tag(layout.dir(layout.TUNE_DIR)).items():  # budgeted models: coverage after the budget
        if t.get("coverage"):
            raw = quant.get(Entry.parse(tag).replace(budget=False).tag) or {}  # the model the budget started from
            quant[tag] = {"coverage": t["coverage"], **{k: raw.get(k) for k in QUANT_KEYS if k != "coverage"}}
    gpu = [_by_tag(layout.dir(layout.gpu_dir("build"))),
           _results(layout.dir(layout.gpu_dir("check")), CheckResult, "check"),
           _results(layout.dir(layout.gpu_dir("bench")), BenchResult, "bench")]
    # a run lists its entries; result files of entries a recipe no longer has are ignored
    tags = list(run.tags) if run.tags else list(dict.fromkeys(["fp32", *quant, *checks, *benches]))
    if not (quant or checks or benches):
        raise InputError(f"{run_dir} holds no optim results (no quantize/, check/ or bench/ JSON); "
                         "run `optim run RECIPE` first")
    families = run.families
    cpu_not_run = run.cpu_not_run
    rows = []
    for t in tags:
        for i, family in enumerate(families):
            name = Entry.parse(t).replace(backend=family).result_name
            row = _row(task, t, run_dir, run, quant.get(t), checks.get(name), benches.get(name))
            row.backend, row.primary = family, i == 0
            if name in cpu_not_run:
                row.accuracy_method = row.timing_method = f"{NOT_RUN}: {cpu_not_run[name]}"
            rows.append(row)
    not_run = run.gpu.not_run
    for r in rows:
        if r.primary:
            _gpu_columns(task, r, not_run.get(r.tag), *(g.get(r.tag) for g in gpu))
        else:
            r.gpu_method = "on the entry's first row"
    for key, cells in run.engines.items():
        for r in rows:
            if r.primary and isinstance(cells, dict):
                r.engines[key] = str(cells.get(Entry.parse(r.tag).engine_name(key)) or NOT_RUN)
    order = {f: i for i, f in enumerate(families)}
    rows.sort(key=lambda r: (ORDER.index(r.precision) if r.precision in ORDER else 99, r.target, order[r.backend]))
    base = next((r for r in rows if r.tag == "fp32" and r.primary), None)
    for r in rows:
        if base and base.throughput and r.throughput and r.throughput_batch == base.throughput_batch:
            r.speedup_vs_fp32 = round(r.throughput / base.throughput, 3)
        if base and base.gpu_throughput and r.gpu_throughput:
            r.gpu_speedup_vs_fp32 = round(r.gpu_throughput / base.gpu_throughput, 3)
    flag_backends(task, run, rows)
    report_sizes.attach(run_dir, run, rows, _results)
    mark_unverified(trust, run_dir, rows)
    _mark_fastest(rows)
    return run, rows


#: how backends are named in a sentence
BACKEND_LABELS = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
#: an entry's row whose agreement with FP32 is this many points below another backend's on the
#: same entry disagrees with the reference, gates or not
AGREEMENT_GAP = 10.0


def flag_backends(task: Task, run: RunInfo, rows: list[Row]) -> None:
    """Mark the rows whose backend computes the entry wrongly while another computes it right: their
    gates failed where another backend's passed, or their agreement with FP32 is ``AGREEMENT_GAP``
    points below another's. Where every backend fails, the file itself is off: nothing is marked."""
    from optim.hostcpu import CpuInfo

    feats = RunInfo.of(run).host.get("cpu_features")
    where = CpuInfo("", 1, frozenset(feats or ()), feats is not None).int8_label()
    by_tag: dict[str, list[Row]] = {}
    for r in rows:
        if r.checked:
            by_tag.setdefault(r.tag, []).append(r)
    for group in by_tag.values():
        if len(group) < 2:
            continue
        agree = {id(r): r.accuracy.get(task.agreement) for r in group}
        for r in group:
            good = [o for o in group if o is not r and "FAILED" not in o.gates and
                    (agree[id(o)] is None or agree[id(r)] is None or agree[id(o)] >= agree[id(r)])]
            failed = "FAILED" in r.gates and good
            gap = [o for o in good if agree[id(r)] is not None and agree[id(o)] is not None
                   and agree[id(o)] - agree[id(r)] > AGREEMENT_GAP]
            if not (failed or gap):
                continue
            other = (gap or good)[0]
            what = "INT8" if r.precision == "int8" else r.precision.upper()
            a, b = agree[id(r)], agree[id(other)]
            nums = f": agreement {a:.1f}% ({BACKEND_LABELS.get(other.backend, other.backend)}, same entry: {b:.1f}%)" \
                if a is not None and b is not None else f" ({BACKEND_LABELS.get(other.backend, other.backend)} passes)"
            r.disagrees = f"{BACKEND_LABELS.get(r.backend, r.backend)} {what} kernels on {where} disagree with " \
                          f"the reference{nums}"


def _mark_fastest(rows: list[Row]) -> None:
    """Per precision and target: the row with the highest CPU throughput among those whose gates
    passed, whose backend agrees with the others, whose numbers mean something and whose timing
    is that precision's (no caveat)."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        if r.throughput is not None and "FAILED" not in r.gates and not r.notes and not r.timing_caveat \
                and not r.disagrees and not r.unverified:
            groups.setdefault((r.precision, r.target), []).append(r)
    for group in groups.values():
        max(group, key=lambda r: r.throughput).fastest = True


def _timings(b: BenchResult) -> tuple[dict[int, BatchTiming], int, int]:
    timings = {t.batch: t for t in b.timings}
    return timings, min(timings), max(timings)


def _gates_cell(c: CheckResult) -> str:
    failed = [g.gate for g in c.gates if not g.passed]
    return ("FAILED: " + ", ".join(failed)) if failed else f"passed ({len(c.gates)})"


def _gpu_columns(task: Task, row: Row, why_not: str | None, build: dict | None, c: CheckResult | None,
                 b: BenchResult | None) -> None:
    """Fill the engine columns of a row from gpu/{build,check,bench}/TAG.json, or say why not."""
    if why_not or not (build or c or b):
        row.gpu_method = f"{NOT_RUN}: {why_not}" if why_not else NOT_RUN
        return
    parts = []
    if build:
        man = build.get("manifest", {})
        row.gpu_engine, row.gpu_layers = build.get("engine"), man.get("layer_summary")
        parts.append(f"engine {row.gpu_engine} (TensorRT {man.get('tensorrt')}, {man.get('gpu', {}).get('name')})")
    if c:
        row.gpu_checked, row.gpu_accuracy = True, task.row_values(c.outputs, c.accuracy)
        row.notes += [f"GPU engine: {w}" for w in c.warnings if w not in row.notes]
        row.gpu_gates = _gates_cell(c)
        parts.append(f"accuracy: {c.method}, {c.summary()} vs FP32 reference, gates {row.gpu_gates}")
    if b and b.timings:
        timings, small, large = _timings(b)
        row.gpu_p50_ms, row.gpu_p99_ms = timings[small].median_ms, timings[small].p99_ms
        row.gpu_throughput = timings[large].throughput
        parts.append(f"timing: {b.method}")
    if row.gpu_layers and row.gpu_layers.get("by_input_precision"):
        parts.append(f"layers by input precision {row.gpu_layers['by_input_precision']}")
    row.gpu_method = "; ".join(parts)


#: what the report reads from quantize/<tag>.json (``optim.stages.quantize.stage.QuantizeReport.as_dict``)
QUANT_KEYS = ("coverage", "int8_scheme", "tool", "method", "calibration_samples")


def _row(task: Task, tag: str, run_dir: Path, run: RunInfo, q: dict | None, c: CheckResult | None,
         b: BenchResult | None) -> Row:
    e = Entry.parse(tag)
    file = run.files.get(tag) or (q or {}).get("path") or ""
    row = Row(tag, e.precision, e.target_label, Path(file).name)
    if c:
        row.file = Path(c.candidate).name or row.file
    f = run_dir / row.file if row.file else None
    if f and f.is_file():
        row.size_bytes = f.stat().st_size
    cov = (q or {}).get("coverage")
    if cov:
        row.coverage = f"{cov['quantized']}/{cov['eligible']}"
    scheme = (q or {}).get("int8_scheme")
    if scheme:
        row.int8_scheme = f"{scheme.get('label', scheme.get('format'))} ({scheme.get('reason', '')})"
        row.int8_format = scheme.get("format")
    _quantizer(row, q)
    if c:
        row.checked, row.accuracy = True, task.row_values(c.outputs, c.accuracy)
        row.notes += [w for w in c.warnings if w not in row.notes]
        if c.gates:
            row.gates = _gates_cell(c)
            row.gate_limits = {g.gate: g.limit for g in c.gates}
        row.accuracy_method = f"{c.method}; {c.samples} samples of {c.data or 'eval data'}"
    if b:
        if b.skipped:
            row.timing_method = f"{NOT_RUN}: {b.skipped}"
        else:
            timings, small, large = _timings(b)
            row.latency_batch, row.p50_ms, row.p99_ms = small, timings[small].median_ms, timings[small].p99_ms
            row.throughput_batch, row.throughput = large, timings[large].throughput
            row.timing_method = b.method + (f" ({b.note})" if b.note else "")
            row.timing_caveat = bool(b.note)
    return row


def _quantizer(row: Row, q: dict | None) -> None:
    """The tool, calibration method and sample count of the entry's quantize/<tag>.json (a method and
    samples only where the file was calibrated: INT8/FP8)."""
    q = q or {}
    row.quantizer = q.get("tool") or None
    samples = q.get("calibration_samples")
    if q.get("method") and samples:
        row.calibration_method, row.calibration_samples = str(q["method"]), int(samples)


def _calibration_cell(r: Row) -> str:
    return f"{r.calibration_method}, {r.calibration_samples}" if r.calibration_method else "-"


def _fmt(v: float | None, nd: int = 2, suffix: str = "") -> str:
    return NOT_RUN if v is None else f"{v:.{nd}f}{suffix}"


def table_rows(task: Task, rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """Header and cells. With several CPU backends each entry has a row per backend (★: the fastest
    row of its precision and target that passed its gates); × fp32 is against ONNX Runtime FP32."""
    lb = next((r.latency_batch for r in rows if r.latency_batch), 1)
    tb = next((r.throughput_batch for r in rows if r.throughput_batch), None)
    headline = task.column(task.headline)
    several = len({r.backend for r in rows}) > 1
    extra = list(dict.fromkeys(k for r in rows for k in r.engines))
    head = ["precision", "target", *(["backend"] if several else []), *[c.header for c in task.columns],
            f"p50 b{lb} ms", f"p99 b{lb} ms", f"img/s b{tb}" if tb else "img/s",
            "× ORT fp32" if several else "× fp32",
            f"GPU {headline.header}", f"GPU p50 b{lb} ms", f"GPU img/s b{tb}" if tb else "GPU img/s", "GPU × fp32",
            *[f"{engine_label(k)} engine" for k in extra],
            "size KB", "Q/DQ coverage", "quantizer", "calibration (method, samples)", "INT8 scheme",
            "gates", "not meaningful"]
    body = []
    for r in rows:
        gpu = ([headline.cell(r.gpu_accuracy.get(headline.key), r.gpu_checked), _fmt(r.gpu_p50_ms, 3),
                _fmt(r.gpu_throughput, 1), _fmt(r.gpu_speedup_vs_fp32, 2)] if r.primary else ["", "", "", ""])
        body.append([
            r.precision, r.target, *([r.backend + (" ★" if r.fastest else "")] if several else []),
            *[c.cell(r.accuracy.get(c.key), r.checked) for c in task.columns],
            _fmt(r.p50_ms, 3), _fmt(r.p99_ms, 3), _fmt(r.throughput, 1), _fmt(r.speedup_vs_fp32, 2), *gpu,
            *[r.engines.get(k, "") if r.primary else "" for k in extra],
            _fmt(None if r.size_bytes is None else r.size_bytes / 1024, 1),
            r.coverage or "-", r.quantizer or "-", _calibration_cell(r), r.int8_format or "-", _gates_text(r),
            "; ".join(r.notes) or "-",
        ])
    return head, body


def _gates_text(r: Row) -> str:
    if r.unverified:
        return f"UNVERIFIED: {r.unverified}"
    return r.gates + (f"; GPU engine {r.gpu_gates}" if r.gpu_gates else "") + (f"; {r.disagrees}" if r.disagrees else "")


def engine_label(key: str) -> str:
    """"RTX" for the rtx target: its flavour's short name."""
    from optim.backends.engine_compat import TARGETS
    from optim.backends.trt_flavour import FLAVOURS

    t = TARGETS.get(key)
    return FLAVOURS[t.flavour].short if t else key


def engines_markdown(run: RunInfo) -> list[str]:
    """Every engine built without a GPU (all entries, NMS deployables, other sizes), one line each."""
    out = []
    for key, cells in RunInfo.of(run).engines.items():
        if not isinstance(cells, dict) or not cells:
            continue
        out += ["", f"## {engine_label(key)} engines (built here without a GPU; not run: no such GPU here)", ""]
        out += [f"- `{name}`: {cell}" for name, cell in cells.items()]
    return out


def _notes(run: RunInfo) -> list[str]:
    notes = list(run.notes)
    if run.accuracy_meaningful is False:
        notes.insert(0, "ACCURACY COLUMNS ARE NOT MEANINGFUL: " + run.accuracy_reason)
    return notes


def to_markdown(run: RunInfo, rows: list[Row], extra: list[str] = (), pictures: list[tuple[str, str]] = ()) -> str:
    """The whole report; ``pictures``: (alt text, file name beside the report) shown after the table."""
    run = RunInfo.of(run)
    head, body = table_rows(task_of(run), rows)
    out = [f"# optim report: {run.recipe or '?'}", ""]
    if run.description:
        out += [run.description, ""]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(cells) + " |" for cells in body]
    for alt, name in pictures:
        out += ["", f"![{alt}]({name})"]
    out += ["", "## How each number was obtained", ""]
    for r in rows:
        scheme = f"INT8 format: {r.int8_scheme}; " if r.int8_scheme else ""
        made = f"made by {r.quantizer}" + (f", calibrated with {r.calibration_method} on {r.calibration_samples} "
                                           "samples" if r.calibration_method else "") + "; " if r.quantizer else ""
        out.append(f"- **{_name(r)}** (`{r.file}`): {made}{scheme}accuracy: {r.accuracy_method}; "
                   f"timing: {r.timing_method}; GPU: {r.gpu_method}")
    out += engines_markdown(run)
    if extra:
        out += [""] + list(extra)
    notes = _notes(run)
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    host = run.host
    if host:
        out += ["", f"Host: {host.get('cpu', '?')}, {host.get('cpu_count', '?')} CPUs. "
                f"Generated {run.generated}."]
    return "\n".join(out) + "\n"


def _name(r: Row) -> str:
    """The row's result name: TAG, or TAG@backend on a CPU backend other than the first."""
    return Entry.parse(r.tag).replace(backend=r.backend).result_name


def summary_lines(run: RunInfo, rows: list[Row], width: int = 100) -> list[str]:
    """The end of ``optim run`` on a terminal: one short line per entry (the full table is in the files)."""
    run = RunInfo.of(run)
    task = task_of(run)
    key, _ = report_plot.y_key(task, rows)
    head = task.column(key).header if any(c.key == key for c in task.columns) else key
    out = [f"{'entry':<38}{head:>15}{'CPU ×fp32':>11}{'GPU ×fp32':>11}  gates"]
    for r in rows:
        v = r.accuracy.get(key)
        acc = NOT_RUN if v is None else (f"{v:+.2f}" if key != task.agreement else f"{v:.2f}")
        gates = r.gates + (f"; GPU {r.gpu_gates}" if r.gpu_gates else "") + ("; NOT MEANINGFUL" if r.notes else "")
        gates = f"UNVERIFIED: {r.unverified}" if r.unverified else gates
        name = _name(r) + (" ★" if r.fastest and len({x.backend for x in rows}) > 1 else "")
        gpu = _fmt(r.gpu_speedup_vs_fp32, 2) if r.primary else ""
        line = f"{name:<38}{acc:>15}{_fmt(r.speedup_vs_fp32, 2):>11}{gpu:>11}  {gates}"
        out.append(line if len(line) <= width else line[:width - 3] + "...")
    extra = [f"{_name(r)}: {r.disagrees}; not ★" for r in rows if r.disagrees]
    flagged = [r for r in rows if r.notes and not r.unverified]
    if flagged:  # said plainly: passed gates on such a row prove nothing
        extra.append(f"NOT MEANINGFUL: {len(flagged)} of {len(rows)} checks: their gates cannot tell a good "
                     f"entry from a broken one ({flagged[0].notes[0]}); optim run --strict (check.strict) "
                     "fails the run on this")
    schemes: dict[str, list[str]] = {}  # one line per INT8 format, naming the entries that have it
    for r in rows:
        if r.int8_scheme and r.primary:
            schemes.setdefault(r.int8_scheme, []).append(r.tag)
    extra += [f"{', '.join(tags)}: {text}" for text, tags in schemes.items()]
    for key, cells in run.engines.items():  # one line per target built without a GPU
        if isinstance(cells, dict) and cells:
            built = [n for n, c in cells.items() if str(c).startswith("built")]
            failed = [n for n, c in cells.items() if str(c).startswith("not built") and "placed for ONNX" not in str(c)
                      and "comparison" not in str(c)]
            extra.append(f"{engine_label(key)} engines: {len(built)} built" + (
                f"; not built: {', '.join(failed)} ({cells[failed[0]].removeprefix('not built: ')})" if failed else ""))
    return out + [ln for e in extra for ln in textwrap.wrap(e, width, subsequent_indent="    ")]


def write_report(run_dir: Path) -> dict[str, Path]:
    run_dir = Path(run_dir)
    with reading(Trust(run_dir)) as trust:
        return _write_report(run_dir, trust)


def _write_report(run_dir: Path, trust: Trust) -> dict[str, Path]:
    run, rows = collect(run_dir)
    layout = RunLayout(run_dir)
    if not trust.checked:
        run = run.model_copy(update={"notes": [f"UNVERIFIED: {run_dir} has no {RunLayout.MANIFEST}; nothing in this "
                                               "report was checked against one", *run.notes]})
    task = task_of(run)
    tuning = report_tuning.collect_tuning(run_dir, [r.tag for r in rows])
    paths = {k: layout.path(RunLayout.report(k)) for k in ("md", "html", "json", "png")}
    pictures = []
    if report_plot.plot(run, task, rows, paths["png"]):
        pictures.append(("accuracy change vs speed-up over FP32, per backend", paths["png"].name))
    else:
        paths.pop("png")
    sens_png = layout.path(RunLayout.report("sensitivity.png"))
    if report_tuning.sensitivity_plot(tuning, sens_png):
        paths["sensitivity_png"] = sens_png
        pictures.append(("per-node sensitivity (output error with only that node quantized)", sens_png.name))
    md = to_markdown(run, rows, report_sizes.markdown(run, rows) + report_tuning.markdown(tuning, task), pictures)
    write_text(paths["md"], md)
    write_text(paths["html"], report_html.render(md, f"optim report: {run.recipe or ''}"))
    write_json(paths["json"], {
        "recipe": run.recipe, "task": task.name, "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "columns": [{"key": c.key, "header": c.header} for c in task.columns],
        "accuracy_meaningful": run.accuracy_meaningful, "notes": _notes(run),
        "host": run.host, "tools": run.tools,
        "rows": [asdict(r) for r in rows], "tuning": tuning,
    })
    return paths


NAME = "report"
SUMMARY = "report.{md,html,json,png}: accuracy vs speed per entry"
TOOLS = ("matplotlib",)


def run(inputs: list, settings, ctx) -> StageOutput:
    """Every result file of the run folder -> report.md (``ctx.out``), .html, .json, .png."""
    paths = write_report(ctx.root)
    for k, p in paths.items():
        if k != "md":
            ctx.side(f"report.{k}", p.name, "report")
    return StageOutput({}, paths)
