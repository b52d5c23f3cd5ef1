"""Detection: per-image boxes + classes as labels, COCO mAP, box-level agreement with FP32.

The model's first output is the raw YOLOv8 layout ``[N, 4 + nc, A]`` (``cx, cy, w, h`` in
input pixels, then sigmoid class scores; see ``optim.sources.detector``). It is decoded
with the NumPy reference (``detect_ops.decode``: best class per anchor, conf 0.001,
class-aware NMS at IoU 0.7, at most 100 boxes per image), then scored:

* accuracy (needs labels: ``BoxLabels``, boxes in the model input's pixels): COCO
  mAP@0.5:0.95 (``map``) and mAP@0.5 (``map50``), in percent, via faster-coco-eval;
* agreement with FP32 (no labels needed): the FP32 model's confident detections (score
  >= 0.25, a deployment threshold) are the ground truth and the candidate's detections
  (conf 0.001, with scores) are scored against them with the same COCO mAP@0.5:0.95
  (``agreement``, %). FP32 against itself is exactly 100: every confident box is found
  with IoU 1 and ranked above every other box. A candidate loses agreement when it
  misses, moves, re-labels or re-ranks FP32's boxes, or adds confident boxes of its own.

Per output the task also reports the class-score cosine (``cosine``: per image, over the
score block only; the box block holds pixel coordinates of every anchor, mostly
background, which would dominate a cosine of the whole tensor), the mean box error in
pixels on anchors FP32 is confident about (``box_error``) and the max abs error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import Field

from optim.console import info
from optim.errors import DataError
from optim.settings import Strict
from optim.tasks import register_task
from optim.tasks.base import Column, Head, Task, first_output, max_abs_error, output_value
from optim.tasks.detect_head import find_head, head_nodes  # noqa: F401  (head_nodes re-exported)
from optim.tasks.detect_ops import BoxLabels, as_box_labels, coco_map, decode

#: FP32 detections at or above this score are the ground truth of the agreement metric
AGREE_CONF = 0.25
#: an agreement resting on fewer FP32 boxes than this is flagged: each box would be 5 points or more
MIN_REFERENCE_BOXES = 20


def _is_detection(y: np.ndarray) -> bool:
    return y.ndim == 3 and y.shape[1] >= 5


def _generic(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    r = ref.reshape(len(ref), -1).astype(np.float64)
    g = got.reshape(len(got), -1).astype(np.float64)
    err = np.abs(r - g)
    cos, min_cos = _cosine(r, g)
    return {"max_abs_error": float(err.max(initial=0.0)), "mean_abs_error": float(err.mean()) if err.size else 0.0,
            "cosine": cos, "min_cosine": min_cos}


def _cosine(r: np.ndarray, g: np.ndarray) -> tuple[float, float]:
    norms = np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1)
    cos = np.where(norms > 0, (r * g).sum(axis=1) / np.maximum(norms, 1e-30),
                   np.where(np.linalg.norm(r - g, axis=1) == 0, 1.0, 0.0))
    return (float(cos.mean()), float(cos.min())) if len(cos) else (1.0, 1.0)


def fp32_agreement(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """The candidate's mAP@0.5:0.95 and mAP@0.5 (%) with FP32's confident detections as ground truth."""
    labels = reference_boxes(ref)
    nc = ref.shape[1] - 4
    boxes = float(labels.count)
    if labels.count == 0:  # FP32 is confident about nothing: agree when the candidate is not either
        v = 0.0 if any(len(d) for d in decode(got, conf=AGREE_CONF)) else 100.0
        return {"agreement": v, "agreement50": v, "reference_boxes": boxes}
    scores = coco_map(labels, decode(got), nc)
    return {"agreement": scores["map"], "agreement50": scores["map50"], "reference_boxes": boxes}


def reference_boxes(ref: np.ndarray) -> BoxLabels:
    """FP32's confident detections (score >= ``AGREE_CONF``): the ground truth of agreement."""
    truth = [d.above(AGREE_CONF) for d in decode(ref)]
    return BoxLabels([d.boxes for d in truth], [d.classes for d in truth])


