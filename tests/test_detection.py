"""Detection: NumPy decode + NMS, COCO mAP on hand-made boxes, the detection task, the detector."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from optim.errors import DataError
from optim.tasks import get_task, task_names
from optim.tasks.detect_ops import (
    BoxLabels,
    Detections,
    as_box_labels,
    box_iou,
    coco_map,
    decode,
    nms,
)
from optim.tasks.detection import AGREE_CONF, Gates

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def dets(boxes, scores, classes) -> Detections:
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
                      np.asarray(classes, np.int64))


# --------------------------------------------------------------------------- mAP by hand

def test_map_two_boxes_one_of_them_loose():
    """1 image, 2 GT boxes; detections with IoU 0.72 (score 0.9) and 1.0 (score 0.8).
    IoU thresholds 0.50-0.70: both match, AP 1. 0.75-0.95: the 0.9 box is a false positive
    ranked first, then the exact box: precision 0.5 up to recall 0.5, so AP = 0.5 * 51/101
    (COCO's 101 recall points 0.00..0.50). mAP = (5 * 1 + 5 * 0.5 * 51/101) / 10."""
    gt = BoxLabels([[[0, 0, 100, 100], [200, 200, 300, 300]]], [[0, 0]])
    m = coco_map(gt, [dets([[0, 0, 100, 72], [200, 200, 300, 300]], [0.9, 0.8], [0, 0])], 10)
    assert m["map"] == pytest.approx(100 * (5 + 5 * 0.5 * 51 / 101) / 10, abs=1e-4)  # 62.6238
    assert m["map50"] == pytest.approx(100.0)


def test_map_two_classes_false_positive_and_loose_box():
    """Class 0: a false positive (0.95) ranked above an exact box (0.9): precision 0.5 at recall 1,
    AP 0.5 at every threshold. Class 1: one box with IoU 0.62: AP 1 at 0.50/0.55/0.60, else 0 -> 0.3.
    mAP = (0.5 + 0.3) / 2 = 0.4; mAP50 = (0.5 + 1) / 2 = 0.75. A detection of class 5, which
    has no ground truth, is left out of the mean."""
    gt = BoxLabels([[[0, 0, 100, 100], [200, 200, 300, 300]]], [[0, 1]])
    d = dets([[400, 400, 450, 450], [0, 0, 100, 100], [200, 200, 300, 262]], [0.95, 0.9, 0.8], [0, 0, 1])
    assert box_iou(np.array([[200, 200, 300, 262]]), np.array([[200, 200, 300, 300]]))[0, 0] == pytest.approx(0.62)
    m = coco_map(gt, [d], 10)
    assert m["map"] == pytest.approx(40.0, abs=1e-4) and m["map50"] == pytest.approx(75.0, abs=1e-4)
    extra = dets([*d.boxes, [10, 300, 60, 350]], [*d.scores, 0.99], [*d.classes, 5])
    assert coco_map(gt, [extra], 10) == pytest.approx(m)


def test_map_perfect_missing_and_empty():
    gt = BoxLabels([[[10, 10, 50, 60]], [[5, 5, 30, 30], [60, 60, 90, 100]]], [[3], [1, 2]])
    perfect = [dets(b, np.ones(len(b)), c) for b, c in zip(gt.boxes, gt.classes)]
    assert coco_map(gt, perfect) == {"map": pytest.approx(100.0), "map50": pytest.approx(100.0)}
    assert coco_map(gt, [Detections(), Detections()]) == {"map": 0.0, "map50": 0.0}
    none = BoxLabels([np.zeros((0, 4))], [np.zeros(0)])
    assert coco_map(none, [Detections()])["map"] == 100.0
    assert coco_map(none, [dets([[0, 0, 5, 5]], [0.5], [0])])["map"] == 0.0
    with pytest.raises(DataError, match="images"):
        coco_map(gt, perfect[:1])


# --------------------------------------------------------------------------- decode + NMS

def _raw(anchors: list[tuple[tuple, tuple]]) -> np.ndarray:
    """[1, 4 + nc, A] from (xywh, class scores) per anchor."""
    return np.array([[*xywh, *s] for xywh, s in anchors], np.float32).T[None]


RAW = _raw([((50, 50, 40, 40), (0.9, 0.1, 0.0)),   # kept, class 0
            ((52, 50, 40, 40), (0.8, 0.0, 0.0)),   # IoU 0.905 with the first, same class: suppressed
            ((52, 50, 40, 40), (0.0, 0.7, 0.0)),   # same place, class 1: kept (class-aware NMS)
            ((120, 120, 20, 20), (0.0, 0.0, 0.0005)),  # below conf
            ((120, 120, 20, 20), (0.0, 0.0, 0.5)),
            ((10, 10, 8, 8), (0.3, 0.35, 0.0))])


def test_decode_class_aware_nms_conf_and_max_det():
    (d,) = decode(RAW)
    np.testing.assert_allclose(d.scores, [0.9, 0.7, 0.5, 0.35])
    assert d.classes.tolist() == [0, 1, 2, 1]
    np.testing.assert_allclose(d.boxes[0], [30, 30, 70, 70])
    np.testing.assert_allclose(d.boxes[2], [110, 110, 130, 130])
    assert len(decode(RAW, max_det=2)[0]) == 2
    assert decode(RAW, iou=0.95)[0].scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.5, 0.35])
    assert decode(RAW, conf=0.6)[0].classes.tolist() == [0, 1]
    multi = decode(RAW, multi_label=True)[0]
    # every class over conf: the second box of anchor 5 (class 0, 0.3) appears; anchor 0's class-1
    # box (0.1) is suppressed by anchor 2's (0.7) in class 1
    assert multi.scores.tolist() == pytest.approx([0.9, 0.7, 0.5, 0.35, 0.3])
    assert multi.classes.tolist() == [0, 1, 2, 1, 0]
    assert len(decode(np.concatenate([RAW, RAW * 0]))) == 2 and len(decode(RAW * 0)[0]) == 0
    with pytest.raises(DataError, match="4 \\+ classes"):
        decode(np.zeros((2, 10)))


