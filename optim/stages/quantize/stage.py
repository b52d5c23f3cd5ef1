"""Stage 2: FP32 ONNX -> INT8 / FP8 (explicit Q/DQ) or FP16 / BF16 ONNX.

Two placements of Q/DQ, for two backends:

* ``tensorrt``: NVIDIA modelopt's ONNX PTQ. Q/DQ sit on Conv/Gemm inputs only, the
  form TensorRT's explicit-quantization builder fuses. Everything outside the
  quantized ops stays FP32 unless ``high_precision: fp16``. ONNX Runtime on CPU
  runs these files, but slower than FP32 (they are made for TensorRT).
* ``onnxruntime``: ONNX Runtime's own static QDQ quantizer (per-channel weights), which ORT's
  CPU provider fuses into integer kernels. INT8 only. The integer format (uint8 or int8
  activations, 8- or 7-bit weights) is the one this CPU's integer kernels compute exactly
  (``optim.stages.quantize.scheme``); Relu/Clip stay explicit so the budget can take nodes back.

FP16 and BF16 come from modelopt's AutoCast, keeping FP32 inputs and outputs.

Each quantization runs in a fresh worker process (``optim.stages.quantize.worker``):
modelopt patches ONNX Runtime's calibrators in the process that calls it (which
breaks a later ORT ``quantize_static`` there), and the worker keeps the tools'
console chatter in a log that is shown only when something fails (``--debug``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from optim import errors
from optim.artifacts import atomic_path, write_json
from optim.console import info
from optim.executor import StageOutput
from optim.errors import OptimError, QuantizeError, first_line
from optim.onnx_tools import graph_inputs, load_onnx, name_some, quant_coverage, single_input
from optim.stages.quantize.scheme import resolve
from optim.process import doing, killed_by, signal_name, sweep
from optim.runfolder import Entry, RunLayout
from optim.settings import QUANTIZED, QuantizeSettings

CALIB_BATCH = 32
#: ORT's quantizer keeps Relu/Clip after a quantized node (instead of folding them into the Q/DQ
#: ranges), so taking a node back to high precision gives FP32 again (sensitivity and the budget)
KEEP_ACTIVATIONS = True


@dataclass
class QuantizeReport:
    path: str
    tag: str
    precision: str
    target: str
    tool: str
    method: str | None
    calibration_samples: int
    coverage: dict | None
    seconds: float
    kept: list[str] = field(default_factory=list)  # nodes the exclusions kept in high precision
    kept_patterns: list[str] = field(default_factory=list)  # the exclude_nodes / exclude_op_types that did it
    #: onnxruntime INT8: the integer format, the CPU class that chose it and why (``optim.stages.quantize.scheme``)
    int8_scheme: dict | None = None
    notes: list[str] = field(default_factory=list)  # what the quantizer had to do differently, one line each

    def as_dict(self) -> dict:
        return asdict(self)


def _quiet_modelopt() -> None:
    for name in ("modelopt", "modelopt.onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def _captured(tool: str):
    """Keep third-party chatter off the terminal; show it only if the tool fails."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            yield
    except QuantizeError:
        raise
    except Exception as exc:
        detail = first_line(exc)
        raise QuantizeError(f"{tool} failed: {detail}") from exc


def _check_calib(calib: np.ndarray | None, s: QuantizeSettings) -> np.ndarray:
    if calib is None or len(calib) == 0:
        raise QuantizeError(f"{s.precision.upper()} needs calibration data (none given)")
    return calib


def _modelopt_ptq(src: Path, s: QuantizeSettings, calib: np.ndarray, input_name: str, out: Path) -> None:
    if s.method == "percentile":
        raise QuantizeError("modelopt (target tensorrt) calibrates with 'max' or 'entropy' only; "
                            "use one of those, or target onnxruntime for 'percentile'")
    from modelopt.onnx.quantization import quantize

    _quiet_modelopt()
    with _captured("modelopt quantize"):
        quantize(
            onnx_path=str(src), quantize_mode=s.precision, calibration_data={input_name: calib},
            calibration_method=s.method, calibration_eps=["cpu"], high_precision_dtype=s.high_precision,
            op_types_to_exclude=list(s.exclude_op_types) or None,
            nodes_to_exclude=list(s.exclude_nodes) or None, output_path=str(out), log_level="ERROR",
        )