def output_deltas(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    if ref.shape != got.shape:
        raise DataError(f"candidate output shape {list(got.shape)} != reference {list(ref.shape)}")
    out = _generic(ref, got)
    if not _is_detection(ref):
        return out
    r, g = ref.astype(np.float64), got.astype(np.float64)
    out["cosine"], out["min_cosine"] = _cosine(r[:, 4:].reshape(len(r), -1), g[:, 4:].reshape(len(g), -1))
    out["score_max_abs_error"] = float(np.abs(r[:, 4:] - g[:, 4:]).max(initial=0.0))
    sure = r[:, 4:].max(axis=1) >= AGREE_CONF  # (N, A)
    box_err = np.abs(r[:, :4] - g[:, :4]).mean(axis=1)  # (N, A), pixels
    out["box_error"] = float(box_err[sure].mean()) if sure.any() else 0.0
    out.update(fp32_agreement(ref, got))
    return out


def detection_accuracy(output: np.ndarray, labels: Any) -> dict[str, float]:
    if not _is_detection(output):
        raise DataError(f"detection accuracy needs a [N, 4 + classes, anchors] output, got shape {list(output.shape)}")
    labels = as_box_labels(labels)
    if len(labels) != len(output):
        raise DataError(f"{len(output)} images but labels for {len(labels)}")
    nc = output.shape[1] - 4
    top = max((int(c.max()) for c in labels.classes if len(c)), default=-1)
    if top >= nc or any(len(c) and c.min() < 0 for c in labels.classes):
        raise DataError(f"label classes reach {top}, outside the model's {nc} classes")
    return coco_map(labels, decode(output), nc)


class Gates(Strict):
    """The gates detection understands (a recipe's ``gates:``)."""

    max_map_drop: float | None = Field(default=None, description="mAP@0.5:0.95 loss vs FP32, in points")
    min_map: float | None = Field(default=None, description="mAP@0.5:0.95 at least this, in %")
    min_agreement: float | None = Field(default=None, description="mAP@0.5:0.95 against FP32's detections, in %")
    max_abs_error: float | None = Field(default=None, description="over the whole raw output; box coordinates "
                                        "of background anchors (pixels) dominate it")


@register_task
class Detection(Task):
    name = "detection"
    gates_model = Gates
    #: agreement with FP32 needs no labels: a backend or a file that computes garbage (a few % agreement)
    #: fails even on unlabelled data; correct INT8/FP8 detectors score 90-99 here
    default_gates = {"min_agreement": 75.0}
    #: the budget search scores the metric the gates read, not a proxy: one NumPy decode + NMS per
    #: image and one faster-coco-eval pass cost milliseconds per hundred images at 160x160, small next
    #: to running the variant's ONNX model on the same images, and a proxy could disagree with the gate
    budget_metrics = ("map", "agreement")
    metric_labels = {"map": "mAP@0.5:0.95", "agreement": "mAP@0.5:0.95 against FP32's detections"}
    columns = (Column("mAP50-95 %", "map", needs_labels=True, description="mAP@0.5:0.95 (%)"),
               Column("Δ mAP (pts)", "map_delta", signed=True, needs_labels=True),
               Column("mAP50 %", "map50", needs_labels=True),
               Column("agreement %", "agreement", description="mAP@0.5:0.95 against FP32's detections (%)"),
               Column("FP32 boxes", "reference_boxes", digits=0,
                      description="FP32's detections (score >= 0.25) the agreement is scored against"))
    headline, agreement = "map", "agreement"
    keep_head_default = True
    letterbox_images = True
    keep_head_why = ("the head's decode after its last convolutions: DFL softmax and expectation, sigmoid, box "
                     "arithmetic, and the final Concat of pixel boxes (0..640) with scores (0..1), where one "
                     "INT8 scale rounds every score to 0")

    def head(self, model: Any) -> Head:
        return find_head(model)

    def output_deltas(self, ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
        return output_deltas(ref, got)

    def accuracy(self, outputs: dict[str, np.ndarray], labels: Any) -> dict[str, float]:
        return detection_accuracy(first_output(outputs), labels)

    def check_labels(self, labels: Any, count: int, source: str) -> BoxLabels | None:
        """Per-image boxes and classes; labels holding no box at all are unlabelled data (mAP against
        no boxes would read 100 or 0 whatever the model does)."""
        try:
            boxes = as_box_labels(labels)
        except DataError as exc:
            raise DataError(f"{source}: {exc}") from None
        if len(boxes) != count:
            raise DataError(f"{source}: {count} images but box labels for {len(boxes)}")
        if boxes.count == 0:
            info(f"{source}: the labels hold no boxes: treated as unlabelled data (agreement with FP32 only)")
            return None
        return boxes

    def reference_warnings(self, ref_outputs: dict[str, np.ndarray], labels: Any = None) -> list[str]:
        out = super().reference_warnings(ref_outputs, labels)
        y = first_output(ref_outputs)
        if out or not _is_detection(y):
            return out
        boxes = reference_boxes(y).count
        if boxes == 0:
            out.append(f"no detection scores {AGREE_CONF} or more on any of {len(y)} images: agreement "
                       "with FP32 cannot fail (untrained weights, or inputs the model was not made for)")
        elif boxes < MIN_REFERENCE_BOXES:
            out.append(f"agreement rests on only {boxes} FP32 box{'es' if boxes > 1 else ''} (score >= "
                       f"{AGREE_CONF}) in {len(y)} images: too few to mean anything (at least "
                       f"{MIN_REFERENCE_BOXES}); evaluate on more images")
        elif labels is not None:
            fp32_map = detection_accuracy(y, labels)["map"]
            if fp32_map < 1.0:
                out.append(f"the FP32 reference has mAP@0.5:0.95 {fp32_map:.2f}%: untrained weights, or labels "
                           "whose boxes are not in the model input's pixels")
        return out

    labelled_gates = ("max_map_drop", "min_map")

    def gate_values(self, outputs: dict[str, dict[str, float]],
                    accuracy: dict[str, float] | None) -> dict[str, Callable[[], float]]:
        first = first_output(outputs)
        return {"max_map_drop": lambda: -accuracy["map_delta"],
                "min_map": lambda: accuracy["map"],
                "min_agreement": lambda: output_value(first, "agreement", "min_agreement",
                                                      "a [N, 4 + classes, anchors] detection output"),
                "max_abs_error": lambda: max_abs_error(outputs)}

    def summary(self, outputs: dict[str, dict[str, float]], accuracy: dict[str, float] | None) -> str:
        first = first_output(outputs)
        acc = (f"mAP50-95 {accuracy['map']:.2f}% ({accuracy['map_delta']:+.2f} pts), mAP50 {accuracy['map50']:.2f}%"
               if accuracy else "no labels")
        agree, boxes = first.get("agreement"), first.get("reference_boxes")
        on = f" on {boxes:.0f} FP32 boxes" if boxes is not None else ""
        return (f"{acc}, score cosine {first['cosine']:.5f}"
                + (f", agreement {agree:.2f}%{on} (box mAP vs FP32's detections)" if agree is not None else ""))

    def row_values(self, outputs: dict[str, dict[str, float]], accuracy: dict[str, float] | None) -> dict[str, Any]:
        first = first_output(outputs)
        acc = accuracy or {}
        return {"map": acc.get("map"), "map_delta": acc.get("map_delta"), "map50": acc.get("map50"),
                "agreement": first.get("agreement"), "reference_boxes": first.get("reference_boxes"),
                "cosine": first.get("cosine"),
                "max_abs_error": max_abs_error(outputs)}
