"""The Python API: the stage functions the ``optim`` commands call, for notebooks and scripts.

    import optim

    res = optim.run("recipes/fashion_resnet.yaml", precisions="fp32,int8", eval_samples=500)
    for row in res.rows:
        print(row.tag, row.backend, row.accuracy["top1"], row.speedup_vs_fp32)

Every function takes paths as ``str`` or ``Path``; a typed settings object where the stage has one
(``optim.settings``: ``QuantizeSettings``, ``BenchSettings``, ``BuildSettings``, ``ExportSettings``)
or the keyword arguments that build it; data as the strings ``--data`` takes (a spec ``.yaml``, an
``.npz``/``.npy``, an image folder, ``scenes:N``, ``synthetic:N`` ...) or a NumPy array of model
inputs. Each returns the stage's own result (``CheckResult``, ``QuantizeReport``, ``BenchResult``,
``BuildReport``, ``ExportReport``; ``run``: a ``RunResult``) and raises the project's exception
family (``optim.errors.OptimError``; ``exit_code`` is what the command would exit with), never
``SystemExit``. A failed gate is a result (``passed`` is False), not an error, unless
``raise_on_failure=True`` (then ``GateError``, as ``optim run`` / ``optim check`` exit 3).

``import optim`` imports none of this (``optim.run`` etc. load this module on first use), and this
module imports torch, ONNX Runtime and the stages only inside the functions that need them.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

from optim.errors import InputError, OptimError

if TYPE_CHECKING:  # for readers and type checkers only: nothing heavy is imported at run time
    import numpy as np

    from optim.recipe import Recipe
    from optim.settings import BenchSettings, BuildSettings, ExportSettings, QuantizeSettings
    from optim.stages.bench import BenchResult
    from optim.stages.build import BuildReport
    from optim.stages.check import CheckResult
    from optim.stages.export import ExportReport
    from optim.stages.quantize.stage import QuantizeReport
    from optim.stages.report.stage import Row

PathLike = Union[str, "os.PathLike[str]"]
#: a ``--data`` string (or a path to the same), or a NumPy array of model inputs (N, *input shape)
DataLike = Union[str, "os.PathLike[str]", "np.ndarray"]

__all__ = ["RunResult", "run", "export", "quantize", "check", "bench", "build"]


def _private_tmp(fn):
    """Run ``fn`` with a temporary folder of this process's own (as the ``optim`` command does:
    quantize workers and tools write there, and it is removed afterwards); inside one already, as is."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from optim import process

        if process.base_tmp:  # the CLI (or an outer API call) made one already
            return fn(*args, **kwargs)
        with process.private_tmp():
            return fn(*args, **kwargs)

    return wrapper


def _path(p: PathLike | None, what: str) -> Path | None:
    if p is None:
        return None
    if isinstance(p, (str, os.PathLike)):
        return Path(p)
    raise InputError(f"{what} must be a path (str or Path), got {type(p).__name__}")


def _existing(p: PathLike, what: str) -> Path:
    path = _path(p, what)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    return path


def _as_recipe(recipe: PathLike | Recipe | None) -> Recipe | None:
    """A recipe given as a path (loaded and validated) or as a loaded ``Recipe``."""
    if recipe is None:
        return None
    from optim.recipe import Recipe, load_recipe

    if isinstance(recipe, Recipe):
        return recipe
    return load_recipe(_path(recipe, "recipe"))


def _names(v: str | Sequence[str] | None) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return tuple(s.strip() for s in v.split(",") if s.strip())
    return tuple(str(s) for s in v)


def _settings(cls, given: Any, what: str, **values: Any):
    """``given`` when it is already a ``cls``, else ``cls(**values)``; a bad value is a RecipeError
    naming the option, as on the command line."""
    from pydantic import ValidationError

    from optim.recipe import RecipeError, validation_message

    if given is not None:
        if not isinstance(given, cls):
            raise InputError(f"{what} must be an optim.settings.{cls.__name__}, got {type(given).__name__}")
        return given
    try:
        return cls(**values)
    except ValidationError as exc:
        raise RecipeError(validation_message("bad option", exc)) from None


