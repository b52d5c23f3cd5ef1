"""Detection in NumPy: decode + NMS of the raw ``[N, 4 + nc, A]`` output, box labels, COCO mAP.

``decode`` is the reference post-processing for YOLOv8-layout outputs (``cx, cy, w, h`` in
input pixels, then per-class sigmoid scores): per anchor its best class (or every class
over ``conf`` with ``multi_label``), a confidence threshold, class-aware greedy NMS at an
IoU threshold, and at most ``max_det`` boxes per image, highest score first.

``coco_map`` scores detections against ground truth with faster-coco-eval (Apache-2.0), a
C++ reimplementation of pycocotools' COCOeval: mAP@0.5:0.95 (IoU 0.50, 0.55 ... 0.95,
101-point interpolated precision, at most 100 detections per image, classes without
ground truth left out of the mean) and mAP@0.5, both in percent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optim.errors import DataError

CONF = 0.001  # scoring detections for mAP keeps low-confidence ones (as COCO evaluation expects)
IOU = 0.7
MAX_DET = 100  # COCO's maxDets
MAX_NMS = 30000  # candidates per image kept for NMS, best first


@dataclass
class Detections:
    """One image's detections: boxes (k, 4) xyxy in input pixels, scores (k,), classes (k,)."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)

    def above(self, conf: float) -> Detections:
        keep = self.scores >= conf
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep])


@dataclass
class BoxLabels:
    """Ground truth per image: boxes (k, 4) xyxy in the model input's pixels and classes (k,).

    Sliceable like an array of labels (``labels[:n]``), so a data set can be cut to its head."""

    boxes: list[np.ndarray]
    classes: list[np.ndarray]

    def __post_init__(self) -> None:
        if len(self.boxes) != len(self.classes):
            raise DataError(f"{len(self.boxes)} images with boxes but {len(self.classes)} with classes")
        self.boxes = [np.asarray(b, np.float32).reshape(-1, 4) for b in self.boxes]
        self.classes = [np.asarray(c).astype(np.int64).reshape(-1) for c in self.classes]
        for i, (b, c) in enumerate(zip(self.boxes, self.classes)):
            if len(b) != len(c):
                raise DataError(f"image {i}: {len(b)} boxes but {len(c)} classes")

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, key: slice) -> BoxLabels:
        if not isinstance(key, slice):
            raise TypeError("BoxLabels are indexed with slices (labels[a:b])")
        return BoxLabels(self.boxes[key], self.classes[key])

    @property
    def count(self) -> int:
        return sum(len(b) for b in self.boxes)

    @classmethod
    def from_flat(cls, boxes: np.ndarray, classes: np.ndarray, image_index: np.ndarray, n_images: int) -> BoxLabels:
        """From flat arrays: boxes (M, 4), classes (M,), image_index (M,) in 0..n_images-1."""
        image_index = np.asarray(image_index, np.int64)
        if len(image_index) and (image_index.min() < 0 or image_index.max() >= n_images):
            raise DataError(f"box image indices {image_index.min()}..{image_index.max()} do not fit {n_images} images")
        return cls([np.asarray(boxes)[image_index == i] for i in range(n_images)],
                   [np.asarray(classes)[image_index == i] for i in range(n_images)])

    @classmethod
    def from_coco(cls, coco: dict | str | Path) -> BoxLabels:
        """From COCO annotations (a dict or a JSON file): images in file order; classes 0..nc-1 are the
        sorted category ids (COCO's ids 1..90 have gaps; optim's scenes use k + 1 for class k), as in
        ``optim.data.coco``. Boxes stay in the annotation's pixels (no letterbox)."""
        if not isinstance(coco, dict):
            coco = json.loads(Path(coco).read_text())
        cats = {c: k for k, c in enumerate(sorted({c["id"] for c in coco.get("categories", [])} or
                                                  {a["category_id"] for a in coco.get("annotations", [])}))}
        ids = {im["id"]: i for i, im in enumerate(coco["images"])}
        boxes: list[list] = [[] for _ in ids]
        classes: list[list] = [[] for _ in ids]
        for a in coco.get("annotations", []):
            x, y, w, h = a["bbox"]
            boxes[ids[a["image_id"]]].append([x, y, x + w, y + h])
            classes[ids[a["image_id"]]].append(cats[a["category_id"]])
        return cls(boxes, classes)


