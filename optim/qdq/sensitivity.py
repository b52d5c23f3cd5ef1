"""Per-node quantization sensitivity, measured end to end on the model's output.

For each quantized node of a Q/DQ model (named by its ONNX node name and op
type), build the model in which *only that node* keeps its Q/DQ (all others are
taken back to high precision with ``optim.qdq.edit.dequantize_nodes``; the scales are
the ones calibration chose, nothing is recalibrated) and measure, against FP32 on
the same inputs: the output error (1 - cosine, max abs error) and the task
metric (top-1 points lost with labels, else top-1 agreement with FP32). Nodes are
ranked by output error, the continuous measure; ties go by node name, so the
ranking is deterministic.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from optim.tasks import Fidelity, Task, get_task
from optim.console import progress
from optim.errors import QuantizeError
from optim.onnx_tools import has_float8
from optim.qdq.edit import QuantNode, dequantize_nodes, quantized_nodes
from optim.backends.base import run_batched
from optim.backends.onnxruntime import OrtRunner

BATCH = 256


class Evaluator:
    """Runs model variants on fixed inputs and scores them against FP32 outputs.

    The task scores each variant (``Task.fidelity``) in ``metric``: its labelled metric
    or its agreement with FP32 (``auto`` picks by whether labels exist)."""

    def __init__(self, x: np.ndarray, ref: np.ndarray | dict[str, np.ndarray], labels: np.ndarray | None,
                 metric: str = "auto", threads: int | None = None, task: Task | None = None) -> None:
        self.task = task or get_task("classification")
        self.metric = self.task.resolve_metric(metric, labels is not None)
        self.ref = ref if isinstance(ref, dict) else {"output": ref}
        self.x, self.labels, self.threads = x, labels, threads
        self.evaluations = 0
        self.seconds = 0.0

    def run(self, model: onnx.ModelProto) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        opt = "basic" if has_float8(model) else "all"
        with OrtRunner(model.SerializeToString(), threads=self.threads, optimization=opt) as r:
            out = run_batched(r, self.x, BATCH, description=None)
        self.evaluations += 1
        self.seconds += time.perf_counter() - t0
        return dict(zip(self.ref, out.values()))

    def score(self, model: onnx.ModelProto) -> Fidelity:
        return self.task.fidelity(self.ref, self.run(model), self.labels, self.metric)


@dataclass
class NodeSensitivity:
    node: str
    op_type: str
    output_error: float  # 1 - mean cosine vs FP32, with only this node quantized
    max_abs_error: float
    metric_drop: float  # points, in the evaluator's metric
    agreement: float  # % agreement with FP32, the task's measure


@dataclass
class SensitivityReport:
    metric: str
    samples: int
    rows: list[NodeSensitivity] = field(default_factory=list)
    full: Fidelity | None = None  # every node quantized
    evaluations: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)

    def ranked_names(self) -> list[str]:
        return [r.node for r in self.rows]


def check_reversible(model: onnx.ModelProto, ev: Evaluator, nodes: list[QuantNode]) -> None:
    """Taking every node back to high precision must give FP32 again, or edits are unsafe."""
    back = ev.run(dequantize_nodes(model, [n.name for n in nodes]))
    err = max(float(np.abs(back[k] - ev.ref[k]).max()) for k in ev.ref)
    scale = max(float(np.abs(v).max()) for v in ev.ref.values()) or 1.0
    if err > 1e-3 * scale:
        raise QuantizeError(
            "this Q/DQ placement folds operators into quantization (the onnxruntime target "
            "drops Relu after quantized Conv), so nodes cannot be taken back to high precision "
            "by removing Q/DQ; use the tensorrt placement for sensitivity and budgets")


def node_sensitivity(model: onnx.ModelProto, ev: Evaluator) -> SensitivityReport:
    nodes = quantized_nodes(model)
    if not nodes:
        raise QuantizeError("the model has no quantized nodes (no DequantizeLinear feeds a compute node)")
    check_reversible(model, ev, nodes)
    names = [n.name for n in nodes]
    rep = SensitivityReport(ev.metric, len(ev.x), full=ev.score(model))
    with progress() as bar:
        task = bar.add_task("sensitivity", total=len(nodes))
        for n in nodes:
            f = ev.score(dequantize_nodes(model, [m for m in names if m != n.name]))
            rep.rows.append(NodeSensitivity(n.name, n.op_type, round(1.0 - f.cosine, 9),
                                            f.max_abs_error, f.drop, f.agreement))
            bar.advance(task)
    rep.rows.sort(key=lambda r: (-r.output_error, -r.metric_drop, r.node))
    rep.evaluations, rep.seconds = ev.evaluations, round(ev.seconds, 2)
    return rep