# -- data -------------------------------------------------------------------------------------------
def _labels_of(labels: Any, n: int, source: str):
    """Labels given as an array: class ids, one per sample."""
    import numpy as np

    from optim.errors import DataError

    y = np.asarray(labels)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{source}: labels must be a 1-D array of integer class ids, got {y.dtype} {list(y.shape)}")
    if len(y) < n:
        raise DataError(f"{source}: {len(y)} labels for {n} samples")
    return y[:n].astype(np.int64)


def _model_inputs(data: DataLike, onnx_path: Path, recipe: Recipe | None, samples: int | None,
                  labels: Any = None, task=None, what: str = "data"):
    """(x, y, source) for ``onnx_path``: ``data`` as ``--data`` reads it (the command's own loader), or
    an array of model inputs (checked against the model's input). ``labels``: a labels file (for a
    ``--data`` string) or an array of class ids."""
    import numpy as np

    from optim.arguments import input_spec_from_onnx as _input_spec_from_onnx, load_data as _load_data

    if isinstance(data, np.ndarray):
        from optim.data import validate_inputs

        source = f"{what} (a NumPy array)"
        x = validate_inputs(data[:samples] if samples else data, _input_spec_from_onnx(onnx_path), source)
        y = None if labels is None else _labels_of(labels, len(x), source)
        return x, y, source
    if not isinstance(data, (str, os.PathLike)):
        raise InputError(f"{what} must be a --data string (spec .yaml, .npz, image folder, scenes:N, ...), a path "
                         f"or a NumPy array, got {type(data).__name__}")
    label_file = labels if isinstance(labels, (str, os.PathLike)) else None
    x, y, ds = _load_data(os.fspath(data), onnx_path, recipe, samples,
                          Path(label_file) if label_file is not None else None, task=task)
    if labels is not None and label_file is None:
        y = _labels_of(labels, len(x), ds.source)
    return x, y, ds.source


# -- gates ------------------------------------------------------------------------------------------
def recipe_gates(r: Recipe | None, candidate: Path) -> dict | None:
    """The recipe's gates for the candidate's entry (named in its file name, model.TAG.onnx; else the
    recipe's 'default'), as gate values; None without a recipe."""
    if r is None:
        return None
    tags = sorted((r.settings_for(c).tag for c in r.precisions), key=len, reverse=True)
    tag = next((t for t in tags if f".{t}." in f".{Path(candidate).name}"), "default")
    return r.gates_for(tag).model_dump()


def task_gates(task, base: Mapping | None = None, *, flags: bool = False, **given: float | None):
    """The task's gates model from ``base`` (default: the task's default gates) and the gate values
    given (None: not given); a name the task has no gate for is an InputError naming the task's gates
    (as ``--flag`` names with ``flags``, else as keyword names)."""
    values = {k: v for k, v in given.items() if v is not None}
    known = list(task.gates_model.model_fields)
    name = (lambda k: "--" + k.replace("_", "-")) if flags else (lambda k: k)
    foreign = [k for k in values if k not in known]
    if foreign:
        raise InputError(f"{', '.join(map(name, foreign))} {'is not a gate' if len(foreign) == 1 else 'are not gates'}"
                         f" of task {task.name}; its gates: {', '.join(map(name, known))}")
    return _settings(task.gates_model, None, "gates", **{**(task.default_gates if base is None else base), **values})


# -- run --------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    """What ``optim run`` left: the run folder, its report files and the report's rows (``report.json``)."""

    recipe: str
    task: str
    folder: Path
    #: the report files by kind: md, html, json, png, sensitivity.png (those written)
    reports: dict[str, Path]
    #: one per entry and CPU backend, as in report.json (``optim.stages.report.stage.Row``); ``accuracy`` holds
    #: the task's column values by key (``columns``), e.g. ``top1``, ``top1_drop`` for classification
    rows: list[Row]
    #: the task's accuracy columns: (key, header)
    columns: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: a failed gate (GateError) or engine build (BuildError) that ``optim run`` would exit non-zero with;
    #: None when every gate passed
    error: OptimError | None = None

    @property
    def passed(self) -> bool:
        return self.error is None

    def row(self, tag: str, backend: str | None = None) -> Row:
        """The row of entry ``tag`` (on ``backend``; default: the entry's first row)."""
        for r in self.rows:
            if r.tag == tag and (r.backend == backend if backend else r.primary):
                return r
        raise KeyError(f"no row {tag}{'@' + backend if backend else ''}; rows: "
                       f"{', '.join(sorted({r.tag for r in self.rows}))}")


