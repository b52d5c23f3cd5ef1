"""Stage: accuracy-aware quantization of a Q/DQ model.

``run`` (tune): rank the quantized nodes by sensitivity (``optim.stages.tune.sensitivity``)
and, with a budget, take the fewest most sensitive ones back to high precision
(``optim.stages.tune.budget``); writes the tuned model when a budget is set.
Runs on the tuning data, never on the evaluation set that the report scores.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


import numpy as np
from pydantic import Field

from optim.artifacts import Artifact, Data, write_json
from optim.backends import open_runner, run_batched
from optim.console import info
from rich.markup import escape
from optim.executor import StageContext, StageOutput
from optim.onnx_tools import load_onnx, quant_coverage, save_onnx
from optim.runfolder import RunLayout
from optim.stages.tune.budget import BudgetResult, apply_budget
from optim.stages.tune.edit import pack_weights, unpack_weights
from optim.stages.tune.sensitivity import ORT, Evaluator, SensitivityReport, node_sensitivity, worst
from optim.settings import Strict
from optim.tasks import get_task

NAME = "tune"
TOOLS = ("onnxruntime", "onnx")
SUMMARY = "per-node sensitivity; an accuracy budget takes the most sensitive nodes back"


class Settings(Strict):
    """One entry's tuning: sensitivity, and the budget when ``max_drop`` is set."""

    task: str = "classification"
    samples: int | None = Field(default=1024, ge=1)
    sensitivity: bool = True
    sensitivity_samples: int = Field(default=256, ge=1)
    max_drop: float | None = Field(default=None, ge=0)
    metric: str = "auto"
    max_excluded: int | None = Field(default=None, ge=0)
    backends: tuple[str, ...] = Field(
        default=("onnxruntime",), description="CPU backends every variant is scored on (its worst counts): "
                                              "the backends the run reports the entry on")


def reference_outputs(fp32: Path, x: np.ndarray, batch: int = 256) -> dict[str, np.ndarray]:
    with open_runner(Path(fp32)) as r:
        return run_batched(r, x, batch, "reference fp32")


@dataclass
class TuneResult:
    tag: str
    samples: int
    sensitivity: SensitivityReport | None = None
    budget: BudgetResult | None = None
    seconds: float = 0.0
    backends: list[str] = field(default_factory=list)  # the budget holds on each of these
    ranked_on: list[str] = field(default_factory=list)  # the backends the sensitivity ranking ran on
    full: dict[str, float] = field(default_factory=dict)  # points lost on each backend, every node quantized
    unusable: dict[str, str] = field(default_factory=dict)  # backends that could not run the model, and why

    def as_dict(self) -> dict:
        return asdict(self)


def tune_quantized(fp32: Path, quantized: Path, x: np.ndarray, labels: np.ndarray | None,
                   s: Settings, out: Path | None = None, tag: str = "") -> TuneResult:
    """Sensitivity ranking and (with ``s.max_drop``) the budget; the tuned model goes to ``out``."""
    t0 = time.perf_counter()
    task = get_task(s.task)
    # ONNX Runtime's quantizer stores weights as integers: compute them from FP32's weights instead
    # (same integers), so a node taken back to high precision gets FP32's weights again
    model, unpacked = unpack_weights(load_onnx(quantized), load_onnx(fp32))
    ref = reference_outputs(fp32, x)
    n = min(s.sensitivity_samples, len(x))
    sub_labels = None if labels is None else labels[:n]
    res = TuneResult(tag or Path(quantized).stem, len(x), backends=list(s.backends))
    ev = Evaluator(x, ref, labels, s.metric, task=task, backends=s.backends)
    # the ranking runs where the budget is not met: on the backends that lose more than it with every
    # node quantized (a backend that computes some node wrongly ranks that node first), else on ORT
    ranking, before = (ORT,), None
    if s.max_drop is not None and len(s.backends) > 1:
        full = ev.score_each(model, tolerate=True)
        res.full = {b: round(f.drop, 4) for b, f in full.items()}
        res.backends, res.unusable = list(ev.backends), ev.unusable
        for b, why in ev.unusable.items():
            info(f"  [yellow]note[/]: the budget is not checked on {b}: {escape(why)}")
        ranking = tuple(b for b, f in full.items() if f.drop > s.max_drop) or ranking
        before = worst(full.values())
    res.ranked_on = list(ranking)
    if s.sensitivity or s.max_drop is not None:
        sub_ref = {k: v[:n] for k, v in ref.items()}
        res.sensitivity = node_sensitivity(model, Evaluator(x[:n], sub_ref, sub_labels, s.metric, task=task,
                                                            backends=ranking))
        info(f"  sensitivity of {len(res.sensitivity.rows)} nodes on {' and '.join(ranking)}: "
             f"{res.sensitivity.evaluations} evaluations of {n} samples in {res.sensitivity.seconds:.1f} s")
    if s.max_drop is not None:
        tuned, res.budget = apply_budget(model, ev, s.max_drop, s.max_excluded, res.sensitivity, before)
        b = res.budget
        on_ = lambda f: f" (worst: {f.backend})" if f.backend else ""  # noqa: E731
        info(f"  budget {s.max_drop:g} pts ({b.metric}, on {' and '.join(s.backends)}): drop "
             f"{b.before.drop:.3f}{on_(b.before)} -> {b.after.drop:.3f}{on_(b.after)} with "
             f"{len(b.excluded)} node(s) in high precision; {b.evaluations} evaluations, {b.seconds:.1f} s")
        if out is not None:
            save_onnx(pack_weights(tuned, unpacked), out)
    res.seconds = round(time.perf_counter() - t0, 2)
    return res


def run(inputs: list[Artifact], settings: Settings, ctx: StageContext) -> StageOutput:
    """``inputs``: the quantized model, the FP32 model, the tuning ``Data``.

    With a budget, the tuned model goes to ``ctx.out`` and the result to ``tune/<name>.json``;
    without one, the result (sensitivity only) is the output."""
    raw, fp32, data = inputs
    assert isinstance(data, Data)
    budget = settings.max_drop is not None
    info(f"tune {ctx.name}:")
    data = data.head(settings.samples)
    res = tune_quantized(fp32.path, raw.path, data.x, data.labels, settings,
                         out=ctx.out if budget else None, tag=ctx.name)
    rel = RunLayout.tune(ctx.name)
    json_path = ctx.side(RunLayout.record_name(rel), rel) if budget else ctx.out
    coverage = quant_coverage(load_onnx(ctx.out)).as_dict() if budget else None
    write_json(json_path, {**res.as_dict(), "data": data.description, "source": raw.path.name,
                           "output": ctx.out.name if budget else None, "coverage": coverage})
    kept = res.budget.excluded if res.budget else []
    return StageOutput({**settings.model_dump(mode="json"), "kept_in_high_precision": kept}, res)
