"""Decode + NMS inside the ONNX graph (optim.tasks.detect_graph, ``optim add-nms``) against
the NumPy reference ``detect_ops.decode``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from optim.errors import InputError, ModelError
from optim.tasks.detect_graph import FORMS, METADATA_KEY, OUTPUTS, raw_output, with_nms
from optim.tasks.detect_ops import decode
from tests.helpers import REPO
from tests.helpers.cli import detect_app
from tests.helpers.detectors import raw_scene
from tests.helpers.models import identity_model

forms = pytest.mark.parametrize("form", FORMS)  # "ops" (the default) and "nms_op"


def session(model: onnx.ModelProto):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run(model: onnx.ModelProto, feed: dict) -> dict:
    s = session(model)
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feed)))


def assert_matches_decode(out: dict, raw: np.ndarray, conf: float, iou: float, max_det: int,
                          max_nms: int | None = None) -> list[int]:
    """The graph's outputs equal decode() (keeping ``max_nms`` candidates, default its own cap)
    image by image; returns the kept counts."""
    ref = decode(raw, conf, iou, max_det) if max_nms is None else decode(raw, conf, iou, max_det, max_nms=max_nms)
    n = len(raw)
    assert out["num_dets"].shape == (n, 1) and out["num_dets"].dtype == np.int32
    assert out["det_boxes"].shape == (n, max_det, 4) and out["det_boxes"].dtype == np.float32
    assert out["det_scores"].shape == (n, max_det) and out["det_scores"].dtype == np.float32
    assert out["det_classes"].shape == (n, max_det) and out["det_classes"].dtype == np.int32
    counts = []
    for i, d in enumerate(ref):
        k = int(out["num_dets"][i, 0])
        assert k == len(d), f"image {i}: graph kept {k}, decode {len(d)}"
        np.testing.assert_allclose(out["det_boxes"][i, :k], d.boxes, atol=1e-4, rtol=0)
        np.testing.assert_array_equal(out["det_scores"][i, :k], d.scores)
        np.testing.assert_array_equal(out["det_classes"][i, :k], d.classes)
        assert np.all(np.diff(out["det_scores"][i, :k]) <= 0)  # best first (equal scores: see the cap test)
        for name in OUTPUTS[1:]:
            assert not out[name][i, k:].any(), f"{name}: padding rows of image {i} are not zero"
        counts.append(k)
    return counts


@pytest.mark.parametrize("anchors,max_det,iou", [
    (200, 200, 0.5),   # every kept box fits
    (300, 7, 0.7),     # more kept boxes than max_det: the best 7
    (40, 100, 0.45),   # fewer anchors than max_det: the padded TopK path
])
@forms
def test_graph_matches_decode_on_raw_outputs(anchors, max_det, iou, form):
    nc, conf = 4, 0.25
    raw = raw_scene(np.random.default_rng(anchors + max_det), 3, nc, anchors, empty=(1,))
    m = with_nms(identity_model(4 + nc, anchors), max_det=max_det, conf=conf, iou=iou, form=form)
    out = run(m, {"raw": raw})
    assert list(out) == list(OUTPUTS)  # raw output dropped by default
    counts = assert_matches_decode(out, raw, conf, iou, max_det)
    assert counts[1] == 0 and counts[0] > 0 and counts[2] > 0
    above = int((raw[0, 4:].max(0) > conf).sum())
    if max_det == 7:
        assert counts[0] == 7 < above
    else:
        assert 0 < counts[0] < above  # NMS suppressed some candidates, and not all
        assert len(set(out["det_classes"][0, :counts[0]].tolist())) > 1


@pytest.mark.parametrize("channels", [7, "channels"])
@forms
def test_symbolic_anchors_and_dynamic_batch(channels, form):
    """Symbolic anchor (and class) axes, read at run time, and batch sizes 1 and 5 in one session."""
    nc = 3
    m = with_nms(identity_model(channels, "anchors"), max_det=20, conf=0.3, iou=0.6, form=form)
    if form == "nms_op":  # the class ids 0 .. nc-1 it needs come from the scores' shape
        assert ("Range" in {n.op_type for n in m.graph.node}) == (channels == "channels")
    assert [d.dim_param for d in m.graph.output[1].type.tensor_type.shape.dim[:1]] == ["batch"]
    s = session(m)
    for n, a in ((1, 8), (5, 64)):
        raw = raw_scene(np.random.default_rng(n), n, nc, a)
        out = dict(zip(OUTPUTS, s.run(None, {"raw": raw})))
        assert sum(assert_matches_decode(out, raw, 0.3, 0.6, 20)) > 0


@forms
def test_nms_is_class_aware(form):
    """Identical boxes: of one class only the best survives; of another class it is kept."""
    a = 8  # anchors 4.. are empty (scores 0)
    raw = np.zeros((1, 6, a), np.float32)
    raw[0, :4] = np.array([[50, 50, 20, 20]] * 3 + [[120, 120, 10, 10]] * 5, np.float32).T
    raw[0, 4, :4] = [0.9, 0.8, 0.1, 0.1]  # class 0
    raw[0, 5, :4] = [0.1, 0.2, 0.7, 0.2]  # class 1: anchor 2 coincides with anchors 0 and 1
    out = run(with_nms(identity_model(6, a), max_det=10, conf=0.25, iou=0.5, form=form), {"raw": raw})
    assert int(out["num_dets"][0, 0]) == 2
    np.testing.assert_array_equal(out["det_scores"][0, :2], np.array([0.9, 0.7], np.float32))
    np.testing.assert_array_equal(out["det_classes"][0, :2], [0, 1])
    np.testing.assert_array_equal(out["det_boxes"][0, :2], [[40, 40, 60, 60]] * 2)
    assert_matches_decode(out, raw, 0.25, 0.5, 10)


@forms
def test_suppression_chain_is_followed_to_its_end(form):
    """Boxes in a row, each overlapping only its neighbours, scores falling along the row: greedy
    NMS keeps every other box. Box i is kept only once box i - 1 is known to be dropped, so a
    fixed number of suppression rounds short of the chain's length would keep the wrong ones."""
    a = 300
    raw = np.zeros((1, 5, a), np.float32)
    raw[0, 0], raw[0, 1], raw[0, 2:4] = 100 + 6 * np.arange(a), 50, 10  # neighbours' IoU 40 / 160 = 0.25
    raw[0, 4] = np.linspace(0.9, 0.3, a)
    out = run(with_nms(identity_model(5, a), max_det=a, conf=0.25, iou=0.2, form=form), {"raw": raw})
    assert assert_matches_decode(out, raw, 0.25, 0.2, a) == [a // 2]
    np.testing.assert_array_equal(out["det_boxes"][0, : a // 2, 0], raw[0, 0, ::2] - 5)


def test_candidate_cap_and_equal_scores():
    """Form ops keeps the ``max_candidates`` best boxes above conf (equal scores: lower anchor
    first), as decode does with the same cap; here every box is above conf, with many equal
    scores (near 0.5, like a randomly initialised detector's)."""
    rng = np.random.default_rng(11)
    a, nc = 3000, 3
    raw = np.zeros((2, 4 + nc, a), np.float32)
    raw[:, 0:2], raw[:, 2:4] = rng.uniform(0, 640, (2, 2, a)), rng.uniform(10, 80, (2, 2, a))
    raw[:, 4:] = np.round(0.5 + rng.normal(0, 0.02, (2, nc, a)), 2)  # about 20 distinct values
    for cap, max_det in ((64, 100), (1024, 1000)):
        m = with_nms(identity_model(4 + nc, a), max_det=max_det, conf=0.25, iou=0.5, max_candidates=cap)
        assert json.loads(onnx_meta(m))["max_candidates"] == cap
        out = run(m, {"raw": raw})
        counts = assert_matches_decode(out, raw, 0.25, 0.5, max_det, max_nms=cap)
        uncapped = [len(d) for d in decode(raw, 0.25, 0.5, max_det)]
        assert all(0 < c < u for c, u in zip(counts, uncapped))  # the cap changed the result


def onnx_meta(m: onnx.ModelProto) -> str:
    return next(p.value for p in m.metadata_props if p.key == METADATA_KEY)


def test_form_is_recorded_and_default_is_ops():
    m = identity_model(14, 525)
    ops, nms_op = with_nms(m), with_nms(m, form="nms_op")
    assert "Loop" in {n.op_type for n in ops.graph.node}
    assert "NonMaxSuppression" not in {n.op_type for n in ops.graph.node}
    assert "NonMaxSuppression" in {n.op_type for n in nms_op.graph.node}
    meta, meta_op = json.loads(onnx_meta(ops)), json.loads(onnx_meta(nms_op))
    assert (meta["form"], meta["max_candidates"], meta["candidates"]) == ("ops", 1024, 525)
    assert "TensorRT-RTX" in meta["builders"] and "not TensorRT-RTX" in meta_op["builders"]
    assert (meta_op["form"], meta_op["max_candidates"]) == ("nms_op", None)
    assert json.loads(onnx_meta(with_nms(identity_model(14, 2000), max_candidates=300)))["candidates"] == 300
    onnx.checker.check_model(ops, full_check=True)


@forms
def test_fp16_output_keep_raw_and_other_outputs_kept(form):
    nc, a = 2, 50
    m16 = identity_model(4 + nc, a, dtype=TensorProto.FLOAT16)
    m16.graph.node.append(helper.make_node("Identity", ["raw"], ["extra"]))
    m16.graph.output.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT16, ["batch", 4 + nc, a]))
    m = with_nms(m16, max_det=30, keep_raw=True, form=form)
    onnx.checker.check_model(m, full_check=True)
    raw = raw_scene(np.random.default_rng(3), 2, nc, a).astype(np.float16)
    out = run(m, {"raw": raw})
    assert list(out) == [*OUTPUTS, "output0", "extra"]
    assert sum(assert_matches_decode(out, out["output0"], 0.25, 0.7, 30)) > 0


@pytest.mark.parametrize("model,fragment", [
    (identity_model(0, 0, out_shape=["batch", 1000]), "not a detector's"),
    (identity_model(0, 0, out_shape=["batch", 525, 14]), "transposed"),
    (identity_model(0, 0, out_shape=["batch", 3, 525]), ">= 5"),
    (identity_model(14, 525, dtype=TensorProto.INT64), "not floating point"),
    (identity_model(14, 525, opset=11), "opset 11"),
])
def test_refuses_what_is_not_a_raw_detection_output(model, fragment):
    with pytest.raises(ModelError, match=fragment) as e:
        with_nms(model)
    assert "\n" not in str(e.value)


def test_refuses_bad_parameters_and_double_nms():
    m = identity_model(14, 525)
    for kw in ({"max_det": 0}, {"max_det": 5000}, {"conf": 1.0}, {"conf": -0.1}, {"iou": 1.5}, {"form": "efficient"},
               {"max_candidates": 0}, {"max_candidates": 5000}):
        with pytest.raises(InputError):
            with_nms(m, **kw)
    with pytest.raises(ModelError, match="no output 'boxes'"):
        with_nms(m, output="boxes")
    with pytest.raises(ModelError, match="already"):
        with_nms(with_nms(m, keep_raw=True), output="output0")
    assert raw_output(m).classes == 10 and raw_output(m).anchors == 525


# --------------------------------------------------------------------------- bundled detector

@pytest.fixture(scope="module")
def detector_onnx(tmp_path_factory):
    """The bundled detector exported to ONNX (about 5 s)."""
    from optim.settings import ExportSettings, InputSpec
    from optim.sources import load_model
    from optim.stages.export import onnx_from_torch

    out = tmp_path_factory.mktemp("det") / "det.onnx"
    onnx_from_torch(load_model("bundled:fashion_detector"), InputSpec(name="images", shape=(3, 160, 160)),
                    ExportSettings(output_names=("output0",), verify_batches=(1,)), out)
    return out


@pytest.mark.slow  # exports the bundled detector
@pytest.mark.parametrize("batch", [1, 3])
@forms
def test_bundled_detector_with_nms_matches_decode(detector_onnx, batch, form):
    from optim.data.scenes import make_scenes

    conf, iou, max_det = 0.25, 0.7, 100
    m = with_nms(onnx.load(str(detector_onnx)), max_det=max_det, conf=conf, iou=iou, keep_raw=True, form=form)
    onnx.checker.check_model(m, full_check=True)
    assert [o.name for o in m.graph.output] == [*OUTPUTS, "output0"]
    images = make_scenes("eval", 4).images[:batch]
    x = np.ascontiguousarray(images.transpose(0, 3, 1, 2), np.float32) / 255.0
    out = run(m, {"images": x})
    assert out["output0"].shape == (batch, 14, 525)
    counts = assert_matches_decode(out, out["output0"], conf, iou, max_det)
    assert all(c > 0 for c in counts)  # the trained detector finds the garments


# --------------------------------------------------------------------------- CLI

def test_cli_add_nms_writes_a_checked_file(tmp_path, capsys):
    from typer.testing import CliRunner

    from optim.onnx_tools import load_onnx

    src, out = tmp_path / "raw.onnx", tmp_path / "sub" / "nms.onnx"
    onnx.save(identity_model(14, 525), str(src))
    r = CliRunner().invoke(detect_app(), ["add-nms", str(src), str(out), "--max-det", "50", "--conf", "0.3",
                                       "--iou", "0.6"])
    assert r.exit_code == 0, (r.output, r.exception)
    m = load_onnx(out)  # loads and passes onnx.checker
    assert [o.name for o in m.graph.output] == list(OUTPUTS)
    assert [d.dim_value for d in m.graph.output[1].type.tensor_type.shape.dim[1:]] == [50, 4]
    assert not [p for p in out.parent.iterdir() if p.name != "nms.onnx"]  # no temporary left
    raw = raw_scene(np.random.default_rng(5), 2, 10, 525)
    assert sum(assert_matches_decode(run(m, {"raw": raw}), raw, 0.3, 0.6, 50)) > 0


def _optim_add_nms(*args: str) -> subprocess.CompletedProcess:
    """``optim add-nms`` through optim's own error handling (main), registered here."""
    code = ("import sys\nfrom optim.cli import app, main, detect\n"
            "if not any(c.name == 'add-nms' for c in app.registered_commands):\n    detect.register(app)\n"
            "sys.argv = ['optim', 'add-nms', *sys.argv[1:]]\nmain()\n")
    env = {**os.environ, "OPTIM_NO_PROGRESS": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-c", code, *args], check=False, cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_refuses_a_non_detection_model(tmp_path):
    src, out = tmp_path / "cls.onnx", tmp_path / "out.onnx"
    onnx.save(identity_model(0, 0, out_shape=["batch", 10]), str(src))
    p = _optim_add_nms(str(src), str(out))
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "[N, 4 + classes, anchors]" in lines[0], p.stderr
    assert not out.exists()
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage")
    p = _optim_add_nms(str(corrupt), str(out), "--max-det", "10")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "corrupt.onnx" in p.stderr, p.stderr
    assert not out.exists()