def read_run(folder: PathLike, reports: Mapping[str, Path] | None = None) -> RunResult:
    """A run folder's ``report.json`` as a RunResult (rows typed as ``optim.stages.report.stage.Row``)."""
    from optim.stages.report.stage import Row

    folder = Path(folder)
    path = folder / "report.json"
    try:
        rep = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path} not found: run optim report {folder} (or optim run) first") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} cannot be read ({exc}); run optim report {folder} again") from None
    known = {f.name for f in fields(Row)}
    rows = [Row(**{k: v for k, v in d.items() if k in known}) for d in rep.get("rows", [])]
    if reports is None:
        reports = {k: folder / f"report.{k}" for k in ("md", "html", "png", "sensitivity.png", "json")
                   if (folder / f"report.{k}").is_file()}
    return RunResult(recipe=rep.get("recipe") or folder.name, task=rep.get("task") or "classification",
                     folder=folder, reports=dict(reports), rows=rows,
                     columns=[(c["key"], c["header"]) for c in rep.get("columns", [])], notes=rep.get("notes", []))


@_private_tmp
def run(recipe: PathLike, *, out_root: PathLike = "artifacts", force: bool = False, weights: PathLike | None = None,
        precisions: str | Sequence[str] | None = None, eval_samples: int | None = None,
        calib_samples: int | None = None, bench_iterations: int | None = None, strict: bool = False,
        wait: bool = True, raise_on_failure: bool = False) -> RunResult:
    """Every stage of a recipe, as ``optim run RECIPE`` (same stages, cache and run folder
    ``OUT_ROOT/<recipe name>/``). ``precisions``: tags or precisions (``"fp32,int8"`` or a list);
    fp32 is always kept. ``strict``: a check flagged NOT MEANINGFUL fails like a gate. ``wait=False``:
    RunFolderBusy at once if another optim process holds the run folder.

    A failed gate or engine build leaves ``RunResult.error`` set (the report is written); with
    ``raise_on_failure`` it is raised instead, with the result as its ``result`` attribute."""
    from optim.artifacts import check_output_dir
    from optim.recipe import apply_overrides, load_recipe
    from optim.workflow.run import Workflow

    path = _path(recipe, "recipe")
    names = _names(precisions)
    weights_path = _path(weights, "weights")
    r = apply_overrides(load_recipe(path), weights=weights_path.resolve() if weights_path else None,
                        eval_samples=eval_samples, calib_samples=calib_samples,
                        precisions=",".join(names) if precisions is not None else None,
                        bench_iterations=bench_iterations, strict=strict)
    root = _path(out_root, "out_root")
    check_output_dir(root / r.name, "--out-root: run folder")

    class _Run(Workflow):  # the same workflow; the report paths kept when a gate fails after the report
        paths: dict[str, Path] | None = None

        def report(self, *args, **kwargs):
            self.paths = super().report(*args, **kwargs)
            return self.paths

    wf = _Run(r, path, out_root=root, force=force, wait=wait)
    error: OptimError | None = None
    try:
        paths = wf.run()
    except OptimError as exc:
        if wf.paths is None:  # it stopped before the report: nothing to return
            raise
        paths, error = wf.paths, exc
    result = read_run(wf.ex.root, {k.replace("_", "."): p for k, p in paths.items()})
    result.error = error
    if error is not None and raise_on_failure:
        error.result = result  # type: ignore[attr-defined]
        raise error
    return result


