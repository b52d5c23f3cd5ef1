"""What a task decides: labels, metrics, the gates it understands, the budget metric, report columns.

A task sees model outputs as plain arrays (``{output name: array}``) and labels as
the data loader gives them; it never runs a model. The check stage asks it for
accuracy and gates, the sensitivity/budget search asks it to score a variant
against FP32 (``fidelity``), the report asks it which accuracy columns to show.
Tasks register by name (``optim.tasks.register_task``); a recipe's ``task`` names one.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
from pydantic import BaseModel

from optim.errors import DataError, QuantizeError


class Head(NamedTuple):
    """Node-name patterns (regexes) of a model's output head, and how they were found."""

    patterns: tuple[str, ...] = ()
    note: str = ""  # empty when the head was found by its module name


@dataclass
class GateResult:
    gate: str
    value: float
    limit: float
    passed: bool

    def line(self, tag: str) -> str:
        verdict = "passed" if self.passed else "FAILED"
        value = 0.0 if self.value == 0 else self.value  # no "-0"
        return f"gate {self.gate} {verdict} for {tag}: measured {value:.4g}, limit {self.limit:g}"

    @classmethod
    def judge(cls, gate: str, value: float, limit: float) -> GateResult:
        """``value`` against ``limit``, the way the gate's name says: a ``max_...`` gate passes at or
        below its limit, a ``min_...`` gate at or above it."""
        if gate.startswith("max_"):
            return cls(gate, value, limit, value <= limit)
        if gate.startswith("min_"):
            return cls(gate, value, limit, value >= limit)
        raise ValueError(f"gate {gate!r}: a gate's name starts with max_ or min_")


def gate_results(gates: BaseModel, readers: dict[str, Callable[[], float]]) -> list[GateResult]:
    """The gates that ``gates`` sets, in the order of ``readers`` (gate name -> how to read its value),
    each judged on its value (``GateResult.judge``). A value is read only for a gate that is set."""
    return [GateResult.judge(gate, read(), limit) for gate, read in readers.items()
            if (limit := getattr(gates, gate)) is not None]


def require_labels(gates: BaseModel, names: Iterable[str], accuracy: dict[str, float] | None) -> None:
    """``DataError`` when one of the gates ``names`` is set and the data has no labels (``accuracy`` None)."""
    if accuracy is not None:
        return
    for gate in names:
        if getattr(gates, gate) is not None:
            raise DataError(f"gate {gate} needs labelled evaluation data; this data has no labels")


def output_value(deltas: dict[str, float], key: str, gate: str, needs: str) -> float:
    """``deltas[key]``, or ``DataError`` naming the output ``gate`` needs when this output has no ``key``."""
    if key not in deltas:
        raise DataError(f"gate {gate} needs {needs}")
    return deltas[key]


def max_abs_error(outputs: dict[str, dict[str, float]]) -> float:
    """The largest ``max_abs_error`` over a check's outputs (``Task.output_deltas`` of each)."""
    return max(o["max_abs_error"] for o in outputs.values())


@dataclass
class Fidelity:
    """A candidate's outputs against FP32's on one data set (the budget search's score)."""

    cosine: float
    max_abs_error: float
    agreement: float  # the task's agreement with FP32, in % (classification: same top-1 class)
    score: float | None = None  # the task's labelled metric (classification: top-1 %); None without labels
    drop: float = 0.0  # points lost in the budget's metric
    backend: str = ""  # the backend that scored worst, where several ran the variant (``Evaluator.backends``)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Column:
    """One accuracy column of the report: header, the key in ``Task.row_values``, digits.

    ``needs_labels``: the value exists only with labelled data (the report says "no labels"
    rather than "not run" for a checked model); ``description`` names it on a plot axis."""

    header: str
    key: str
    digits: int = 2
    signed: bool = False
    needs_labels: bool = False
    description: str = ""

    def cell(self, value: float | None, checked: bool) -> str:
        if value is None:
            return "no labels" if checked and self.needs_labels else "not run"
        return f"{value:+.{self.digits}f}" if self.signed else f"{value:.{self.digits}f}"


def first_output(outputs: dict[str, Any]) -> Any:
    """The first of a model's outputs (the one a task reads: logits, the raw detection head)."""
    return next(iter(outputs.values()))


#: a reference output whose largest value is below this is "about zero"
TINY_OUTPUT = 1e-6
#: ... and one whose spread across inputs is below this fraction of its values "does not vary"
FLAT_OUTPUT = 1e-5