def _ort_ptq(src: Path, s: QuantizeSettings, calib: np.ndarray, input_name: str, out: Path) -> list[str]:
    if s.precision != "int8":
        raise QuantizeError(f"target onnxruntime makes INT8 only (ONNX Runtime has no "
                            f"{s.precision.upper()} CPU kernels); use target tensorrt for {s.precision}")
    from onnxruntime.quantization import (
        CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(range(0, len(calib), CALIB_BATCH))

        def get_next(self):
            i = next(self._it, None)
            return None if i is None else {input_name: calib[i : i + CALIB_BATCH]}

    method = {"max": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[s.method]
    scheme = s.int8_scheme  # set by quantize_here (scheme.resolve)
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    extra = {"QDQKeepRemovableActivations": KEEP_ACTIVATIONS}
    if s.method == "percentile":
        extra["CalibPercentile"] = s.percentile
    model = onnx.load(str(src))
    excluded = [n.name for n in model.graph.node
                if n.op_type in s.exclude_op_types or _matches(n.name, s.exclude_nodes)]
    # chdir: ORT's symbolic shape inference writes sym_shape_infer_temp.onnx (+ external data)
    # into the working directory when it fails; keep that out of the user's folder
    with tempfile.TemporaryDirectory(prefix="optim-ortq-") as d, contextlib.chdir(d), \
            _captured("onnxruntime quantize_static"):
        pre = Path(d) / "pre.onnx"
        notes = _pre_process(quant_pre_process, src, pre)
        quantize_static(
            str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=types[scheme.activations], weight_type=types[scheme.weights],
            reduce_range=scheme.reduce_range, calibrate_method=method, nodes_to_exclude=excluded or None,
            extra_options=extra,
        )
    return notes


def _pre_process(quant_pre_process, src: Path, pre: Path) -> list[str]:
    """ORT's pre-processing, with its symbolic shape inference merging what it cannot prove equal
    where it must: an exported scale-factor Upsample gives a Resize whose batch is floor(1.0*batch),
    which ORT cannot merge with ``batch`` unless ``auto_merge`` is on (every Ultralytics export)."""
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
        return []
    except Exception as exc:
        if "symbolic shape inference" not in str(exc).lower():
            raise
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=False, auto_merge=True)
        return ["ONNX Runtime's symbolic shape inference could not prove two sizes equal (a scale-factor Resize, "
                "as in Ultralytics exports): it merged them (auto_merge) and quantized"]
    except Exception as exc:  # e.g. no handler for an op there (ReduceMax with axes as an input, opset 18)
        why = first_line(str(exc)) or type(exc).__name__
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    return [f"ONNX Runtime's symbolic shape inference failed, with auto_merge too ({why}): quantized after "
            "ONNX's own shape inference only (skip_symbolic_shape)"]


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    import re

    return any(re.fullmatch(p, name) or p == name for p in patterns)


def _autocast(src: Path, s: QuantizeSettings, out: Path) -> None:
    from modelopt.onnx.autocast import convert_to_mixed_precision

    _quiet_modelopt()
    with _captured(f"modelopt autocast to {s.precision}"):
        model = convert_to_mixed_precision(
            str(src), low_precision_type=s.precision, keep_io_types=True,
            nodes_to_exclude=list(s.exclude_nodes) or None,
            op_types_to_exclude=list(s.exclude_op_types) or None,
        )
        onnx.save(model, str(out))


JOB_PREFIX = "optim-quant-job-"


def sweep_jobs(tmp: Path | None = None) -> list[Path]:
    """Remove the temporary folders (job folders included) of optim processes that died (``kill -9``)."""
    return sweep(Path(tmp or tempfile.gettempdir()))


def quantize_onnx(src: Path, s: QuantizeSettings, out: Path,
                  calib: np.ndarray | None = None) -> QuantizeReport:
    """Make one precision variant of ``src``; ``out`` appears only if it succeeded.

    The work runs in a fresh ``python -m optim.stages.quantize.worker`` process that gets
    its job (paths, settings, calibration array) as plain JSON and ``.npy`` files in a
    private job folder, and writes only there: this process copies the result to ``out``.
    The worker dies with this process (``kill -9`` included); job folders are removed on
    every exit, and those of killed processes by the next quantization.
    """
    if s.precision == "fp32":
        raise QuantizeError("fp32 is the reference: nothing to quantize")
    with doing(f"quantize {s.tag}"):
        return _quantize_in_worker(src, s, out, calib)


def _quantize_in_worker(src: Path, s: QuantizeSettings, out: Path, calib: np.ndarray | None) -> QuantizeReport:
    load_onnx(src)  # fail fast, in this process, on a missing or corrupt file
    sweep_jobs()
    job = Path(tempfile.mkdtemp(prefix=f"{JOB_PREFIX}{os.getpid()}-"))
    try:
        (job / "tmp").mkdir()  # the worker's (and its tools') temporary files: they go with the job folder
        if calib is not None:
            np.save(job / "calib.npy", np.ascontiguousarray(calib), allow_pickle=False)
        (job / "job.json").write_text(json.dumps({
            "src": str(Path(src).resolve()), "out": str(job / "out.onnx"), "parent": os.getpid(),
            "settings": s.model_dump(mode="json"), "calib": calib is not None}))
        log = job / "worker.log"
        with open(log, "wb") as lf:
            proc = subprocess.run([sys.executable, "-m", "optim.stages.quantize.worker", str(job)],
                                  stdout=lf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env={**os.environ, "TQDM_DISABLE": "1", "TMPDIR": str(job / "tmp")})
        result = job / "result.json"
        detail = log.read_text(errors="replace")[-4000:]
        if not result.is_file():
            if proc.returncode < 0:  # killed by a signal: name it (a native crash in modelopt/ORT, OOM)
                how = f"was {killed_by(signal_name(-proc.returncode))}"
            else:
                how = f"exited with code {proc.returncode} (out of memory?)"
            err = QuantizeError(f"the {s.tag} quantization worker {how} before finishing; "
                                "rerun with --debug to see its log")
            err.detail = detail
            raise err
        reply = json.loads(result.read_text())
        if reply["ok"]:
            with atomic_path(Path(out)) as tmp:
                shutil.copyfile(job / "out.onnx", tmp)
            return QuantizeReport(**{**reply["report"], "path": str(out)})
    finally:
        shutil.rmtree(job, ignore_errors=True)
    cls = getattr(errors, reply["type"], QuantizeError)
    message = reply["message"]
    err = cls(message) if isinstance(cls, type) and issubclass(cls, OptimError) else QuantizeError(message)
    err.detail = detail
    raise err


def _private_copy(src: Path, folder: Path) -> Path:
    """A copy of ``src`` (with its external-data files) for a quantizer that may write to its input
    (modelopt's ``quantize`` rewrites ``onnx_path``): the caller's file is never opened for writing."""
    dst = folder / "input" / src.name
    dst.parent.mkdir(parents=True)
    shutil.copyfile(src, dst)
    header = onnx.load(str(src), load_external_data=False)
    for t in header.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = next((e.value for e in t.external_data if e.key == "location"), None)
            if loc and not (dst.parent / loc).exists():
                (dst.parent / loc).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src.parent / loc, dst.parent / loc)
    return dst