def test_nms_keeps_highest_and_limits():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    assert nms(boxes, np.array([0.5, 0.9, 0.3]), 0.5).tolist() == [1, 2]
    assert nms(boxes, np.array([0.5, 0.9, 0.3]), 0.5, limit=1).tolist() == [1]
    assert nms(boxes[:0], np.zeros(0), 0.5).tolist() == []


def test_box_labels_formats():
    rows = np.array([[0, 2, 1, 1, 5, 5], [1, 4, 2, 2, 9, 9], [1, 0, 0, 0, 3, 3]], np.float32)
    lab = as_box_labels(rows)
    assert len(lab) == 2 and lab.count == 3 and lab.classes[1].tolist() == [4, 0]
    assert len(lab[:1]) == 1 and lab[:1].classes[0].tolist() == [2]
    assert as_box_labels([{"boxes": [[0, 0, 1, 1]], "classes": [1]}]).count == 1
    coco = {"images": [{"id": 7}, {"id": 9}], "annotations": [{"image_id": 9, "category_id": 3, "bbox": [1, 2, 3, 4]}],
            "categories": [{"id": 1}, {"id": 2}, {"id": 3}]}
    lab = BoxLabels.from_coco(coco)
    assert lab.boxes[1].tolist() == [[1, 2, 4, 6]] and lab.classes[1].tolist() == [2] and len(lab.boxes[0]) == 0
    coco["categories"] = [{"id": 90}, {"id": 3}, {"id": 11}]  # COCO-style gaps: sorted ids are the classes
    assert BoxLabels.from_coco(coco).classes[1].tolist() == [0]
    with pytest.raises(DataError):
        as_box_labels(np.zeros(4, np.int64))
    with pytest.raises(DataError, match="boxes but"):
        BoxLabels([[[0, 0, 1, 1]]], [[0, 1]])


# --------------------------------------------------------------------------- the task

NC = 4


