"""CLI pieces for accuracy-aware quantization: ``optim sensitivity`` and ``quantize --max-drop``."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer

from optim.console import info
from optim.cli.common import RecipeOpt, _load_data as load_data


def _tuning_settings(metric: str, samples: int, max_excluded: int | None, sensitivity_samples: int,
                     max_drop: float | None = None, task: str = "classification"):
    from pydantic import ValidationError

    from optim.recipe import RecipeError, validation_message
    from optim.stages.tune import stage as tune

    try:
        return tune.Settings(task=task, metric=metric, samples=samples, max_excluded=max_excluded,
                             sensitivity_samples=sensitivity_samples, max_drop=max_drop)
    except ValidationError as exc:
        raise RecipeError(validation_message("bad option", exc)) from None


def quantize_with_budget(fp32: Path, qs, out: Path, calib, data, s) -> None:
    """INT8/FP8 (the caller checks): the quantize stage into a temporary folder, then the tune
    stage (budget ``s.max_drop``) into ``out``:
    the same stage functions ``optim run`` uses."""
    from optim.artifacts import Artifact, Data
    from optim.executor import StageContext
    from optim.stages.quantize import stage as quantize
    from optim.stages.tune import stage as tune

    with tempfile.TemporaryDirectory(prefix="optim-budget-") as d:
        src = Artifact.of_file(fp32, "fp32", "onnx")
        # named as the user's output: the quantize stage's lines (and any error) name the file being made
        ctx = StageContext(Path(d), Path(d) / Path(out).name, qs.tag)
        rep = quantize.run([src, Data.of("calibration", calib)], qs, ctx).result
        info(f"tuning {Path(out).name} ({rep.tool}, {rep.method}) on {len(data.x)} samples")
        raw = Artifact.of_file(ctx.out, "raw", "onnx")
        res = tune.run([raw, src, data], s, StageContext(Path(d), Path(out), qs.tag)).result
    b = res.budget
    for e in b.excluded:
        info(f"  kept in high precision: {e['node']} ({e['op_type']}): {e['why']}")
    info(f"wrote {out}: drop {b.after.drop:.3f} points ({b.metric}) vs {b.before.drop:.3f} without the budget")


def register(app: typer.Typer) -> None:
    @app.command()
    def sensitivity(
        quantized: Annotated[Path, typer.Argument(help="A Q/DQ ONNX model (INT8/FP8).")],
        reference: Annotated[Path, typer.Option(help="The FP32 reference ONNX.")],
        data: Annotated[str, typer.Option(help="Tuning data: .npz/.npy, IDX, image folder, spec .yaml, photos:N.")],
        labels: Annotated[Optional[Path], typer.Option(help="Labels .npy/IDX file when the data carries none.")] = None,
        samples: Annotated[int, typer.Option(help="Samples per evaluation.")] = 256,
        metric: Annotated[str, typer.Option(help="auto, top1 or map (need labels: classification, detection) or agreement (with FP32).")] = "auto",
        top: Annotated[int, typer.Option(help="Rows to print.")] = 20,
        json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the ranking as JSON here.")] = None,
        recipe: RecipeOpt = None,
    ) -> None:
        """Rank the quantized nodes by how much each one alone costs against FP32."""
        from optim.artifacts import check_output_file, write_json
        from optim.onnx_tools import load_onnx
        from optim.recipe import load_recipe
        from optim.stages.tune.sensitivity import Evaluator, node_sensitivity
        from optim.stages.tune.stage import reference_outputs

        if json_out:
            check_output_file(json_out, "--json")
        r = load_recipe(recipe) if recipe else None
        s = _tuning_settings(metric, samples, None, samples, task=r.task if r is not None else "classification")
        from optim.tasks import get_task

        x, y, ds = load_data(data, reference, r, samples, labels, task=get_task(s.task))
        from optim.stages.tune.edit import unpack_weights

        model, _ = unpack_weights(load_onnx(quantized), load_onnx(reference))  # ORT's integer weights: FP32's again
        rep = node_sensitivity(model, Evaluator(x, reference_outputs(reference, x), y, s.metric))
        print(f"{'rank':>4}  {'output error':>12}  {'max abs':>9}  {'Δ ' + rep.metric:>10}  node (op)")
        for i, row in enumerate(rep.rows[:top]):
            print(f"{i + 1:>4}  {row.output_error:>12.4g}  {row.max_abs_error:>9.4g}  "
                  f"{row.metric_drop:>+10.2f}  {row.node} ({row.op_type})")
        print(f"all {len(rep.rows)} nodes quantized: drop {rep.full.drop:.3f} points ({rep.metric}), "
              f"cosine {rep.full.cosine:.5f}; {rep.evaluations} evaluations of {len(x)} samples "
              f"from {ds.source} in {rep.seconds:.1f} s")
        if json_out:
            write_json(json_out, json.loads(json.dumps(rep.as_dict())))


def budget_options():
    """The extra options of ``optim quantize`` for the accuracy budget."""
    return {
        "max_drop": Annotated[Optional[float], typer.Option(help="Accuracy budget in points vs FP32: keep the fewest most sensitive nodes in high precision until met.")],
        "tune_data": Annotated[Optional[str], typer.Option(help="Tuning data for --max-drop (default: the calibration data).")],
        "tune_samples": Annotated[int, typer.Option(help="Tuning samples for --max-drop.")],
        "metric": Annotated[str, typer.Option(help="Budget metric: auto, top1 or map (need labels: classification, detection) or agreement.")],
        "max_excluded": Annotated[Optional[int], typer.Option(help="At most this many nodes in high precision.")],
    }
