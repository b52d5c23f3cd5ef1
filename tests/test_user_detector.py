"""A user's own detector in the Ultralytics/YOLOv8 layout through optim, task detection.

The model (a fixed-weight "square detector") and its COCO data are made in tests/helpers/detectors.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from optim.errors import DataError, ModelError, RecipeError
from tests.helpers.cli import invoke
from tests.helpers.detectors import HEAD, IMAGES, SIZE, coco_spec, export, square_detector, write_data

@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """The user's files: model.onnx, images/, ann.json and a data spec coco.yaml."""
    root = tmp_path_factory.mktemp("user")
    export(root / "model.onnx")
    write_data(root)
    (root / "coco.yaml").write_text("kind: coco\npath: images\nannotations: ann.json\n")
    return root


# -- data ------------------------------------------------------------------------------------

def test_load_coco_letterboxes_and_moves_boxes(user):
    from optim.data.loaders import load_dataset

    ds = load_dataset(coco_spec(user), (3, SIZE, SIZE))
    assert ds.images.shape == (len(IMAGES), SIZE, SIZE, 3) and ds.images.dtype == np.uint8
    assert ds.class_names == ("red", "green", "blue")  # sorted ids 3, 7, 11
    # image 0 is 128x96: r = min(64/96, 64/128) = 1/2 -> 64x48, top (64-48)//2 = 8 px of grey 114.
    # Its green square, COCO [20, 30, 32, 32] -> xyxy [20, 30, 52, 62] -> * 1/2 = [10, 15, 26, 31]
    # -> + (0, 8) = [10, 23, 26, 39]; the red one [80, 10, 32, 32] -> [40, 5, 56, 21] -> [40, 13, 56, 29]
    im = ds.images[0]
    assert (im[:8] == 114).all() and (im[56:] == 114).all() and (im[8:56] != 114).any()
    np.testing.assert_allclose(ds.labels.boxes[0], [[10, 23, 26, 39], [40, 13, 56, 29]])
    assert ds.labels.classes[0].tolist() == [1, 0]  # category 7 -> 1, 3 -> 0 (the crowd box is left out)
    # bilinear 2x downscale: the square's inside keeps its colour, its edge pixels are blended
    assert (im[24:38, 11:25] == (20, 230, 20)).all() and (im[23:39, 10:26, 1] > 150).all()
    assert (im[22, 10:26, 1] < 100).all() and (im[39, 10:26, 1] < 100).all()
    # image 5 is 40x64: r = 1, 12 px left and right; [12, 40, 16, 16] -> [24, 40, 40, 56]
    assert (ds.images[5][:, :12] == 114).all() and (ds.images[5][:, 52:] == 114).all()
    np.testing.assert_allclose(ds.labels.boxes[5][0], [24, 40, 40, 56])
    # image 3 is 32x32, scaled up 2x: [2, 3, 8, 8] -> [4, 6, 20, 22]
    np.testing.assert_allclose(ds.labels.boxes[3][0], [4, 6, 20, 22])
    assert ds.labels.count == sum(len(s) for _, s in IMAGES) and len(ds.labels.boxes[7]) == 0
    assert len(load_dataset(coco_spec(user, count=3), (3, SIZE, SIZE))) == 3


def test_the_model_finds_the_squares(user):
    """FP32 on the letterboxed data: every square found, mAP@0.5:0.95 near 100."""
    from optim.backends.onnxruntime import OrtRunner
    from optim.data import prepare
    from optim.settings import InputSpec, Preprocess
    from optim.tasks import get_task

    x, y, _ = prepare(coco_spec(user), Preprocess(), InputSpec(name="images", shape=(3, SIZE, SIZE)))
    with OrtRunner(user / "model.onnx") as r:
        out = r.infer({"images": x})["output0"]
    assert out.shape == (len(IMAGES), 7, SIZE * SIZE)
    acc = get_task("detection").accuracy({"output0": out}, y)
    assert acc["map"] > 90 and acc["map50"] > 99, acc