def quantize_here(src: Path, s: QuantizeSettings, out: Path,
                  calib: np.ndarray | None = None) -> QuantizeReport:
    """``quantize_onnx`` without the worker process (modelopt's ORT patches stay here)."""
    if s.precision == "fp32":
        raise QuantizeError("fp32 is the reference: nothing to quantize")
    if s.int8_scheme is None:  # a caller that did not resolve it: this CPU's format (onnxruntime INT8 only)
        s = resolve(s)
    model = load_onnx(src)
    input_name, _, _ = single_input(graph_inputs(model), str(src))
    t0 = time.perf_counter()
    n_calib, notes = 0, []
    with tempfile.TemporaryDirectory(prefix="optim-quant-") as d:
        src = _private_copy(Path(src), Path(d))
        tmp = Path(d) / "out.onnx"
        if s.precision in ("fp16", "bf16"):
            _autocast(src, s, tmp)
            tool, method = "modelopt autocast", None
        else:
            calib = _check_calib(calib, s)
            n_calib = len(calib)
            if s.target == "tensorrt":
                _modelopt_ptq(src, s, calib, input_name, tmp)
                tool = "modelopt onnx ptq"
            else:
                notes = _ort_ptq(src, s, calib, input_name, tmp)
                tool = "onnxruntime quantize_static"
            method = s.method
        if not tmp.is_file():
            raise QuantizeError(f"{tool} produced no model for {s.tag}")
        result = onnx.load(str(tmp))
        coverage = None
        if s.precision in QUANTIZED:
            cov = quant_coverage(result)
            if cov.quantized == 0:
                raise QuantizeError(
                    f"{tool} quantized none of the {cov.eligible} Conv/Gemm/MatMul nodes for "
                    f"{s.tag} (it skips narrow layers); the result would equal FP32")
            coverage = cov.as_dict()
        with atomic_path(out) as final_tmp:
            final_tmp.write_bytes(tmp.read_bytes())
    kept = [n.name for n in model.graph.node if n.op_type in s.exclude_op_types or _matches(n.name, s.exclude_nodes)]
    sc = s.int8_scheme
    scheme = {**sc.model_dump(mode="json"), "label": sc.label()} if sc is not None else None
    return QuantizeReport(str(out), s.tag, s.precision, Entry.of(s).target or "any",
                          tool, method, n_calib, coverage, round(time.perf_counter() - t0, 2), kept,
                          [*s.exclude_nodes, *(f"op type {t}" for t in s.exclude_op_types)] if kept else [],
                          scheme, notes)