# -- export -----------------------------------------------------------------------------------------
@_private_tmp
def export(model: str | Any | None = None, *, output: PathLike = "model.fp32.onnx", input_shape: Sequence[int] | str | None = None,
           weights: PathLike | None = None, recipe: PathLike | Recipe | None = None,
           settings: ExportSettings | None = None, input_name: str = "input", batch_min: int = 1,
           batch_max: int = 256, opset: int = 17, output_names: str | Sequence[str] = ("output",),
           atol: float = 1e-4, rtol: float = 1e-3) -> ExportReport:
    """A PyTorch model to a verified FP32 ONNX with a dynamic batch axis, as ``optim export``.

    ``model``: ``bundled:NAME``, ``torchvision:NAME``, ``package.module:factory`` ... (as MODEL), or a
    ``torch.nn.Module`` itself; ``recipe``: take the model, input and export settings from it."""
    from optim.artifacts import check_output_file, stage_writes
    from optim.settings import BatchRange, ExportSettings, InputSpec
    from optim.stages.export import onnx_from_file, onnx_from_torch
    from optim.sources import LoadedModel, load_model

    out = _path(output, "output")
    check_output_file(out, "output")
    r = _as_recipe(recipe)
    if r is not None:
        model = model if model is not None else r.model.source
        weights = weights if weights is not None else r.model.weights
        spec, s, kwargs = r.input, settings or r.export, r.model.kwargs
    else:
        if model is None or input_shape is None:
            raise InputError("give model and input_shape (or a recipe)")
        shape = _ints(input_shape, "input_shape")
        spec = _settings(InputSpec, None, "input", name=input_name, shape=shape,
                         batch=_settings(BatchRange, None, "batch", min=batch_min, opt=batch_min, max=batch_max))
        vb = tuple(sorted({batch_min, min(batch_max, max(batch_min, 4))}))
        s = _settings(ExportSettings, settings, "settings", opset=opset, output_names=_names(output_names),
                      atol=atol, rtol=rtol, verify_batches=vb)
        kwargs = {}
    if model is None:
        raise InputError("give model (or a recipe that names one)")
    with stage_writes("export"):
        if isinstance(model, str) and model.startswith("onnx:"):  # the user's own ONNX file: checked and copied
            return onnx_from_file(Path(model.split(":", 1)[1]), spec, s, out)
        if isinstance(model, str):
            loaded = load_model(model, _path(weights, "weights"), **kwargs)
        elif hasattr(model, "state_dict") and callable(getattr(model, "eval", None)):  # a torch.nn.Module
            loaded = LoadedModel(model.eval(), f"python:{type(model).__name__}", "given")
        else:
            raise InputError(f"model must be a source string (bundled:NAME, torchvision:NAME, package.module:"
                             f"factory) or a torch.nn.Module, got {type(model).__name__}")
        return onnx_from_torch(loaded, spec, s, out)


def _ints(v: Sequence[int] | str, what: str) -> tuple[int, ...]:
    if isinstance(v, str):
        from optim.arguments import ints as parse

        return parse(v, what)
    vals = tuple(int(i) for i in v)
    if not vals or any(i < 1 for i in vals):
        raise InputError(f"{what} must be positive integers, got {list(v)}")
    return vals