@pytest.mark.parametrize("broken, message", [
    ("no_json", "COCO annotations file not found"),
    ("bad_json", "is not valid JSON (line 1"),
    ("no_image", "image file not found"),
    ("unknown_image", "names image id 12345, which is not in 'images'"),
    ("unknown_category", "names category id 4, which is not in 'categories' (ids 3, 7, 11)"),
    ("wrong_size", "but the annotations say 99x64"),
])
def test_coco_errors_are_one_line(tmp_path, broken, message):
    from optim.data.loaders import load_dataset

    folder, ann = write_data(tmp_path)
    coco = json.loads(ann.read_text())
    if broken == "no_json":
        ann.unlink()
    elif broken == "bad_json":
        ann.write_text("{images: [")
    elif broken == "no_image":
        (folder / "img_04.png").unlink()
    elif broken == "unknown_image":
        coco["annotations"][0]["image_id"] = 12345
    elif broken == "unknown_category":
        coco["annotations"][0]["category_id"] = 4
    elif broken == "wrong_size":
        coco["images"][1]["width"] = 99
    if broken not in ("no_json", "bad_json"):
        ann.write_text(json.dumps(coco))
    with pytest.raises(DataError, match=re.escape(message)) as e:
        load_dataset(coco_spec(tmp_path), (3, SIZE, SIZE))
    assert "\n" not in str(e.value)


# -- the commands ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quantized(user):
    """optim quantize, INT8 for ONNX Runtime and for TensorRT (modelopt), calibrated on the COCO images."""
    outs = {}
    for target in ("onnxruntime", "tensorrt"):
        out = user / f"model.int8-{target}.onnx"
        head = ["--exclude-nodes", HEAD] if target == "onnxruntime" else []
        code, text, exc = invoke("quantize", user / "model.onnx", "--precision", "int8", "--target", target,
                                 "--calib", user / "coco.yaml", "--method", "max", "-o", out, *head)
        assert code == 0 and exc is None, (text, exc)
        assert out.is_file() and "Conv/Gemm/MatMul quantized" in text, text
        outs[target] = out
    return outs


@pytest.mark.slow  # quantizes the detector (module fixture quantized)
@pytest.mark.parametrize("target", ["onnxruntime", "tensorrt"])
def test_check_detection_gates(user, quantized, target):
    code, text, exc = invoke("check", quantized[target], "--reference", user / "model.onnx", "--data",
                             user / "coco.yaml", "--task", "detection", "--max-map-drop", "2",
                             "--min-agreement", "90")
    assert code == 0 and exc is None, (text, exc)
    m = re.search(r"map (\d+\.\d+) \(([+-]\d+\.\d+) vs FP32 (\d+\.\d+)\)", text)
    assert m, text
    assert float(m[3]) > 90 and abs(float(m[2])) <= 2, text
    assert "max_map_drop" in text and "min_agreement" in text


@pytest.mark.slow  # quantizes the detector (module fixture quantized)
def test_check_failing_and_foreign_gates(user, quantized):
    code, text, exc = invoke("check", quantized["onnxruntime"], "--reference", user / "model.onnx", "--data",
                             user / "coco.yaml", "--task", "detection", "--min-map", "100.5")
    assert type(exc).__name__ == "GateError" and "min_map" in str(exc), (text, exc)
    code, text, exc = invoke("check", quantized["onnxruntime"], "--reference", user / "model.onnx", "--data",
                             user / "coco.yaml", "--task", "detection", "--max-top1-drop", "1")
    assert type(exc).__name__ == "InputError", (text, exc)
    assert "--max-top1-drop is not a gate of task detection" in str(exc) and "--max-map-drop" in str(exc)
    _, text, exc = invoke("check", quantized["onnxruntime"], "--reference", user / "model.onnx", "--data",
                             user / "coco.yaml", "--task", "segmentation")
    assert type(exc).__name__ == "InputError" and "known: classification, detection" in str(exc)