def _outputs(labels: BoxLabels, shift: float = 0.0, drop_last: bool = False, seed: int = 0) -> np.ndarray:
    """A raw [N, 4 + NC, 60] output that detects ``labels`` (one confident anchor per box) among
    weak background anchors; ``shift`` moves the first box of each image by that many pixels."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(labels), 4 + NC, 60), np.float32)
    out[:, :2] = rng.uniform(20, 140, (len(labels), 2, 60))
    out[:, 2:4] = rng.uniform(5, 20, (len(labels), 2, 60))
    out[:, 4:] = rng.uniform(0.0, 0.05, (len(labels), NC, 60))
    for i, (b, c) in enumerate(zip(labels.boxes, labels.classes)):
        for j, (box, cls) in enumerate(zip(b, c)):
            if drop_last and j == len(b) - 1:
                continue
            x1, y1, x2, y2 = box + (shift if j == 0 else 0.0)
            out[i, :4, j] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
            out[i, 4 + cls, j] = 0.9 - 0.01 * j
    return out


LABELS = BoxLabels([[[10, 10, 50, 60], [80, 90, 120, 150]], [[5, 5, 40, 40]], [[60, 20, 100, 70], [20, 100, 70, 150]]],
                   [[0, 1], [2], [3, 0]])


def test_task_registered_with_columns():
    assert "detection" in task_names() and "classification" in task_names()
    task = get_task("detection")
    assert task.gates_model is Gates and task.budget_metrics == ("map", "agreement")
    assert [c.header for c in task.columns] == ["mAP50-95 %", "Δ mAP (pts)", "mAP50 %", "agreement %", "FP32 boxes"]
    assert task.column(task.headline).needs_labels and not task.column(task.agreement).needs_labels
    assert task.resolve_metric("auto", False) == "agreement" and task.resolve_metric("auto", True) == "map"


def test_accuracy_compare_agreement_and_gates():
    task = get_task("detection")
    ref = {"out": _outputs(LABELS)}
    got = {"out": _outputs(LABELS, shift=6.0)}
    acc = task.compare(ref, got, LABELS)
    assert acc["reference_map"] == pytest.approx(100.0) and acc["reference_map50"] == pytest.approx(100.0)
    assert acc["map"] < 100.0 and acc["map_delta"] == pytest.approx(acc["map"] - 100.0)
    same = task.output_deltas(ref["out"], ref["out"])
    assert same["agreement"] == pytest.approx(100.0) and same["cosine"] == pytest.approx(1.0)
    assert same["max_abs_error"] == 0.0 and same["box_error"] == 0.0
    moved = task.output_deltas(ref["out"], got["out"])
    assert 20.0 < moved["agreement"] < 100.0 and moved["box_error"] > 0.0
    missed = task.output_deltas(ref["out"], _outputs(LABELS, drop_last=True))
    assert missed["agreement"] < 100.0 and missed["agreement50"] < 100.0
    outputs = {"out": moved}
    gates = Gates(max_map_drop=1.0, min_map=30.0, min_agreement=99.0, max_abs_error=100.0)
    assert 30.0 < acc["map"] < 60.0
    res = {g.gate: g.passed for g in task.apply_gates(outputs, acc, gates)}
    assert res == {"max_map_drop": False, "min_map": True, "min_agreement": False, "max_abs_error": True}
    with pytest.raises(DataError, match="labelled"):
        task.apply_gates(outputs, None, Gates(min_map=1.0))
    assert [g.gate for g in task.apply_gates(outputs, None, Gates(min_agreement=1.0))] == ["min_agreement"]
    with pytest.raises(ValueError, match="max_top1_drop"):
        Gates(max_top1_drop=1.0)
    row = task.row_values(outputs, acc)
    assert {c.key for c in task.columns} <= set(row) and row["agreement"] == moved["agreement"]
    assert "mAP50-95" in task.summary(outputs, acc) and "agreement" in task.summary(outputs, acc)
    assert task.summary(outputs, None).startswith("no labels")


def test_fidelity_scores_against_labels_and_fp32():
    task = get_task("detection")
    ref, got = {"o": _outputs(LABELS)}, {"o": _outputs(LABELS, shift=6.0)}
    f = task.fidelity(ref, got, LABELS, "map")
    assert f.score == pytest.approx(task.accuracy(got, LABELS)["map"]) and f.drop == pytest.approx(100.0 - f.score)
    f = task.fidelity(ref, got, None, "agreement")
    assert f.score is None and f.drop == pytest.approx(100.0 - f.agreement) and f.cosine == pytest.approx(1.0)  # same scores
    assert task.fidelity(ref, ref, None, "agreement").drop == pytest.approx(0.0)


def test_reference_warnings_and_label_checks():
    task = get_task("detection")
    many = BoxLabels(LABELS.boxes * 4, LABELS.classes * 4)  # 20 FP32 boxes: enough
    assert task.reference_warnings({"o": _outputs(many)}, many) == []
    (few,) = task.reference_warnings({"o": _outputs(LABELS)}, LABELS)  # 5 boxes in 3 images
    assert few.startswith("agreement rests on only 5 FP32 boxes (score >= 0.25) in 3 images: too few")
    assert task.output_deltas(_outputs(LABELS), _outputs(LABELS))["reference_boxes"] == 5
    quiet = _outputs(LABELS)
    quiet[:, 4:] = np.minimum(quiet[:, 4:], AGREE_CONF / 2)
    (w,) = task.reference_warnings({"o": quiet})
    assert "no detection" in w
    wrong = BoxLabels([b + 200 for b in many.boxes], many.classes)
    assert "mAP@0.5:0.95 0.00%" in task.reference_warnings({"o": _outputs(many)}, wrong)[0]
    with pytest.raises(DataError, match="classes"):
        task.accuracy({"o": _outputs(LABELS)}, BoxLabels(LABELS.boxes, [c + 4 for c in LABELS.classes]))
    with pytest.raises(DataError, match="labels for"):
        task.accuracy({"o": _outputs(LABELS)}, LABELS[:2])
    with pytest.raises(DataError, match="shape"):
        task.output_deltas(np.zeros((1, 8, 60)), np.zeros((1, 8, 61)))


# --------------------------------------------------------------------------- the detector

@pytest.fixture(scope="module")
def detector():
    import torch

    from optim.sources.detector import FashionDetector

    torch.manual_seed(0)
    return FashionDetector().eval()


def test_detector_layout_and_sizes(detector):
    import torch

    from optim.sources.detector import FashionDetector

    assert 2.9e6 < sum(p.numel() for p in detector.parameters()) < 3.1e6
    assert 10.5e6 < sum(p.numel() for p in FashionDetector(variant="s").parameters()) < 11.5e6
    with torch.no_grad():
        y = detector(torch.rand(2, 3, 160, 160))
        assert y.shape == (2, 14, 525)
        assert ((y[:, 4:] >= 0) & (y[:, 4:] <= 1)).all() and (y[:, 2:4] > 0).all()
        assert detector(torch.rand(1, 3, 640, 640)).shape == (1, 14, 8400)
        assert detector(torch.rand(1, 3, 1280, 1280)).shape == (1, 14, 33600)
    with pytest.raises(ValueError):
        FashionDetector(variant="x")


@pytest.mark.slow  # exports the detector
def test_detector_exports_to_onnx_with_dynamic_batch(tmp_path, detector):
    from optim.backends.onnxruntime import OrtRunner
    from optim.settings import ExportSettings, InputSpec
    from optim.sources import LoadedModel
    from optim.stages.export import onnx_from_torch

    out = tmp_path / "det.onnx"
    rep = onnx_from_torch(LoadedModel(detector, "bundled:fashion_detector", None), InputSpec(shape=(3, 160, 160)),
                          ExportSettings(output_names=("output0",)), out)
    assert rep.max_abs_error < 1e-2
    x = np.random.default_rng(0).uniform(0, 1, (3, 3, 160, 160)).astype(np.float32)
    with OrtRunner(out) as r:
        y = r.infer({"input": x})["output0"]
    assert y.shape == (3, 14, 525)


def test_bundled_source_registered():
    from optim.sources import BUNDLED, WEIGHTS_DIR, load_model

    assert BUNDLED["fashion_detector"][0] == "optim.sources.detector:FashionDetector"
    weights = WEIGHTS_DIR / BUNDLED["fashion_detector"][1]
    if not weights.is_file():
        pytest.skip(f"{weights} not there yet (training)")
    lm = load_model("bundled:fashion_detector")
    assert lm.trained and lm.module.nc == 10
    record = json.loads((WEIGHTS_DIR / "fashion_detector.json").read_text())
    assert {"seed", "epochs", "train_seconds", "eval_map50_95"} <= set(record)


# --------------------------------------------------------------------------- training

def _train_module():
    spec = importlib.util.spec_from_file_location("train_detector", REPO / "scripts" / "train_detector.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_task_aligned_assignment():
    import torch

    from optim.sources.detector import make_anchors

    tr = _train_module()
    points, strides = make_anchors([(20, 20), (10, 10), (5, 5)])
    centers = points * strides
    a = len(centers)
    gt = torch.tensor([[[20.0, 20.0, 60.0, 70.0], [0, 0, 0, 0]]])
    pboxes = torch.cat((centers - 12, centers + 12), -1)[None]
    scores = torch.full((1, a, 10), 0.1)
    tboxes, tscores, fg = tr.assign(scores, pboxes, centers, gt, torch.tensor([[3, -1]]), torch.tensor([[True, False]]))
    assert 1 <= int(fg.sum()) <= 10
    c = centers[fg[0]]
    assert ((c[:, 0] > 20) & (c[:, 0] < 60) & (c[:, 1] > 20) & (c[:, 1] < 70)).all()
    assert torch.equal(tboxes[fg], gt[0, :1].expand(int(fg.sum()), 4))
    assert (tscores[fg][:, 3] > 0).all() and tscores[~fg].sum() == 0 and tscores[..., :3].sum() == 0
    assert tscores.max() <= 1.0


@pytest.mark.slow  # trains the detector
def test_detection_loss_learns_one_batch():
    import torch

    from optim.data.scenes import make_scenes
    from optim.sources.detector import FashionDetector

    tr = _train_module()
    torch.manual_seed(0)
    s = make_scenes("train", 4, seed=0)
    model = FashionDetector()
    model.head.init_bias(160)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    gb, gc, gm = tr.batch_targets(s.boxes, s.classes)
    x = tr.to_input(s.images)
    losses = []
    for _ in range(6):
        loss, parts = tr.detection_loss(model, x, gb, gc, gm)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        assert set(parts) == {"box", "cls", "dfl"} and all(np.isfinite(v) for v in parts.values())
    assert losses[-1] < losses[0]


@pytest.mark.slow  # trains the detector
def test_training_smoke_run(tmp_path):
    """About 4 s on an idle 2-core machine (one thread; 2 epochs of 64 scenes, 32 evaluation scenes)."""
    from optim.sources import load_model

    meta = _train_module().main(["--smoke", "--out", str(tmp_path)])
    assert meta["epochs"] == 2 and meta["steps"] == 4 and 0.0 <= meta["eval_map50_95"] <= 100.0
    assert json.loads((tmp_path / "fashion_detector.json").read_text())["seed"] == 0
    lm = load_model("bundled:fashion_detector", tmp_path / "fashion_detector.safetensors")
    assert lm.trained


@pytest.mark.slow  # exports the detector
def test_decode_nodes_name_the_exported_head(tmp_path, detector):
    """DECODE_NODES (kept out of ORT INT8) match the exported decode and none of the convolutions."""
    import re

    import onnx

    from optim.settings import ExportSettings, InputSpec
    from optim.sources import LoadedModel
    from optim.sources.detector import DECODE_NODES
    from optim.stages.export import onnx_from_torch

    out = tmp_path / "det.onnx"
    onnx_from_torch(LoadedModel(detector, "bundled:fashion_detector", None), InputSpec(shape=(3, 160, 160)),
                    ExportSettings(verify_batches=(1,)), out)
    graph = onnx.load(str(out)).graph
    hit = [n for n in graph.node if any(re.fullmatch(p, n.name) for p in DECODE_NODES)]
    assert {"Softmax", "Sigmoid", "Concat"} <= {n.op_type for n in hit}
    assert [n.name for n in hit if n.op_type == "Conv"] == ["/head/dfl/conv/Conv"]  # the fixed DFL integral
    (last,) = [n for n in graph.node if graph.output[0].name in n.output]
    assert last in hit and last.op_type == "Concat"
