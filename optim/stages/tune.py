"""Stage: accuracy-aware quantization of a Q/DQ model.

``run`` (tune): rank the quantized nodes by sensitivity (``optim.qdq.sensitivity``)
and, with a budget, take the fewest most sensitive ones back to high precision
(``optim.qdq.budget``); writes the tuned model when a budget is set.
Runs on the tuning data, never on the evaluation set that the report scores.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path


import numpy as np
from pydantic import Field

from optim.artifacts import Artifact, Data, write_json
from optim.backends import open_runner, run_batched
from optim.console import info
from optim.executor import StageContext, StageOutput
from optim.onnx_tools import load_onnx, quant_coverage, save_onnx
from optim.qdq.budget import BudgetResult, apply_budget
from optim.qdq.sensitivity import Evaluator, SensitivityReport, node_sensitivity
from optim.settings import Strict
from optim.tasks import get_task

NAME = "tune"
TOOLS = ("onnxruntime", "onnx")


class Settings(Strict):
    """One entry's tuning: sensitivity, and the budget when ``max_drop`` is set."""

    task: str = "classification"
    samples: int | None = Field(default=1024, ge=1)
    sensitivity: bool = True
    sensitivity_samples: int = Field(default=256, ge=1)
    max_drop: float | None = Field(default=None, ge=0)
    metric: str = "auto"
    max_excluded: int | None = Field(default=None, ge=0)


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

    def as_dict(self) -> dict:
        return asdict(self)


def tune_quantized(fp32: Path, quantized: Path, x: np.ndarray, labels: np.ndarray | None,
                   s: Settings, out: Path | None = None, tag: str = "") -> TuneResult:
    """Sensitivity ranking and (with ``s.max_drop``) the budget; the tuned model goes to ``out``."""
    t0 = time.perf_counter()
    task = get_task(s.task)
    model = load_onnx(quantized)
    ref = reference_outputs(fp32, x)
    n = min(s.sensitivity_samples, len(x))
    sub_labels = None if labels is None else labels[:n]
    res = TuneResult(tag or Path(quantized).stem, len(x))
    if s.sensitivity or s.max_drop is not None:
        sub_ref = {k: v[:n] for k, v in ref.items()}
        res.sensitivity = node_sensitivity(model, Evaluator(x[:n], sub_ref, sub_labels, s.metric, task=task))
        info(f"  sensitivity of {len(res.sensitivity.rows)} nodes: {res.sensitivity.evaluations} "
             f"evaluations of {n} samples in {res.sensitivity.seconds:.1f} s")
    if s.max_drop is not None:
        ev = Evaluator(x, ref, labels, s.metric, task=task)
        tuned, res.budget = apply_budget(model, ev, s.max_drop, s.max_excluded, res.sensitivity)
        b = res.budget
        info(f"  budget {s.max_drop:g} pts ({b.metric}): drop {b.before.drop:.3f} -> {b.after.drop:.3f} "
             f"with {len(b.excluded)} node(s) in high precision; {b.evaluations} evaluations, "
             f"{b.seconds:.1f} s")
        if out is not None:
            save_onnx(tuned, out)
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
    json_path = ctx.side(f"tune/{ctx.name}", f"tune/{ctx.name}.json") if budget else ctx.out
    coverage = quant_coverage(load_onnx(ctx.out)).as_dict() if budget else None
    write_json(json_path, {**res.as_dict(), "data": data.description, "source": raw.path.name,
                           "output": ctx.out.name if budget else None, "coverage": coverage})
    kept = res.budget.excluded if res.budget else []
    return StageOutput({**settings.model_dump(mode="json"), "kept_in_high_precision": kept}, res)