@pytest.mark.slow  # quantizes the detector (module fixture quantized)
def test_check_with_missing_annotations_or_images(user, quantized, tmp_path):
    spec = tmp_path / "coco.yaml"
    spec.write_text(f"kind: coco\npath: {user / 'images'}\nannotations: {tmp_path / 'nope.json'}\n")
    code, text, exc = invoke("check", quantized["onnxruntime"], "--reference", user / "model.onnx", "--data", spec,
                             "--task", "detection")
    assert isinstance(exc, DataError) and "COCO annotations file not found" in str(exc), (text, exc)
    spec.write_text(f"kind: coco\npath: {tmp_path}\nannotations: {user / 'ann.json'}\n")
    _, text, exc = invoke("check", quantized["onnxruntime"], "--reference", user / "model.onnx", "--data", spec,
                             "--task", "detection")
    assert isinstance(exc, DataError) and "image file not found" in str(exc) and "img_00.png" in str(exc)


@pytest.mark.slow  # quantizes the detector (module fixture quantized)
def test_bench_runs_the_detector(user, quantized):
    code, text, exc = invoke("bench", user / "model.onnx", quantized["onnxruntime"], "--batch-sizes", "1,4",
                             "--warmup", "1", "--iterations", "3")
    assert code == 0 and exc is None, (text, exc)
    assert "model.onnx" in text and "model.int8-onnxruntime.onnx" in text


RECIPE = """
name: user_yolo
task: detection
model: {{source: "onnx:{model}"}}
input: {{name: images, shape: [3, 64, 64], batch: {{min: 1, opt: 1, max: 16}}}}
preprocess: {{scale: 0.00392156862745098}}
calibration: {{data: {{kind: coco, path: images, annotations: ann.json}}, samples: 10}}
evaluation: {{data: {{kind: coco, path: images, annotations: ann.json}}}}
quantize: {{method: max}}
precisions: {precisions}
gates:
  default: {{max_map_drop: 3.0, min_agreement: 90}}
bench: {{batch_sizes: [1, 4], warmup: 1, iterations: 2}}
backends: [onnxruntime]
"""


@pytest.mark.slow  # an optim run
def test_run_recipe_with_onnx_source(user, tmp_path):
    recipe = user / "user_yolo.yaml"
    recipe.write_text(RECIPE.format(model="model.onnx",
                                    precisions="[fp32, {precision: int8, target: onnxruntime}, int8]"))
    code, text, exc = invoke("run", recipe, "--out-root", tmp_path)
    assert code == 0 and exc is None, (text[-3000:], exc)
    assert "no PyTorch to verify against" in text
    run = tmp_path / "user_yolo"
    assert json.loads((run / "export.json").read_text())["verified_against"].startswith("source is an ONNX file")
    report = json.loads((run / "report.json").read_text())
    assert report["task"] == "detection" and report["accuracy_meaningful"] is True
    rows = {(r["precision"], r["target"]): r for r in report["rows"]}
    assert set(rows) == {("fp32", "reference"), ("int8", "onnxruntime"), ("int8", "tensorrt")}, list(rows)
    ref = rows[("fp32", "reference")]["accuracy"]
    assert ref["map"] > 90 and ref["agreement"] == pytest.approx(100.0), ref
    for key in (("int8", "onnxruntime"), ("int8", "tensorrt")):
        row = rows[key]
        assert row["gates"].startswith("passed") and row["coverage"], row
        assert row["accuracy"]["map"] > 90 and abs(row["accuracy"]["map_delta"]) <= 3, row["accuracy"]
        assert row["throughput"] > 0, row


# -- the ONNX-file source ----------------------------------------------------------------------

def _settings(src: Path, **input_kw):
    from optim.settings import InputSpec
    from optim.stages.export import Settings

    return Settings(source=f"onnx:{src}", input=InputSpec(**{"name": "images", "shape": (3, SIZE, SIZE),
                                                               **input_kw}))


def _run_export(src: Path, out: Path, **input_kw):
    from optim.executor import StageContext
    from optim.stages import export as stage

    return stage.run([], _settings(src, **input_kw), StageContext(out.parent, out))


