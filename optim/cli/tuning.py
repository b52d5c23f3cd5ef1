"""CLI pieces for accuracy-aware quantization: ``optim sensitivity`` and ``quantize --max-drop``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from optim.console import info
from optim.cli.common import RecipeOpt, _load_data as load_data

# the options of ``optim quantize`` for the accuracy budget
MaxDropOpt = Annotated[Optional[float], typer.Option(help="Accuracy budget in points vs FP32: keep the fewest most sensitive nodes in high precision until met.")]
TuneDataOpt = Annotated[Optional[str], typer.Option(help="Tuning data for --max-drop (default: the calibration data).")]
TuneSamplesOpt = Annotated[int, typer.Option(help="Tuning samples for --max-drop.")]
MetricOpt = Annotated[str, typer.Option(help="Budget metric: auto, top1 or map (need labels: classification, detection) or agreement.")]
MaxExcludedOpt = Annotated[Optional[int], typer.Option(help="At most this many nodes in high precision.")]


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
    """INT8/FP8 (the caller checks): quantize, then tune to the budget ``s.max_drop``
    (``optim.api.quantize_to_budget``), with the lines ``optim quantize --max-drop`` prints."""
    from optim.api import quantize_to_budget

    report_budget(quantize_to_budget(fp32, qs, out, calib, data, s))


def report_budget(tuned) -> None:
    """The last lines of ``optim quantize --max-drop``: what ``tuned`` (a ``TunedQuantizeReport``) kept
    in high precision, and the drop with and without the budget."""
    b = tuned.tuning.budget
    for e in b.excluded:
        info(f"  kept in high precision: {e['node']} ({e['op_type']}): {e['why']}")
    info(f"wrote {tuned.path}: drop {b.after.drop:.3f} points ({b.metric}) vs {b.before.drop:.3f} without the budget")


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
