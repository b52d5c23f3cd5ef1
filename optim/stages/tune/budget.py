"""An accuracy budget for a quantized model: keep the fewest, most sensitive nodes in
high precision until the model loses at most ``max_drop`` points vs FP32.

1. Score the fully quantized model; if it is within budget, nothing changes.
2. Rank nodes by sensitivity (``optim.stages.tune.sensitivity``) and take them back to high
   precision one at a time, most sensitive first, until the budget is met.
3. Try returning each kept node to its quantized form, least sensitive first, and
   keep it quantized if the budget still holds (fewer high-precision nodes).

Every step is an evaluation on the same fixed data, in a fixed order, so the same
inputs give the same choice. Calibration scales are reused throughout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import onnx

from optim.console import progress
from optim.errors import QuantizeError
from optim.stages.tune.edit import dequantize_nodes, quantized_nodes
from optim.stages.tune.sensitivity import Evaluator, Fidelity, SensitivityReport, check_reversible, node_sensitivity


@dataclass
class BudgetStep:
    action: str  # "start", "exclude", "restore", "keep"
    node: str | None
    drop: float
    met: bool


@dataclass
class BudgetResult:
    max_drop: float
    metric: str
    excluded: list[dict] = field(default_factory=list)  # node, op_type, why
    before: Fidelity | None = None
    after: Fidelity | None = None
    steps: list[BudgetStep] = field(default_factory=list)
    sensitivity: SensitivityReport | None = None
    evaluations: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def apply_budget(model: onnx.ModelProto, ev: Evaluator, max_drop: float,
                 max_excluded: int | None = None, sensitivity: SensitivityReport | None = None,
                 before: Fidelity | None = None) -> tuple[onnx.ModelProto, BudgetResult]:
    """``before``: ``ev.score(model)`` where the caller has it already."""
    res = BudgetResult(max_drop, ev.metric)
    res.before = before or ev.score(model)
    res.steps.append(BudgetStep("start", None, res.before.drop, res.before.drop <= max_drop))
    if res.before.drop <= max_drop:
        res.after = res.before
        return _done(model, res, ev)
    nodes = {n.name: n for n in quantized_nodes(model)}
    check_reversible(model, ev, list(nodes.values()))
    sens = sensitivity or node_sensitivity(model, ev)
    res.sensitivity = sens
    ranked = [n for n in sens.ranked_names() if n in nodes]
    limit = len(ranked) if max_excluded is None else min(max_excluded, len(ranked))
    excluded: list[str] = []
    best = res.before
    with progress() as bar:
        task = bar.add_task(f"budget {max_drop:g} pts: excluding nodes", total=limit)
        for name in ranked[:limit]:
            excluded.append(name)
            best = ev.score(dequantize_nodes(model, excluded))
            res.steps.append(BudgetStep("exclude", name, best.drop, best.drop <= max_drop))
            bar.update(task, advance=1, description=f"budget {max_drop:g} pts: drop {best.drop:.2f}")
            if best.drop <= max_drop:
                break
    if best.drop > max_drop:
        within = "even with every quantized node" if limit == len(ranked) else f"with up to {limit} nodes"
        raise QuantizeError(
            f"the accuracy budget of {max_drop:g} points ({ev.metric}) cannot be met {within} "
            f"in high precision: the smallest drop reached was {best.drop:.3f} points")
    with progress() as bar:
        task = bar.add_task("budget: trying to re-quantize kept nodes", total=len(excluded) - 1)
        for name in reversed(excluded[:-1]):  # least sensitive first
            trial = [n for n in excluded if n != name]
            f = ev.score(dequantize_nodes(model, trial))
            ok = f.drop <= max_drop
            res.steps.append(BudgetStep("restore" if ok else "keep", name, f.drop, ok))
            if ok:
                excluded, best = trial, f
            bar.advance(task)
    rows = {r.node: r for r in sens.rows}
    res.excluded = [{"node": n, "op_type": nodes[n].op_type,
                     "why": f"rank {ranked.index(n) + 1} of {len(ranked)} by sensitivity "
                            f"(output error {rows[n].output_error:.3g} with only it quantized)"}
                    for n in excluded]
    res.after = best
    return _done(dequantize_nodes(model, excluded), res, ev)


def _done(model: onnx.ModelProto, res: BudgetResult, ev: Evaluator):
    res.evaluations, res.seconds = ev.evaluations, round(ev.seconds, 2)
    return model, res
