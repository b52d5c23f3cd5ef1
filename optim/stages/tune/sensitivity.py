"""Per-node quantization sensitivity, measured end to end on the model's output.

For each quantized node of a Q/DQ model (named by its ONNX node name and op
type), build the model in which *only that node* keeps its Q/DQ (all others are
taken back to high precision with ``optim.stages.tune.edit.dequantize_nodes``; the scales are
the ones calibration chose, nothing is recalibrated) and measure, against FP32 on
the same inputs: the output error (1 - cosine, max abs error) and the task
metric (top-1 points lost with labels, else top-1 agreement with FP32). Nodes are
ranked by output error, the continuous measure; ties go by node name, so the
ranking is deterministic.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from optim.tasks import Fidelity, Task, get_task
from optim.console import progress
from optim.errors import BackendUnavailable, ModelError, QuantizeError, first_line
from optim.onnx_tools import has_float8, save_onnx
from optim.stages.tune.edit import QuantNode, dequantize_nodes, quantized_nodes
from optim.backends.base import run_batched
from optim.backends.onnxruntime import OrtRunner
from optim.backends import open_runner

BATCH = 256
ORT = "onnxruntime"


class Evaluator:
    """Runs model variants on fixed inputs and scores them against FP32 outputs.

    The task scores each variant (``Task.fidelity``) in ``metric``: its labelled metric
    or its agreement with FP32 (``auto`` picks by whether labels exist). With several
    ``backends`` (the CPU backends a run reports: ``onnxruntime``, ``openvino``) every variant
    runs on each, against the same FP32 outputs, and scores as its worst: a node that one
    backend computes wrongly counts as sensitive even where another computes it right."""

    def __init__(self, x: np.ndarray, ref: np.ndarray | dict[str, np.ndarray], labels: np.ndarray | None,
                 metric: str = "auto", threads: int | None = None, task: Task | None = None,
                 backends: tuple[str, ...] = (ORT,)) -> None:
        self.task = task or get_task("classification")
        self.metric = self.task.resolve_metric(metric, labels is not None)
        self.ref = ref if isinstance(ref, dict) else {"output": ref}
        self.x, self.labels, self.threads = x, labels, threads
        self.backends = tuple(backends) or (ORT,)
        self.unusable: dict[str, str] = {}  # backend -> why it could not run the model (score_each)
        self.evaluations = 0
        self.seconds = 0.0

    def run(self, model: onnx.ModelProto, backend: str = ORT) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        if backend == ORT:
            opt = "basic" if has_float8(model) else "all"
            with OrtRunner(model.SerializeToString(), threads=self.threads, optimization=opt) as r:
                out = run_batched(r, self.x, BATCH, description=None)
        else:  # another backend opens files: the variant goes through a private temporary one
            with tempfile.TemporaryDirectory(prefix="optim-eval-") as d:
                path = Path(d) / "variant.onnx"
                save_onnx(model, path)
                with open_runner(path, backend=backend, threads=self.threads) as r:
                    out = run_batched(r, self.x, BATCH, description=None)
        self.evaluations += 1
        self.seconds += time.perf_counter() - t0
        return dict(zip(self.ref, out.values()))

    def score_each(self, model: onnx.ModelProto, tolerate: bool = False) -> dict[str, Fidelity]:
        """The variant's fidelity on each backend. ``tolerate``: a backend other than ONNX Runtime that
        cannot run the model is dropped from this evaluator (the reason kept in ``unusable``)."""
        out = {}
        several = len(self.backends) > 1
        for b in list(self.backends):
            try:
                got = self.run(model, b)
            except (BackendUnavailable, ModelError) as exc:
                if not tolerate or b == ORT:
                    raise
                self.unusable[b] = first_line(exc)
                self.backends = tuple(x for x in self.backends if x != b)
                continue
            out[b] = self.task.fidelity(self.ref, got, self.labels, self.metric)
            out[b].backend = b if several else ""
        return out

    def score(self, model: onnx.ModelProto) -> Fidelity:
        """The variant's fidelity on its worst backend (the most points lost; then the lowest agreement)."""
        return worst(self.score_each(model).values())


def worst(fidelities) -> Fidelity:
    """The fidelity that lost the most points (then: the lowest agreement)."""
    return max(fidelities, key=lambda f: (f.drop, -f.agreement))


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
            "this Q/DQ file folds operators into quantization (ONNX Runtime's quantizer drops Relu "
            "after a quantized Conv unless told to keep it), so nodes cannot be taken back to high "
            "precision by removing Q/DQ; quantize it again with optim, which keeps them")


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
            f = ev.score(dequantize_nodes(model, [other for other in names if other != n.name]))
            rep.rows.append(NodeSensitivity(n.name, n.op_type, round(1.0 - f.cosine, 9),
                                            f.max_abs_error, f.drop, f.agreement))
            bar.advance(task)
    rep.rows.sort(key=lambda r: (-r.output_error, -r.metric_drop, r.node))
    rep.evaluations, rep.seconds = ev.evaluations, round(ev.seconds, 2)
    return rep
