"""``optim export`` and ``optim quantize`` (with ``--max-drop``: quantize, then tune)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from optim.cli.common import RecipeOpt, _recipe
from optim.cli.tuning import MaxDropOpt, MaxExcludedOpt, MetricOpt, TuneDataOpt, TuneSamplesOpt, report_budget
from optim.console import info


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
        from optim import api

        r = _recipe(recipe)
        rep = api.export(model, output=output, input_shape=input_shape, weights=weights, recipe=r,
                         input_name=input_name, batch_min=batch_min, batch_max=batch_max, opset=opset,
                         output_names=output_name, atol=atol, rtol=rtol, flags=True)
        if rep.verified_against != "pytorch":  # the recipe's own ONNX file, checked and copied
            info(f"wrote {output}: opset {rep.opset}, {rep.nodes} nodes (from the ONNX file "
                 f"{(model or r.model.source)[5:]}; no PyTorch to verify against)")
            return
        batch = r.input.batch if r is not None else None
        info(f"wrote {output}: opset {rep.opset}, {rep.nodes} nodes, dynamic batch "
             f"{batch.min if batch else batch_min}..{batch.max if batch else batch_max}")
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
        max_drop: MaxDropOpt = None,
        tune_data: TuneDataOpt = None,
        tune_samples: TuneSamplesOpt = 1024,
        metric: MetricOpt = "auto",
        max_excluded: MaxExcludedOpt = None,
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
        from optim import api

        rep = api.quantize(onnx_path, precision, target=target, calib=calib, calib_samples=calib_samples,
                           output=output, recipe=recipe, task=task, method=method, high_precision=high_precision,
                           exclude_nodes=exclude_nodes, exclude_op_types=exclude_op_types, keep_head=keep_head,
                           ort_int8=ort_int8, max_drop=max_drop, tune_data=tune_data, tune_samples=tune_samples,
                           metric=metric, max_excluded=max_excluded, flags=True)
        if max_drop is not None:
            report_budget(rep)
            return
        cov = rep.coverage
        cov_txt = f"; {cov['quantized']}/{cov['eligible']} Conv/Gemm/MatMul quantized" if cov else ""
        info(f"wrote {rep.path} ({rep.tool}{', ' + rep.method if rep.method else ''}{cov_txt}, {rep.seconds:.1f} s)")