def as_box_labels(labels: Any) -> BoxLabels:
    """BoxLabels, an object with ``boxes``/``classes`` lists, a list of {"boxes", "classes"} dicts,
    or an (M, 6) array of ``[image, class, x1, y1, x2, y2]`` rows."""
    if isinstance(labels, BoxLabels):
        return labels
    if isinstance(labels, (list, tuple)) and all(isinstance(d, dict) for d in labels):
        return BoxLabels([d["boxes"] for d in labels], [d["classes"] for d in labels])
    if hasattr(labels, "boxes") and hasattr(labels, "classes"):
        return BoxLabels(list(labels.boxes), list(labels.classes))
    arr = np.asarray(labels)
    if arr.ndim == 2 and arr.shape[1] == 6:
        n = int(arr[:, 0].max()) + 1 if len(arr) else 0
        return BoxLabels.from_flat(arr[:, 2:], arr[:, 1], arr[:, 0].astype(np.int64), n)
    raise DataError("detection labels must be per-image boxes and classes (BoxLabels, a list of "
                    f"{{'boxes', 'classes'}} dicts, or (M, 6) [image, class, x1, y1, x2, y2] rows), "
                    f"not {type(labels).__name__}")


def xywh2xyxy(b: np.ndarray) -> np.ndarray:
    out = np.empty_like(b)
    out[:, :2] = b[:, :2] - b[:, 2:] / 2
    out[:, 2:] = b[:, :2] + b[:, 2:] / 2
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xyxy boxes."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, limit: int | None = None) -> np.ndarray:
    """Greedy NMS: indices of kept boxes, highest score first (at most ``limit``)."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while len(order) and (limit is None or len(keep) < limit):
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        order = rest[box_iou(boxes[i : i + 1], boxes[rest])[0] <= iou]
    return np.asarray(keep, np.int64)


def decode(output: np.ndarray, conf: float = CONF, iou: float = IOU, max_det: int = MAX_DET,
           multi_label: bool = False, max_nms: int = MAX_NMS) -> list[Detections]:
    """Per-image detections from a raw ``[N, 4 + nc, A]`` output (class-aware NMS of the best
    ``max_nms`` candidates above ``conf``; equal scores: lower anchor first)."""
    out = np.asarray(output)
    if out.ndim != 3 or out.shape[1] < 5:
        raise DataError(f"detection output must be [N, 4 + classes, anchors], got shape {list(out.shape)}")
    results = []
    for pred in out.astype(np.float32):
        boxes, scores = xywh2xyxy(pred[:4].T), pred[4:].T  # (A, 4), (A, nc)
        if multi_label:
            a, c = np.nonzero(scores > conf)
            boxes, score, cls = boxes[a], scores[a, c], c
        else:
            cls = scores.argmax(1)
            score = scores[np.arange(len(cls)), cls]
            sel = score > conf
            boxes, score, cls = boxes[sel], score[sel], cls[sel]
        if len(score) > max_nms:
            top = np.argsort(-score, kind="stable")[:max_nms]
            boxes, score, cls = boxes[top], score[top], cls[top]
        # class-aware: shift each class's boxes far apart, then one NMS
        offset = cls[:, None].astype(np.float64) * (float(np.abs(boxes).max(initial=0.0)) * 2 + 4096.0)
        keep = nms(boxes + offset, score, iou, max_det)
        results.append(Detections(boxes[keep].astype(np.float32), score[keep].astype(np.float32),
                                  cls[keep].astype(np.int64)))
    return results


def coco_map(labels: BoxLabels, detections: list[Detections], num_classes: int | None = None) -> dict[str, float]:
    """COCO box mAP@0.5:0.95 (``map``) and mAP@0.5 (``map50``) in percent.

    Without any ground-truth box there is nothing to find: 100 when nothing was detected
    either, else 0."""
    if len(labels) != len(detections):
        raise DataError(f"{len(detections)} images with detections but {len(labels)} with labels")
    if labels.count == 0:
        v = 0.0 if any(len(d) for d in detections) else 100.0
        return {"map": v, "map50": v}
    if not any(len(d) for d in detections):
        return {"map": 0.0, "map50": 0.0}
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError:
        raise DataError("detection mAP needs faster-coco-eval (pip install faster-coco-eval==1.8.0)") from None
    top = max([int(c.max()) for c in labels.classes if len(c)] + [int(d.classes.max()) for d in detections if len(d)])
    nc = max(num_classes or 0, top + 1)
    images, anns, dets = [], [], []
    for i, (b, c) in enumerate(zip(labels.boxes, labels.classes)):
        images.append({"id": i + 1})
        for box, cls in zip(b.astype(np.float64).tolist(), c.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cls + 1,
                         "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
    for i, d in enumerate(detections):
        for box, s, cls in zip(d.boxes.astype(np.float64).tolist(), d.scores.tolist(), d.classes.tolist()):
            dets.append({"image_id": i + 1, "category_id": cls + 1, "score": s,
                         "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    gt = COCO({"images": images, "annotations": anns,
               "categories": [{"id": k + 1, "name": str(k)} for k in range(nc)]})
    ev = COCOeval_faster(gt, gt.loadRes(dets), "bbox", print_function=lambda *a, **k: None)
    ev.params.maxDets = [1, 10, MAX_DET]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return {"map": 100.0 * max(float(ev.stats[0]), 0.0), "map50": 100.0 * max(float(ev.stats[1]), 0.0)}