def test_recipe_resolves_the_onnx_source(user, tmp_path):
    from optim.recipe import load_recipe

    recipe = user / "r.yaml"
    recipe.write_text(RECIPE.format(model="model.onnx", precisions="[fp32]"))
    assert load_recipe(recipe).model.source == f"onnx:{(user / 'model.onnx').resolve()}"
    recipe.write_text(RECIPE.format(model="missing.onnx", precisions="[fp32]"))
    with pytest.raises(RecipeError, match="model.source: ONNX file not found: .*missing.onnx"):
        load_recipe(recipe)


def test_onnx_source_errors(user, tmp_path):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes((user / "model.onnx").read_bytes()[:200])
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        _run_export(bad, tmp_path / "out.onnx")
    with pytest.raises(ModelError, match="its input is 'images' .* recipe's input is 'input'.*input.name: images"):
        _run_export(user / "model.onnx", tmp_path / "out.onnx", name="input")
    with pytest.raises(ModelError, match=re.escape("has shape [batch, 3, 64, 64] but the recipe's input.shape "
                                                   "is [3, 96, 96]")):
        _run_export(user / "model.onnx", tmp_path / "out.onnx", shape=(3, 96, 96))
    assert not (tmp_path / "out.onnx").exists()
    # through optim run: the corrupt file stops the run at its export, one line
    (tmp_path / "r.yaml").write_text(RECIPE.format(model=bad, precisions="[fp32]").replace(
        "path: images, annotations: ann.json", f"path: {user / 'images'}, annotations: {user / 'ann.json'}"))
    _, text, exc = invoke("run", tmp_path / "r.yaml", "--out-root", tmp_path / "runs")
    assert isinstance(exc, ModelError) and "corrupt.onnx is not a readable ONNX model" in str(exc), (text, exc)
    assert not (tmp_path / "runs/user_yolo/model.fp32.onnx").exists()


def test_onnx_source_with_symbolic_height_and_width(user, tmp_path):
    """An Ultralytics dynamic=True export leaves height and width symbolic: fixed to the recipe's."""
    import onnx
    import torch

    from optim.onnx_tools import graph_inputs

    src = tmp_path / "hw.onnx"
    torch.onnx.export(square_detector(), (torch.zeros(1, 3, SIZE, SIZE),), str(src), dynamo=False,
                      opset_version=17, input_names=["images"], output_names=["output0"],
                      dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                                    "output0": {0: "batch", 2: "anchors"}})
    rep = _run_export(src, tmp_path / "out.onnx").result
    assert rep.changes == ["input size 'height' fixed to 64", "input size 'width' fixed to 64"]
    assert graph_inputs(onnx.load(str(tmp_path / "out.onnx")))[0].shape == ("batch", 3, SIZE, SIZE)


def test_onnx_source_with_a_fixed_batch(user, tmp_path):
    """A batch-1 file whose graph runs at any batch size is made dynamic (and says so); one whose
    graph hard-codes the batch (torch's static export folds the box grid's Expand to batch 1) is
    refused with how to re-export it."""
    import onnx

    from optim.onnx_tools import graph_inputs

    m = onnx.load(str(user / "model.onnx"))
    for v in (m.graph.input[0], m.graph.output[0]):
        v.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(m, str(tmp_path / "batch1.onnx"))
    rep = _run_export(tmp_path / "batch1.onnx", tmp_path / "out.onnx").result
    assert rep.changes == ["fixed batch size 1 made dynamic"]
    assert graph_inputs(onnx.load(str(tmp_path / "out.onnx")))[0].shape == ("batch", 3, SIZE, SIZE)
    static = export(tmp_path / "static.onnx", dynamic=False)
    with pytest.raises(ModelError, match=r"fixed batch size 1 and the graph does not run at other batch sizes "
                                         r".*optim needs a dynamic batch axis: re-export it with one "
                                         r"\(Ultralytics: model.export\(format='onnx', dynamic=True\)"):
        _run_export(static, tmp_path / "out2.onnx")
    assert not (tmp_path / "out2.onnx").exists()
