"""``optim.quantize``: INT8/FP8 Q/DQ or FP16/BF16, and with ``max_drop`` an accuracy budget (quantize, then tune)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from optim.api.common import (DataLike, PathLike, as_path, as_recipe, flag, in_private_tmp, model_inputs, names,
                              or_recipe, output_label, recipe_inputs, settings_of, task_of)
from optim.errors import InputError

if TYPE_CHECKING:
    from optim.recipe import Recipe
    from optim.settings import QuantizeSettings
    from optim.stages.quantize.stage import QuantizeReport
    from optim.stages.tune.stage import TuneResult


# -- quantize ---------------------------------------------------------------------------------------
@dataclass
class TunedQuantizeReport:
    """What ``quantize(..., max_drop=...)`` did: the quantization, then the tuning that took the costliest
    nodes back to high precision until the budget held."""

    #: the file written: the tuned model
    path: str
    #: the quantize stage's report on the model before tuning (written to a temporary folder, since removed)
    report: QuantizeReport
    #: the tune stage's result: ``tuning.budget`` has the nodes kept in high precision (``excluded``),
    #: the metric and the drop against FP32 without and with them (``before``, ``after``)
    tuning: TuneResult

    def as_dict(self) -> dict:
        return {"path": self.path, "report": self.report.as_dict(), "tuning": self.tuning.as_dict()}


@in_private_tmp
def quantize(onnx: PathLike, precision: str | None = None, *, target: str = "tensorrt",
             calib: DataLike | None = None, calib_samples: int = 256, output: PathLike | None = None,
             settings: QuantizeSettings | None = None, recipe: PathLike | Recipe | None = None,
             task: str | None = None, method: str | None = None, high_precision: str | None = None,
             exclude_nodes: str | Sequence[str] | None = None, exclude_op_types: str | Sequence[str] | None = None,
             keep_head: bool | None = None, ort_int8: str | None = None, max_drop: float | None = None,
             tune_data: DataLike | None = None, tune_samples: int = 1024, metric: str = "auto",
             max_excluded: int | None = None, flags: bool = False) -> QuantizeReport | TunedQuantizeReport:
    """Quantize (INT8/FP8, explicit Q/DQ) or convert (FP16/BF16) an FP32 ONNX, as ``optim quantize``.

    ``settings`` (a ``QuantizeSettings``) or ``precision``/``target`` and the options; the recipe's
    ``quantize`` options are the defaults. ``calib``: INT8/FP8 calibration data (a ``--calib`` string
    or an array of model inputs; default: the recipe's). Output: beside the input, ``NAME.TAG.onnx``,
    unless ``output``. The report's ``path`` is the file written.

    ``max_drop`` (INT8/FP8), as ``--max-drop``: an accuracy budget in points against FP32. The nodes
    that cost most are taken back to high precision until the model loses at most that much on the
    tuning data (``tune_data``, else the recipe's tuning or calibration data, else ``calib``; its first
    ``tune_samples``), by ``metric`` (auto, top1, map or agreement), keeping at most ``max_excluded``
    nodes; the result is then a ``TunedQuantizeReport``. ``flags``: messages name the arguments as the
    ``optim quantize`` options (``--calib``), for the command itself."""
    from optim.artifacts import check_output_file, stage_writes
    from optim.stages.quantize.stage import quantize_file

    src = as_path(onnx, "onnx")  # a missing or unreadable file: the stages' own errors
    r = as_recipe(recipe)
    qs = _quantize_settings(precision, settings, r, target=target, method=method, high_precision=high_precision,
                            keep_head=keep_head, ort_int8=ort_int8, exclude_nodes=names(exclude_nodes) or None,
                            exclude_op_types=names(exclude_op_types) or None)
    t = task_of(task, r)
    qs = _for_model(qs, t, src, flags)
    if max_drop is not None and qs.precision not in ("int8", "fp8"):
        raise InputError(f"{flag('max_drop', flags)} works on INT8/FP8 models")
    out = as_path(output, "output") or src.with_name(
        f"{src.name.removesuffix('.onnx').removesuffix('.fp32')}.{qs.tag}.onnx")
    check_output_file(out, output_label("output", output, "output (beside the input)", flags))
    # labels are read as a task takes them only when the user or the recipe names the task; otherwise by
    # their kind (boxes as detection): calibration data need not fit the default task, it reads no labels
    data_task = t if task is not None or r is not None else None
    x = _calibration(qs, calib, calib_samples, src, r, data_task, flags)
    if max_drop is not None:
        s = _budget_settings(max_drop, metric, tune_samples, max_excluded, t.name, flags)
        data = _tuning_data(tune_data, calib, tune_samples, src, r, data_task, flags)
        with stage_writes("quantize"):
            return quantize_to_budget(src, qs, out, x, data, s)
    with stage_writes("quantize"):
        rep = quantize_file(src, qs, out, x)
    rep.path = str(out)
    return rep


def _quantize_settings(precision: str | None, settings: QuantizeSettings | None, r: Recipe | None,
                       **options: Any) -> QuantizeSettings:
    """``settings``, or those of ``precision`` and the options given (None: not given) over the
    recipe's ``quantize`` options."""
    from optim.settings import QuantizeSettings

    if settings is None:
        if precision is None:
            raise InputError("give precision (int8, fp8, fp16 or bf16) or settings")
        opts = r.quantize.model_dump() if r is not None else {}  # the recipe's options, arguments win
        opts.update({k: v for k, v in options.items() if v is not None})
        settings = settings_of(QuantizeSettings, None, "settings", **opts, precision=precision)
    qs = settings_of(QuantizeSettings, settings, "settings")
    if precision is not None and precision != qs.precision:
        raise InputError(f"precision '{precision}' contradicts settings.precision '{qs.precision}': give one")
    return qs


def _for_model(qs: QuantizeSettings, t, src: Path, flags: bool) -> QuantizeSettings:
    """The settings made whole for this machine (the onnxruntime INT8 format) and for the model (the
    task's output head kept in high precision), each said in a line."""
    from optim.console import info, warn
    from optim.onnx_tools import load_onnx
    from optim.stages.quantize import scheme

    qs = scheme.resolve(qs)
    if qs.int8_scheme is not None:
        info(f"INT8 for ONNX Runtime: {qs.int8_scheme.label()}: {qs.int8_scheme.reason}")
    if qs.precision in ("int8", "fp8"):
        qs, head = t.keep_head(qs, load_onnx(src, check=False))
        if head.note:
            warn(f"task {t.name}: keep_head: {head.note}")
        elif head.patterns:
            off = "--no-keep-head" if flags else "keep_head=False"
            info(f"task {t.name}: keeping its head's decode in high precision ({', '.join(head.patterns)}; "
                 f"{off} to quantize it)")
    return qs


def _calibration(qs: QuantizeSettings, calib: DataLike | None, samples: int, src: Path, r: Recipe | None,
                 t, flags: bool):
    """The INT8/FP8 calibration inputs (None for other precisions): ``calib``, else the recipe's."""
    from optim.console import info

    if qs.precision not in ("int8", "fp8"):
        return None
    if calib is not None:
        x, _, source = model_inputs(calib, src, r, samples, task=t, what="calib")
    elif r is not None:
        x, _, source = recipe_inputs(r.calibration.data, r, samples, t)
    else:
        raise InputError(f"{qs.precision} needs calibration data: pass {flag('calib', flags)} "
                         f"(or {or_recipe(flags)})")
    info(f"calibrating with {len(x)} samples from {source}")
    return x


def _budget_settings(max_drop: float, metric: str, samples: int, max_excluded: int | None, task: str,
                     flags: bool):
    """The tune stage's settings for the budget ``max_drop`` (points against FP32)."""
    from optim.stages.tune.stage import Settings

    if max_drop < 0:
        raise InputError(f"{flag('max_drop', flags)} must be >= 0 points")
    return settings_of(Settings, None, "settings", task=task, metric=metric, samples=samples,
                     max_excluded=max_excluded, sensitivity_samples=min(256, samples), max_drop=max_drop)


def _tuning_data(tune_data: DataLike | None, calib: DataLike | None, samples: int, src: Path,
                 r: Recipe | None, t, flags: bool):
    """What the budget is held on, as ``Data``: ``tune_data``, else the recipe's tuning (or
    calibration) data, else ``calib``."""
    from optim.artifacts import Data

    if tune_data is not None:
        x, y, source = model_inputs(tune_data, src, r, samples, task=t, what="tune_data")
    elif r is not None:
        x, y, source = recipe_inputs((r.tuning and r.tuning.data) or r.calibration.data, r, samples, t)
    elif calib is not None:
        x, y, source = model_inputs(calib, src, r, samples, task=t, what="calib")
    else:
        raise InputError(f"{flag('max_drop', flags)} needs tuning data: pass {flag('tune_data', flags)} "
                         f"(or {flag('calib', flags)} / {or_recipe(flags)})")
    return Data.of("tuning", x, y, description=source)


def quantize_to_budget(fp32: PathLike, qs: QuantizeSettings, out: PathLike, calib, data, s) -> TunedQuantizeReport:
    """INT8/FP8 ``qs`` (the caller checks): the quantize stage on ``calib`` into a temporary folder, then
    the tune stage (``s``, a tune ``Settings`` with its budget ``max_drop``) on ``data`` (``Data``) into
    ``out``: the same stage functions ``optim run`` uses."""
    import tempfile

    from optim.artifacts import Artifact, Data
    from optim.console import info
    from optim.executor import StageContext
    from optim.stages.quantize import stage as quantize_stage
    from optim.stages.tune import stage as tune_stage

    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="optim-budget-") as d:
        src = Artifact.of_file(Path(fp32), "fp32", "onnx")
        # named as the user's output: the quantize stage's lines (and any error) name the file being made
        ctx = StageContext(Path(d), Path(d) / out.name, qs.tag)
        rep = quantize_stage.run([src, Data.of("calibration", calib)], qs, ctx).result
        info(f"tuning {out.name} ({rep.tool}, {rep.method}) on {len(data.x)} samples")
        raw = Artifact.of_file(ctx.out, "raw", "onnx")
        res = tune_stage.run([raw, src, data], s, StageContext(Path(d), out, qs.tag)).result
    return TunedQuantizeReport(str(out), rep, res)