# -- quantize ---------------------------------------------------------------------------------------
@_private_tmp
def quantize(onnx: PathLike, precision: str | None = None, *, target: str = "tensorrt",
             calib: DataLike | None = None, calib_samples: int = 256, output: PathLike | None = None,
             settings: QuantizeSettings | None = None, recipe: PathLike | Recipe | None = None,
             task: str | None = None, method: str | None = None, high_precision: str | None = None,
             exclude_nodes: str | Sequence[str] | None = None, exclude_op_types: str | Sequence[str] | None = None,
             keep_head: bool | None = None, ort_int8: str | None = None) -> QuantizeReport:
    """Quantize (INT8/FP8, explicit Q/DQ) or convert (FP16/BF16) an FP32 ONNX, as ``optim quantize``.

    ``settings`` (a ``QuantizeSettings``) or ``precision``/``target`` and the options; the recipe's
    ``quantize`` options are the defaults. ``calib``: INT8/FP8 calibration data (a ``--calib`` string
    or an array of model inputs; default: the recipe's). Output: beside the input, ``NAME.TAG.onnx``,
    unless ``output``. The report's ``path`` is the file written."""
    from optim.artifacts import check_output_file, stage_writes
    from optim.console import info, warn
    from optim.onnx_tools import load_onnx
    from optim.stages.quantize import scheme
    from optim.settings import QuantizeSettings
    from optim.stages.quantize.stage import quantize_file

    src = _existing(onnx, "ONNX model")
    r = _as_recipe(recipe)
    if settings is None:
        if precision is None:
            raise InputError("give precision (int8, fp8, fp16 or bf16) or settings")
        opts = r.quantize.model_dump() if r is not None else {}  # the recipe's options, arguments win
        given = {"method": method, "high_precision": high_precision, "keep_head": keep_head, "ort_int8": ort_int8,
                 "exclude_nodes": _names(exclude_nodes) or None, "exclude_op_types": _names(exclude_op_types) or None}
        opts.update({k: v for k, v in given.items() if v is not None})
        settings = _settings(QuantizeSettings, None, "settings", **opts, precision=precision, target=target)
    qs = _settings(QuantizeSettings, settings, "settings")
    if precision is not None and precision != qs.precision:
        raise InputError(f"precision '{precision}' contradicts settings.precision '{qs.precision}': give one")
    t = _task(task, r)
    qs = scheme.resolve(qs)
    if qs.int8_scheme is not None:
        info(f"INT8 for ONNX Runtime: {qs.int8_scheme.label()}: {qs.int8_scheme.reason}")
    if qs.precision in ("int8", "fp8"):
        qs, head = t.keep_head(qs, load_onnx(src, check=False))
        if head.note:
            warn(f"task {t.name}: keep_head: {head.note}")
    out = _path(output, "output") or src.with_name(
        f"{src.name.removesuffix('.onnx').removesuffix('.fp32')}.{qs.tag}.onnx")
    check_output_file(out, "output")
    x = None
    if qs.precision in ("int8", "fp8"):
        if calib is None and r is not None:
            from optim.data import prepare

            x, _, _ = prepare(r.calibration.data, r.preprocess, r.input, calib_samples, t.letterbox_images)
        elif calib is None:
            raise InputError(f"{qs.precision} needs calibration data: pass calib (or a recipe)")
        else:
            x, _, _ = _model_inputs(calib, src, r, calib_samples, task=t, what="calib")
    with stage_writes("quantize"):
        rep = quantize_file(src, qs, out, x)
    rep.path = str(out)
    return rep


def _task(given: str | None, r: Recipe | None):
    from optim.arguments import task as _task

    return _task(given, r)


# -- check ------------------------------------------------------------------------------------------
@_private_tmp
def check(candidate: PathLike, reference: PathLike, data: DataLike, *, labels: PathLike | Any = None,
          samples: int | None = None, batch_size: int = 256, task: str | None = None,
          gates: Mapping[str, float | None] | Any = None, recipe: PathLike | Recipe | None = None,
          backend: str = "auto", strict: bool = False, raise_on_failure: bool = False,
          **gate_values: float | None) -> CheckResult:
    """Compare a candidate (ONNX or engine) with the FP32 reference on ``data``, as ``optim check``:
    output deltas, task accuracy (with labels), the task's gates.

    Gates: the task's defaults (or the recipe's for the candidate's entry), replaced by ``gates`` (a
    mapping or the task's gates model) and by keyword values, e.g. ``max_top1_drop=1.0``,
    ``min_cosine=0.99`` (classification), ``max_map_drop=1.0``, ``min_agreement=75`` (detection).
    ``labels``: a labels file, or an array of class ids. With ``raise_on_failure``, a failed gate (and
    with ``strict``, a NOT MEANINGFUL check) raises GateError; else read ``result.passed``."""
    from optim.artifacts import Data
    from optim.backends import backend_for
    from optim.arguments import fused_op as _fused_op, load_frames as _load_frames
    from optim.stages.check import check_files, raise_on_failures, settings_for

    cand = _path(candidate, "candidate")  # a missing file: the loaders' own errors, as in optim check
    ref = _path(reference, "reference")
    backend_for(cand, backend)  # an unknown name, or one that does not run this file: an InputError now
    r = _as_recipe(recipe)
    t = _task(task, r)
    base = gates.model_dump() if hasattr(gates, "model_dump") else (dict(gates) if gates is not None else None)
    g = task_gates(t, base if base is not None else recipe_gates(r, cand), **gate_values)
    fused = None if cand.suffix in (".plan", ".engine") else _fused_op(cand)
    if fused is None:
        x, y, source = _model_inputs(data, ref, r, samples, labels, task=t)
        frames = None
    else:  # the candidate takes raw frames; the reference gets them preprocessed on the host
        if not isinstance(data, (str, os.PathLike)):
            raise InputError(f"{cand} takes raw frames (fused preprocessing): give data as a --data string")
        frames, x, y, ds = _load_frames(os.fspath(data), fused, samples,
                                        Path(labels) if isinstance(labels, (str, os.PathLike)) else None)
        source = ds.source
    res = check_files(cand, ref, Data.of("evaluation", x, y, frames, source),
                      settings_for(t.name, g, batch_size=batch_size, backend=backend))
    if raise_on_failure:
        raise_on_failures([res], strict=strict or bool(r is not None and r.check.strict))
    return res