NAME = "quantize"
TOOLS = ("nvidia-modelopt", "onnxruntime", "onnx")
SUMMARY = "INT8/FP8 Q/DQ (modelopt, ONNX Runtime), FP16/BF16"


def doctor(machine, target, hardware_compatibility: str = "none") -> list[tuple[str, str | None]]:
    """modelopt, and an ONNX Runtime that loads (both wheels installed at once break it)."""
    from optim.backends.registry import get_backend
    from optim.install import INSTALL
    from optim.runfolder.entry import PRIMARY

    modelopt = None if machine.packages.get("nvidia-modelopt") else f"nvidia-modelopt missing: {INSTALL['base']}"
    return [(SUMMARY, get_backend(PRIMARY).blocker(machine) or modelopt)]
Settings = QuantizeSettings


def run(inputs: list, settings: QuantizeSettings, ctx) -> StageOutput:
    """``inputs``: the FP32 model, and for INT8/FP8 the calibration ``Data``.

    Writes the model to ``ctx.out`` and the report to ``quantize/<name>.json``."""
    src, *rest = inputs
    calib = rest[0].x if rest else None
    rep = quantize_onnx(src.path, settings, ctx.out, calib)
    rep.path = ctx.out.name
    if rep.coverage:
        cov = rep.coverage
        info(f"{ctx.out.name}: {cov['quantized']}/{cov['eligible']} Conv/Gemm/MatMul nodes quantized "
             f"({', '.join(cov['qdq_dtypes'])}){_left_text(rep)}")
    for note in rep.notes:
        info(f"  {ctx.out.name}: {note}")
    rel = RunLayout.quantize(ctx.name)
    write_json(ctx.side(RunLayout.record_name(rel), rel), rep.as_dict())
    return StageOutput(settings.model_dump(mode="json"), rep)


def _left_text(rep: QuantizeReport) -> str:
    """``; TOOL left a, b and 3 more unquantized (2 more kept by the exclusions)``, or nothing."""
    left = (rep.coverage or {}).get("unquantized") or []
    kept = set(rep.kept)
    skipped = [n for n in left if n not in kept]
    n_kept = len(left) - len(skipped)
    if not skipped:
        return f"; {n_kept} kept unquantized by the exclusions" if n_kept else ""
    more = f" ({n_kept} more kept by the exclusions)" if n_kept else ""
    return f"; {rep.tool} left {name_some(skipped)} unquantized{more}"


def quantize_file(src: Path, s: QuantizeSettings, out: Path, calib: np.ndarray | None = None) -> QuantizeReport:
    """The stage on a file outside a run folder (``optim quantize``): no side report is kept."""
    from optim.artifacts import Artifact, Data
    from optim.executor import StageContext

    inputs = [Artifact.of_file(src, "fp32", "onnx")] + ([Data.of("calibration", calib)] if calib is not None else [])
    with tempfile.TemporaryDirectory(prefix="optim-quantize-") as d:
        return run(inputs, s, StageContext(Path(d), Path(out), Path(out).stem)).result
