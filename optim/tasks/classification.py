"""Classification: class ids as labels, top-1/top-5 accuracy, agreement with FP32, top-1 gates.

Outputs are compared per output (error, cosine); the first output holds the
(N, classes) logits that accuracy, agreement and the gates read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pydantic import Field

from optim.errors import DataError
from optim.settings import Strict
from optim.tasks import register_task
from optim.tasks.base import Column, Task, first_output, max_abs_error, output_value


def output_deltas(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    if ref.shape != got.shape:
        raise DataError(f"candidate output shape {list(got.shape)} != reference {list(ref.shape)}")
    r = ref.reshape(len(ref), -1).astype(np.float64)
    g = got.reshape(len(got), -1).astype(np.float64)
    err = np.abs(r - g)
    norms = np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1)
    cos = np.where(norms > 0, (r * g).sum(axis=1) / np.maximum(norms, 1e-30), 1.0)
    out = {"max_abs_error": float(err.max()), "mean_abs_error": float(err.mean()),
           "cosine": float(cos.mean()), "min_cosine": float(cos.min())}
    if ref.ndim == 2 and ref.shape[1] > 1:
        out["top1_agreement"] = float(100.0 * (ref.argmax(1) == got.argmax(1)).mean())
        k = min(5, ref.shape[1])
        tr = np.argpartition(-ref, k - 1, axis=1)[:, :k]
        tg = np.argpartition(-got, k - 1, axis=1)[:, :k]
        overlap = [len(set(a) & set(b)) for a, b in zip(tr.tolist(), tg.tolist())]
        out["top5_overlap"] = float(100.0 * np.mean(overlap) / k)
        out["kl_divergence"] = _kl(r, g)
    return out


def _kl(ref_logits: np.ndarray, got_logits: np.ndarray) -> float:
    """Mean KL(softmax(ref) || softmax(got)), in nats."""
    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    lr, lg = log_softmax(ref_logits), log_softmax(got_logits)
    return float(max(0.0, (np.exp(lr) * (lr - lg)).sum(axis=1).mean()))


def topk_accuracy(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    if logits.ndim != 2:
        raise DataError(f"task accuracy needs (N, classes) outputs, got shape {list(logits.shape)}")
    n_cls = logits.shape[1]
    if labels.min() < 0 or labels.max() >= n_cls:
        raise DataError(f"labels range {labels.min()}..{labels.max()} does not fit {n_cls} classes")
    k = min(5, n_cls)
    topk = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return {"top1": float(100.0 * (logits.argmax(1) == labels).mean()),
            "top5": float(100.0 * (topk == labels[:, None]).any(axis=1).mean())}


class Gates(Strict):
    """The gates classification understands (a recipe's ``gates:``, ``optim check`` flags)."""

    max_top1_drop: float | None = Field(default=None, description="task top-1 loss, in points")
    min_cosine: float | None = None
    min_top1_agreement: float | None = Field(default=None, description="percent of samples")
    max_abs_error: float | None = None


@register_task
class Classification(Task):
    name = "classification"
    gates_model = Gates
    budget_metrics = ("top1", "agreement")
    metric_labels = {"top1": "task top-1", "agreement": "top-1 agreement with FP32"}
    columns = (Column("top-1 %", "top1", needs_labels=True, description="task top-1 (%)"),
               Column("Δ top-1 (pts)", "top1_delta", signed=True, needs_labels=True),
               Column("top-5 %", "top5", needs_labels=True), Column("cosine", "cosine", 5),
               Column("agree %", "top1_agreement", description="top-1 agreement with FP32 (%)"))
    headline, agreement = "top1", "top1_agreement"

    def output_deltas(self, ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
        return output_deltas(ref, got)

    def accuracy(self, outputs: dict[str, np.ndarray], labels: Any) -> dict[str, float]:
        return topk_accuracy(first_output(outputs), labels)

    def check_labels(self, labels: Any, count: int, source: str) -> np.ndarray:
        """Class ids: a 1-D integer array, one per sample."""
        if hasattr(labels, "boxes"):
            raise DataError(f"{source}: the labels are boxes (detection data); give the detection task "
                            "(--task detection, or task: detection in the recipe)")
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu" or labels.ndim != 1:
            raise DataError(f"{source}: labels must be a 1-D integer array, got {labels.dtype} of shape {labels.shape}")
        return super().check_labels(labels, count, source)

    def reference_warnings(self, ref_outputs: dict[str, np.ndarray], labels: Any = None) -> list[str]:
        out = super().reference_warnings(ref_outputs, labels)
        logits = first_output(ref_outputs)
        if out or logits.ndim != 2 or logits.shape[1] < 2 or len(logits) < 8:
            return out
        classes = np.unique(logits.argmax(1))
        if len(classes) == 1:
            out.append(f"one class predicted for all inputs (class {int(classes[0])} for all {len(logits)}): "
                       "top-1 agreement cannot fail")
        elif labels is not None and len(np.unique(labels)) > 1:
            top1, chance = topk_accuracy(logits, labels)["top1"], 100.0 / logits.shape[1]
            if top1 <= 1.5 * chance:
                out.append(f"the FP32 reference is at chance level (top-1 {top1:.2f}%, {logits.shape[1]} classes): "
                           "untrained weights, or labels/preprocessing that do not fit the model")
        return out

    labelled_gates = ("max_top1_drop",)

    def gate_values(self, outputs: dict[str, dict[str, float]],
                    accuracy: dict[str, float] | None) -> dict[str, Callable[[], float]]:
        first = first_output(outputs)
        return {"max_top1_drop": lambda: -accuracy["top1_delta"],
                "min_cosine": lambda: first["cosine"],
                "min_top1_agreement": lambda: output_value(first, "top1_agreement", "min_top1_agreement",
                                                           "a (N, classes) output"),
                "max_abs_error": lambda: max_abs_error(outputs)}

    def summary(self, outputs: dict[str, dict[str, float]], accuracy: dict[str, float] | None) -> str:
        first = first_output(outputs)
        acc = (f"top-1 {accuracy['top1']:.2f}% ({accuracy['top1_delta']:+.2f} pts)" if accuracy else "no labels")
        agree = first.get("top1_agreement")
        return f"{acc}, cosine {first['cosine']:.5f}" + (f", top-1 agreement {agree:.2f}%" if agree is not None else "")

    def row_values(self, outputs: dict[str, dict[str, float]], accuracy: dict[str, float] | None) -> dict[str, Any]:
        first = first_output(outputs)
        acc = accuracy or {}
        return {"top1": acc.get("top1"), "top5": acc.get("top5"), "top1_delta": acc.get("top1_delta"),
                "cosine": first.get("cosine"), "top1_agreement": first.get("top1_agreement"),
                "max_abs_error": max_abs_error(outputs)}