# -- bench ------------------------------------------------------------------------------------------
@_private_tmp
def bench(models: PathLike | Sequence[PathLike], *, settings: BenchSettings | None = None,
          batch_sizes: Sequence[int] | str = (1, 64), warmup: int = 5, iterations: int = 30,
          threads: int | None = None, backend: str = "auto", cuda_graph: bool = False) -> BenchResult | list[BenchResult]:
    """Latency (median/p90/p99) and throughput per batch size, as ``optim bench``: one model (a
    ``BenchResult``) or several measured one after another (a list, comparable side by side).
    ``backend``: auto (ONNX on ONNX Runtime CPU, ``.plan`` on TensorRT), openvino, openvino-bf16, ..."""
    from optim.settings import BenchSettings
    from optim.stages.bench import bench_model

    one = isinstance(models, (str, os.PathLike))
    paths = [_path(m, "model") for m in ([models] if one else models)]
    if not paths:
        raise InputError("give at least one model to bench")
    s = _settings(BenchSettings, settings, "settings", batch_sizes=_ints(batch_sizes, "batch_sizes"),
                  warmup=warmup, iterations=iterations, threads=threads, cuda_graph=cuda_graph)
    results = [bench_model(p, s, backend=backend) for p in paths]
    return results[0] if one else results


# -- build ------------------------------------------------------------------------------------------
@_private_tmp
def build(onnx: PathLike, *, target: str = "h100", output: PathLike | None = None, precision: str | None = None,
          batch: Sequence[int] | str = (1, 1, 256), settings: BuildSettings | None = None,
          recipe: PathLike | Recipe | None = None, tf32: bool = False, opt_level: int = 3,
          workspace_mib: int | None = None, hardware_compat: str = "none", version_compatible: bool = False,
          plugins: Sequence[PathLike] = (), timing_cache: PathLike | None = None) -> BuildReport:
    """A TensorRT engine (``.plan``) and its manifest, as ``optim build``: ``target="h100"`` (TensorRT, on
    an H100: BackendUnavailable elsewhere) or ``"rtx"`` (TensorRT-RTX for sm86/89/120, built here
    without a GPU). ``batch``: the profile's min,opt,max. Output: beside the ONNX, ``NAME.TARGET.plan``."""
    from optim.artifacts import check_output_file, stage_writes
    from optim.settings import BatchRange, BuildSettings
    from optim.stages.build import engine_from_onnx

    src = _existing(onnx, "ONNX model")
    r = _as_recipe(recipe)
    if r is not None:
        s, brange = settings or r.build, r.input.batch
    else:
        s = _settings(BuildSettings, settings, "settings", tf32=tf32, optimization_level=opt_level,
                      workspace_mib=workspace_mib, hardware_compatibility=hardware_compat,
                      version_compatible=version_compatible, plugins=tuple(Path(p).resolve() for p in plugins))
        b = _ints(batch, "batch")
        if len(b) != 3:
            raise InputError(f"batch takes min,opt,max, got {list(b)}")
        brange = _settings(BatchRange, None, "batch", min=b[0], opt=b[1], max=b[2])
    if precision is not None and precision not in ("fp16", "bf16"):
        raise InputError(f"precision takes fp16 or bf16 (for an FP32 ONNX), got '{precision}'")
    stem = src.name.removesuffix(".onnx") + (f".{precision}" if precision else "")
    out = _path(output, "output") or src.with_name(f"{stem}.{target}.plan")
    cache = _path(timing_cache, "timing_cache") or out.with_name("timing.cache")
    check_output_file(out, "output")
    check_output_file(cache, "timing cache")
    with stage_writes("build"):
        return engine_from_onnx(src, out, s, target, batch=brange, precision=precision, timing_cache=cache,
                                sample_shape=r.input.shape if r is not None else None)
