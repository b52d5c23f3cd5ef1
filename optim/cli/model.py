"""``optim export`` and ``optim quantize`` (with ``--max-drop``: quantize, then tune)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from optim.cli.common import RecipeOpt, _ints, _load_data, _names, _recipe, _task
from optim.cli.tuning import budget_options

_BUDGET = budget_options()
from optim.console import info, warn
from optim.errors import InputError


def register(app: typer.Typer) -> None:
    @app.command()
    def export(
        model: Annotated[Optional[str], typer.Argument(metavar="MODEL", help="bundled:NAME, pretrained:NAME, torchvision:NAME or package.module:factory; required unless --recipe names one.")] = None,
        output: Annotated[Path, typer.Option("-o", "--output", help="ONNX file to write.")] = Path("model.fp32.onnx"),
        weights: Annotated[Optional[Path], typer.Option(help="Trained weights: .safetensors or a state-dict checkpoint (never unpickled).")] = None,
        input_shape: Annotated[Optional[str], typer.Option(help="Per-sample input shape, e.g. 3,224,224.")] = None,
        input_name: Annotated[str, typer.Option(help="Name of the ONNX input.")] = "input",
        batch_min: Annotated[int, typer.Option(help="Smallest batch size.")] = 1,
        batch_max: Annotated[int, typer.Option(help="Largest batch size.")] = 256,
        opset: Annotated[int, typer.Option(help="ONNX opset (>= 17).")] = 17,
        output_name: Annotated[str, typer.Option(help="Name of the ONNX output; one per output, comma-separated, for models with several.")] = "output",
        atol: Annotated[float, typer.Option(help="Absolute tolerance vs PyTorch.")] = 1e-4,
        rtol: Annotated[float, typer.Option(help="Relative tolerance vs PyTorch.")] = 1e-3,
        recipe: RecipeOpt = None,
    ) -> None:
        """Export a PyTorch model to a verified FP32 ONNX with a dynamic batch axis."""
        from optim.artifacts import check_output_file, stage_writes
        from optim.stages.export import onnx_from_torch
        from optim.recipe import BatchRange, ExportSettings, InputSpec
        from optim.sources import load_model, trained_weights_reason

        check_output_file(output, "-o/--output")
        r = _recipe(recipe)
        if r is not None:
            model = model or r.model.source
            weights = weights or r.model.weights
            spec, settings, kwargs = r.input, r.export, r.model.kwargs
        else:
            if model is None or input_shape is None:
                raise InputError("give MODEL and --input-shape (or --recipe)")
            spec = InputSpec(name=input_name, shape=_ints(input_shape, "--input-shape"),
                             batch=BatchRange(min=batch_min, opt=batch_min, max=batch_max))
            vb = tuple(sorted({batch_min, min(batch_max, max(batch_min, 4))}))
            settings = ExportSettings(opset=opset, output_names=(output_name,), atol=atol, rtol=rtol,
                                      verify_batches=vb)
            kwargs = {}
        if model is None:
            raise InputError("give MODEL (or a --recipe that names one)")
        if model.startswith("onnx:") and r is not None:  # the recipe's own ONNX file: checked and copied
            from optim.stages.export import onnx_from_file

            with stage_writes("export"):
                rep = onnx_from_file(Path(model.split(":", 1)[1]), spec, settings, output)
            info(f"wrote {output}: opset {rep.opset}, {rep.nodes} nodes (from the ONNX file {model[5:]}; "
                 "no PyTorch to verify against)")
            return
        loaded = load_model(model, weights, **kwargs)
        reason = trained_weights_reason(model, weights)
        if reason:  # what a run's report says too (its "not meaningful" column)
            info(f"[yellow]note[/]: {reason}")
        elif not loaded.trained:  # a factory may load its own weights: optim cannot tell
            info("[yellow]note[/]: no --weights given; the model has whatever weights its factory gives it")
        with stage_writes("export"):
            rep = onnx_from_torch(loaded, spec, settings, output)
        info(f"wrote {output}: opset {rep.opset}, {rep.nodes} nodes, dynamic batch "
             f"{spec.batch.min}..{spec.batch.max}")
        info(f"verified vs PyTorch at batches {rep.verify_batches}: max abs error {rep.max_abs_error:.3g}, "
             f"max rel error {rep.max_rel_error:.3g} (tolerance atol {rep.atol:g}, rtol {rep.rtol:g})")


    @app.command()
    def quantize(
        onnx_path: Annotated[Path, typer.Argument(metavar="ONNX", help="FP32 ONNX model.")],
        precision: Annotated[str, typer.Option(help="int8, fp8, fp16 or bf16.")],
        target: Annotated[str, typer.Option(help="tensorrt (modelopt Q/DQ) or onnxruntime (ORT CPU integer kernels; int8 only).")] = "tensorrt",
        calib: Annotated[Optional[str], typer.Option(help="Calibration data: .npz/.npy, IDX file, image folder, spec .yaml.")] = None,
        calib_samples: Annotated[int, typer.Option(help="Use the first N calibration samples.")] = 256,
        method: Annotated[Optional[str], typer.Option(help="Calibration: max, entropy, percentile (onnxruntime target). Default: the recipe's, else entropy.")] = None,
        exclude_nodes: Annotated[Optional[str], typer.Option(help="Comma-separated node names (regex) to keep unquantized.")] = None,
        exclude_op_types: Annotated[Optional[str], typer.Option(help="Comma-separated op types to keep unquantized.")] = None,
        high_precision: Annotated[Optional[str], typer.Option(help="Precision outside quantized ops: fp32 or fp16. Default: the recipe's, else fp32.")] = None,
        output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Output ONNX (default: beside the input).")] = None,
        recipe: RecipeOpt = None,
        max_drop: _BUDGET["max_drop"] = None,
        tune_data: _BUDGET["tune_data"] = None,
        tune_samples: _BUDGET["tune_samples"] = 1024,
        metric: _BUDGET["metric"] = "auto",
        max_excluded: _BUDGET["max_excluded"] = None,
        task: Annotated[Optional[str], typer.Option(help="classification or detection (default: the recipe's, else "
                                                         "classification); detection keeps its head's decode unquantized.")] = None,
        keep_head: Annotated[Optional[bool], typer.Option("--keep-head/--no-keep-head", help="Keep the task's output "
                                                          "head in high precision (default: the task's choice).")] = None,
        ort_int8: Annotated[Optional[str], typer.Option(help="INT8 format for target onnxruntime: auto (what this CPU's "
                                                        "integer kernels compute exactly), u8s8, u8s8_7bit, u8u8, s8s8. "
                                                        "Default: the recipe's, else auto.")] = None,
    ) -> None:
        """Quantize (INT8/FP8, explicit Q/DQ) or convert (FP16/BF16) an FP32 ONNX model.

        With --max-drop, the nodes that cost most are taken back to high precision until
        the model loses at most that many points against FP32 on the tuning data."""
        from pydantic import ValidationError

        from optim.artifacts import check_output_file, stage_writes
        from optim.stages.quantize import scheme
        from optim.stages.quantize.stage import quantize_file
        from optim.recipe import QuantizeSettings, RecipeError, validation_message

        r = _recipe(recipe)
        opts = r.quantize.model_dump() if r is not None else {}  # the recipe's options, flags win
        given = {"method": method, "high_precision": high_precision, "keep_head": keep_head, "ort_int8": ort_int8,
                 "exclude_nodes": _names(exclude_nodes) or None, "exclude_op_types": _names(exclude_op_types) or None}
        opts.update({k: v for k, v in given.items() if v is not None})
        try:
            qs = QuantizeSettings(**opts, precision=precision, target=target)
        except ValidationError as exc:
            raise RecipeError(validation_message("bad option", exc)) from None
        from optim.onnx_tools import load_onnx

        t = _task(task, r)
        qs = scheme.resolve(qs)
        if qs.int8_scheme is not None:
            info(f"INT8 for ONNX Runtime: {qs.int8_scheme.label()}: {qs.int8_scheme.reason}")
        if qs.precision in ("int8", "fp8"):
            qs, head = t.keep_head(qs, load_onnx(onnx_path, check=False))
            if head.note:
                warn(f"task {t.name}: keep_head: {head.note}")
            elif head.patterns:
                info(f"task {t.name}: keeping its head's decode in high precision ({', '.join(head.patterns)}; "
                     "--no-keep-head to quantize it)")
        if max_drop is not None and qs.precision not in ("int8", "fp8"):
            raise InputError("--max-drop works on INT8/FP8 models")
        out = output or onnx_path.with_name(f"{onnx_path.name.removesuffix('.onnx').removesuffix('.fp32')}.{qs.tag}.onnx")
        check_output_file(out, "-o/--output" if output else "output (beside the input)")
        x = None
        if qs.precision in ("int8", "fp8"):
            if calib is None and r is not None:
                from optim.data import prepare

                x, _, ds = prepare(r.calibration.data, r.preprocess, r.input, calib_samples, t.letterbox_images)
            elif calib is None:
                raise InputError(f"{qs.precision} needs calibration data: pass --calib (or --recipe)")
            else:
                x, _, ds = _load_data(calib, onnx_path, r, calib_samples, task=t)
            info(f"calibrating with {len(x)} samples from {ds.source}")
        if max_drop is not None:
            from optim.cli.tuning import _tuning_settings, quantize_with_budget

            if max_drop < 0:
                raise InputError("--max-drop must be >= 0 points")
            s = _tuning_settings(metric, tune_samples, max_excluded, min(256, tune_samples), max_drop, task=t.name)
            if tune_data is not None:
                tx, ty, tds = _load_data(tune_data, onnx_path, r, tune_samples, task=t)
            elif r is not None:
                from optim.data import prepare

                tx, ty, tds = prepare((r.tuning and r.tuning.data) or r.calibration.data, r.preprocess,
                                      r.input, tune_samples, t.letterbox_images)
            elif calib is not None:
                tx, ty, tds = _load_data(calib, onnx_path, r, tune_samples, task=t)
            else:
                raise InputError("--max-drop needs tuning data: pass --tune-data (or --calib / --recipe)")
            from optim.artifacts import Data

            with stage_writes("quantize"):
                quantize_with_budget(onnx_path, qs, out, x, Data.of("tuning", tx, ty, description=tds.source), s)
            return
        with stage_writes("quantize"):
            rep = quantize_file(onnx_path, qs, out, x)
        cov = rep.coverage
        cov_txt = f"; {cov['quantized']}/{cov['eligible']} Conv/Gemm/MatMul quantized" if cov else ""
        info(f"wrote {out} ({rep.tool}{', ' + rep.method if rep.method else ''}{cov_txt}, {rep.seconds:.1f} s)")