class Task(abc.ABC):
    name: ClassVar[str]
    #: the gates this task understands (a pydantic model, every field optional)
    gates_model: ClassVar[type[BaseModel]]
    #: gates that hold unless a recipe or flag sets them otherwise (a value of 0 turns a minimum off)
    default_gates: ClassVar[dict[str, float]] = {}
    #: budget metrics: the first needs labels, the last works without them (agreement with FP32)
    budget_metrics: ClassVar[tuple[str, ...]]
    #: what each budget metric is called in reports
    metric_labels: ClassVar[dict[str, str]] = {}

    @abc.abstractmethod
    def output_deltas(self, ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
        """Per-output comparison of a candidate with the reference (JSON-serialisable)."""

    @abc.abstractmethod
    def accuracy(self, outputs: dict[str, np.ndarray], labels: Any) -> dict[str, float]:
        """Task metrics of one model's outputs against the labels."""

    def compare(self, ref_outputs: dict[str, np.ndarray], got_outputs: dict[str, np.ndarray],
                labels: Any) -> dict[str, float]:
        """Candidate metrics plus ``reference_<metric>`` and ``<metric>_delta`` (points) for each metric."""
        ref, got = self.accuracy(ref_outputs, labels), self.accuracy(got_outputs, labels)
        return {**got, **{f"reference_{k}": v for k, v in ref.items()},
                **{f"{k}_delta": got[k] - ref[k] for k in got}}

    def reference_warnings(self, ref_outputs: dict[str, np.ndarray], labels: Any = None) -> list[str]:
        """Why the reference cannot tell a good candidate from a bad one (empty when it can):
        outputs that are all zero, about zero, or that do not vary with the input. Fidelity
        numbers (cosine, agreement) against such a reference are not meaningful. Tasks add
        their own (classification: one class for every input; accuracy at chance level)."""
        out = []
        for name, y in ref_outputs.items():
            y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
            scale = float(np.abs(y).max()) if y.size else 0.0
            if scale == 0.0:
                out.append(f"output '{name}' is all zeros")
            elif scale < TINY_OUTPUT:
                out.append(f"output '{name}' is about zero everywhere (largest |value| {scale:.1e})")
            elif len(y) > 1:
                spread = float(y.std(axis=0).max())
                if spread <= FLAT_OUTPUT * scale:
                    out.append(f"output '{name}' does not vary with the input (spread across inputs "
                               f"{spread:.1e} of values up to {scale:.1e})")
        return out

    #: gates that read labelled metrics: setting one on unlabelled data is an error
    labelled_gates: ClassVar[tuple[str, ...]] = ()

    def gate_values(self, outputs: dict[str, dict[str, float]],
                    accuracy: dict[str, float] | None) -> dict[str, Callable[[], float]]:
        """Gate name -> how to read its value from a check's per-output deltas and accuracy, in report
        order (read only for the gates a recipe sets)."""
        raise NotImplementedError(f"task {self.name} defines no gate values")

    def apply_gates(self, outputs: dict[str, dict[str, float]], accuracy: dict[str, float] | None,
                    gates: BaseModel) -> list[GateResult]:
        """Gate results for a check's per-output deltas and accuracy: each gate ``gates`` sets, judged
        on the value ``gate_values`` reads (``GateResult.judge``)."""
        require_labels(gates, self.labelled_gates, accuracy)
        return gate_results(gates, self.gate_values(outputs, accuracy))

    def fidelity(self, ref: dict[str, np.ndarray], got: dict[str, np.ndarray], labels: Any,
                 metric: str) -> Fidelity:
        """Score a model variant against FP32 in ``metric`` (one of ``budget_metrics``).

        The score is the metric the gates read: the labelled metric (``budget_metrics[0]``) drops by
        the ``headline`` points lost against the labels, the agreement metric by 100 minus the
        ``agreement`` value of the first output's deltas. ``cosine`` and ``max_abs_error`` come from
        the same deltas (the sensitivity ranking sorts by the cosine, a continuous measure)."""
        deltas = self.output_deltas(first_output(ref), first_output(got))
        f = Fidelity(deltas["cosine"], deltas["max_abs_error"], deltas.get(self.agreement, 100.0))
        if labels is not None:
            f.score = self.accuracy(got, labels)[self.headline]
        if metric == self.budget_metrics[0]:
            if labels is None:
                raise DataError(f"budget metric {metric} needs labelled data; use metric {self.budget_metrics[-1]}")
            f.drop = self.accuracy(ref, labels)[self.headline] - f.score
        else:
            f.drop = 100.0 - f.agreement
        return f

    def resolve_metric(self, metric: str, has_labels: bool) -> str:
        """``auto`` -> the labelled metric when labels exist, else the agreement metric."""
        if metric == "auto":
            return self.budget_metrics[0] if has_labels else self.budget_metrics[-1]
        if metric not in self.budget_metrics:
            raise QuantizeError(f"task {self.name} has budget metrics {list(self.budget_metrics)}, not '{metric}'")
        if metric == self.budget_metrics[0] and not has_labels and len(self.budget_metrics) > 1:
            raise QuantizeError(f"metric {metric} needs labelled data; use metric {self.budget_metrics[-1]}")
        return metric

    @abc.abstractmethod
    def summary(self, outputs: dict[str, dict[str, float]], accuracy: dict[str, float] | None) -> str:
        """One console line: accuracy (or 'no labels') and fidelity to FP32."""

    #: accuracy columns of the report table
    columns: ClassVar[tuple[Column, ...]] = ()
    #: the column keys of the headline metric (labelled) and of agreement with FP32 (no labels):
    #: the GPU column and the accuracy-vs-speed plot show these
    headline: ClassVar[str]
    agreement: ClassVar[str]

    def column(self, key: str) -> Column:
        return next(c for c in self.columns if c.key == key)

    def metric_label(self, metric: str) -> str:
        return self.metric_labels.get(metric, metric)

    def accuracy_line(self, accuracy: dict[str, float], samples: int) -> str:
        """One console line for labelled accuracy: each metric, its change vs FP32 and FP32's value."""
        parts = [f"{k} {v:.2f} ({accuracy[k + '_delta']:+.2f} vs FP32 {accuracy['reference_' + k]:.2f})"
                 for k, v in accuracy.items() if f"{k}_delta" in accuracy]
        return f"task accuracy on {samples} labelled samples: " + ", ".join(parts)

    @staticmethod
    def output_line(name: str, deltas: dict[str, float]) -> str:
        """One console line for one output's comparison with FP32."""
        return f"{name}: " + ", ".join(f"{k} {v:.6g}" for k, v in deltas.items())

    #: a flat image folder given as data is letterboxed to the model input (detection), not resized/cropped
    letterbox_images: ClassVar[bool] = False

    def check_labels(self, labels: Any, count: int, source: str) -> Any:
        """The labels of ``count`` samples as this task reads them (None: unlabelled), or ``DataError``.

        Default: a numeric array with one entry per sample, of any shape after the first axis
        (a task with per-sample vectors or maps takes them as they are)."""
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iufb" or labels.ndim == 0:
            raise DataError(f"{source}: labels must be a numeric array with one entry per sample, got "
                            f"{labels.dtype} of shape {labels.shape}")
        if len(labels) != count:
            raise DataError(f"{source}: {count} images but {len(labels)} labels")
        return labels

    #: keep the output head's decode unquantized unless the recipe says otherwise (``quantize.keep_head``)
    keep_head_default: ClassVar[bool] = False
    #: why the head stays in high precision (the report says it)
    keep_head_why: ClassVar[str] = ""

    def head(self, model: Any) -> Head:
        """The model's output head that stays in high precision when ``quantize.keep_head`` holds
        (node-name patterns, and a note when it was not found by name); none by default."""
        return Head()

    def keep_head(self, qs: Any, model: Any) -> tuple[Any, Head]:
        """Quantize settings ``qs`` with ``keep_head`` resolved (None: ``keep_head_default``) and, when it
        holds, the head's patterns added to ``exclude_nodes``; and the head (no patterns if none)."""
        keep = self.keep_head_default if qs.keep_head is None else qs.keep_head
        head = self.head(model) if keep else Head()
        return qs.model_copy(update={"keep_head": keep, "exclude_nodes": tuple(dict.fromkeys(
            (*qs.exclude_nodes, *head.patterns)))}), head

    @abc.abstractmethod
    def row_values(self, outputs: dict[str, dict[str, float]], accuracy: dict[str, float] | None) -> dict[str, Any]:
        """Values for ``columns`` (None where not measured) from a check result."""
