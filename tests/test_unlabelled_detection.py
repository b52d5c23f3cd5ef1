"""Detection without labels: an image folder or a COCO file with no annotations; agreement with FP32
as the metric, the FP32 boxes it rests on, NOT MEANINGFUL when they are too few, ``--strict``;
and a broken INT8 detector failing the default gates.

The model and images are tests/helpers/detectors.py's square detector (a fixed-weight detector
in the Ultralytics layout that finds coloured 16x16 squares exactly) and its PNGs of mixed sizes.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from optim.errors import DataError
from optim.tasks import get_task
from tests.helpers.cli import invoke
from tests.helpers.detectors import IMAGES, SIZE, coco_spec, export, write_data

SQUARES = sum(len(s) for _, s in IMAGES)


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory):
    """model.onnx; images/ (flat, mixed sizes); ann.json (labelled); empty.json (no annotations, no categories);
    and INT8 for ONNX Runtime with and without the head kept back."""
    root = tmp_path_factory.mktemp("unlabelled")
    export(root / "model.onnx")
    folder, ann = write_data(root)
    coco = json.loads(ann.read_text())
    (root / "empty.json").write_text(json.dumps({"images": coco["images"]}))
    (root / "empty.yaml").write_text("kind: coco\npath: images\nannotations: empty.json\n")
    for keep in ("--keep-head", "--no-keep-head"):
        out = root / f"model.int8{keep.removeprefix('-')}.onnx"  # model.int8-keep-head.onnx, ...
        code, text, exc = invoke("quantize", root / "model.onnx", "--precision", "int8", "--target", "onnxruntime",
                                 "--task", "detection", "--calib", folder, "--method", "max", keep, "-o", out)
        assert code == 0 and exc is None, (text, exc)
    return root


def test_an_image_folder_is_letterboxed_for_detection(unlabelled):
    from optim.data import prepare
    from optim.data.loaders import load_dataset
    from optim.settings import DataSpec, InputSpec, Preprocess

    folder = DataSpec(kind="folder", path=unlabelled / "images")
    ds = load_dataset(folder, (3, SIZE, SIZE), task=get_task("detection"))
    coco = load_dataset(coco_spec(unlabelled), (3, SIZE, SIZE))
    assert ds.labels is None and "letterboxed to 64x64" in ds.source
    np.testing.assert_array_equal(ds.images, coco.images)  # the same pixels the COCO kind gives (file order)
    x, y, _ = prepare(folder, Preprocess(scale=1 / 255), InputSpec(name="images", shape=(3, SIZE, SIZE)), 4,
                      task=get_task("detection"))
    assert x.shape == (4, 3, SIZE, SIZE) and y is None
    with pytest.raises(DataError, match="samples have shape"):  # without the letterbox: the old error
        prepare(folder, Preprocess(), InputSpec(name="images", shape=(3, SIZE, SIZE)))


def test_detection_refuses_a_folder_of_class_folders(tmp_path):
    from optim.data.loaders import load_dataset
    from optim.settings import DataSpec

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
    with pytest.raises(DataError, match="flat folder of images .* or kind: coco") as e:
        load_dataset(DataSpec(kind="folder", path=tmp_path), (3, SIZE, SIZE), task=get_task("detection"))
    assert "\n" not in str(e.value)


def test_no_annotations_means_no_labels(unlabelled, tmp_path):
    from optim.data.loaders import load_dataset
    from optim.settings import DataSpec
    from optim.tasks.detect_ops import BoxLabels

    spec = DataSpec(kind="coco", path=unlabelled / "images", annotations=unlabelled / "empty.json")
    ds = load_dataset(spec, (3, SIZE, SIZE))
    assert ds.labels is None and "no annotations" in ds.source and len(ds) == len(IMAGES)
    # an npz whose box arrays hold no box at all is unlabelled too (mAP would read 100 or 0 regardless)
    np.savez(tmp_path / "d.npz", images=ds.images, **{k: v for k, v in zip(
        ("boxes", "classes", "image_index"), (np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                                              np.zeros(0, np.int64)))})
    assert load_dataset(DataSpec(kind="npz", path=tmp_path / "d.npz"), (3, SIZE, SIZE)).labels is None
    assert BoxLabels.from_flat(np.zeros((0, 4)), np.zeros(0), np.zeros(0), 2).count == 0


def _agreement(text: str) -> tuple[float, int]:
    m = re.search(r"agreement (\d+\.\d+)% on (\d+) FP32 boxes", text)
    assert m, text
    return float(m[1]), int(m[2])


@pytest.mark.parametrize("data", ["empty.yaml", "images"])
def test_check_without_labels_reports_agreement_and_its_boxes(unlabelled, data):
    code, text, exc = invoke("check", unlabelled / "model.int8-keep-head.onnx", "--reference", unlabelled / "model.onnx",
                             "--data", unlabelled / data, "--task", "detection")
    assert code == 0 and exc is None, (text, exc)
    agreement, boxes = _agreement(text)
    assert boxes == SQUARES and agreement > 90, text  # FP32 finds every square; INT8 with its head kept, too
    assert "no labels" in text and "task accuracy on" not in text and "max_map_drop" not in text
    assert "gate min_agreement passed" in text and "NOT MEANINGFUL" not in text
    code, text, exc = invoke("check", unlabelled / "model.int8-keep-head.onnx", "--reference", unlabelled / "model.onnx",
                             "--data", unlabelled / data, "--task", "detection", "--max-map-drop", "1")
    assert isinstance(exc, DataError) and "needs labelled evaluation data" in str(exc), (text, exc)


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """The bundled trained detector exported at 160 with its node names stripped of their modules
    (``Concat_211``: the raw output comes from a node that names no head module, as in exports whose
    final Concat is top-level)."""
    import onnx
    import torch

    from optim.sources import load_model

    root = tmp_path_factory.mktemp("fashion")
    model = load_model("bundled:fashion_detector").module.eval()
    torch.onnx.export(model, (torch.zeros(1, 3, 160, 160),), str(root / "named.onnx"), dynamo=False, opset_version=17,
                      input_names=["images"], output_names=["output0"], dynamic_axes={"images": {0: "batch"}})
    m = onnx.load(root / "named.onnx")
    for i, n in enumerate(m.graph.node):
        n.name = f"{n.op_type}_{i}"
    onnx.save(m, root / "model.onnx")
    return root


@pytest.mark.slow  # exports and quantizes a corpus detector, optim check
@pytest.mark.parametrize("keep", ["--keep-head", "--no-keep-head"])
def test_keep_head_by_structure_and_a_broken_int8_detector(fashion, keep):
    """keep_head finds the decode by the graph's structure and says so in optim quantize; the INT8
    model keeps FP32's detections. With the head quantized (--no-keep-head), one uint8 scale on the
    Concat of pixel boxes (0..160) and scores (0..1) leaves a handful of score values: agreement
    collapses and the default gates (min_agreement 75) fail it with exit 3, without labels."""
    out = fashion / f"int8{keep}.onnx"
    code, text, exc = invoke("quantize", fashion / "model.onnx", "--precision", "int8", "--target", "onnxruntime",
                             "--task", "detection", "--calib", "scenes:32", "--method", "max", keep, "-o", out)
    assert code == 0 and exc is None, (text, exc)
    by_structure = re.search(r"warning: task detection: keep_head: the raw output comes from 'Concat_\d+', which "
                             r"names no head module: kept the (\d+) nodes between the last convolutions and the "
                             r"output by the graph's structure \((.*)\)", " ".join(text.split()))
    assert bool(by_structure) == (keep == "--keep-head"), text
    assert not by_structure or {"Softmax", "Sigmoid", "Concat", "Conv"} <= set(by_structure[2].split(", "))
    code, text, exc = invoke("check", out, "--reference", fashion / "model.onnx", "--data", "scenes:64",
                             "--task", "detection", "--min-map", "0")  # scenes have labels: no mAP gate but 0
    agreement, boxes = _agreement(text)
    assert boxes >= 100, text
    if keep == "--keep-head":
        assert code == 0 and agreement > 90, text
    else:
        assert agreement < 60, text
        assert type(exc).__name__ == "GateError" and exc.exit_code == 3 and "min_agreement" in str(exc), (text, exc)


def test_too_few_boxes_is_not_meaningful_and_strict_fails_it(unlabelled, tmp_path):
    few = tmp_path / "few"
    few.mkdir()
    for f in sorted((unlabelled / "images").iterdir())[:4]:  # 4 images, 8 squares: under 20 boxes
        shutil.copy(f, few / f.name)
    args = ("check", unlabelled / "model.int8-keep-head.onnx", "--reference", unlabelled / "model.onnx",
            "--data", few, "--task", "detection")
    code, text, exc = invoke(*args)
    assert code == 0 and exc is None, (text, exc)
    assert _agreement(text)[1] == 8
    assert "NOT MEANINGFUL: agreement rests on only 8 FP32 boxes" in text
    assert "gates prove nothing on this data; --strict makes this exit 3" in text
    code, text, exc = invoke(*args, "--strict")
    assert type(exc).__name__ == "GateError" and exc.exit_code == 3 and "NOT MEANINGFUL" in str(exc), (text, exc)


RECIPE = """
name: unlabelled_yolo
task: detection
model: {{source: "onnx:{model}"}}
input: {{name: images, shape: [3, 64, 64], batch: {{min: 1, opt: 1, max: 16}}}}
preprocess: {{scale: 0.00392156862745098}}
calibration: {{data: {{kind: folder, path: images}}, samples: 10}}
evaluation: {{data: {{kind: {kind}}}}}
quantize: {{method: max}}
precisions: [fp32, {{precision: int8, target: onnxruntime}}]
bench: {{batch_sizes: [1], warmup: 1, iterations: 2}}
backends: [onnxruntime]
build: {{extra_targets: []}}
"""


@pytest.mark.slow  # an optim run
def test_run_on_an_unlabelled_folder(unlabelled, tmp_path):
    """optim run with an image folder as evaluation data: agreement and its boxes in the report, mAP
    "no labels"; with 4 images (8 boxes) the rows are NOT MEANINGFUL, said plainly, and --strict fails."""
    recipe = unlabelled / "unlabelled.yaml"
    recipe.write_text(RECIPE.format(model="model.onnx", kind="folder, path: images"))
    code, text, exc = invoke("run", recipe, "--out-root", tmp_path)
    assert code == 0 and exc is None, (text[-3000:], exc)
    report = json.loads((tmp_path / "unlabelled_yolo" / "report.json").read_text())
    assert report["accuracy_meaningful"] is False and "has no labels" in report["notes"][0]
    rows = {r["precision"]: r for r in report["rows"]}
    for row in rows.values():
        assert row["accuracy"]["map"] is None and row["accuracy"]["reference_boxes"] == SQUARES, row
        assert row["gates"].startswith("passed") and not row["notes"], row
    assert rows["int8"]["accuracy"]["agreement"] > 90
    md = (tmp_path / "unlabelled_yolo" / "report.md").read_text()
    assert "no labels" in md and "FP32 boxes" in md
    code, text, exc = invoke("run", recipe, "--out-root", tmp_path, "--eval-samples", "4")
    assert code == 0 and exc is None, (text[-3000:], exc)
    assert ("NOT MEANINGFUL: 2 of 2 checks: their gates cannot tell a good entry from a broken one (agreement "
            "rests on only 8 FP32 boxes") in " ".join(text.split()), text[-2000:]
    code, text, exc = invoke("run", recipe, "--out-root", tmp_path, "--eval-samples", "4", "--strict")
    assert type(exc).__name__ == "GateError" and exc.exit_code == 3 and "NOT MEANINGFUL" in str(exc), (text[-2000:], exc)
