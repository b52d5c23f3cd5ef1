"""Decode + NMS in the graph (optim.tasks.detect_graph) through the real TensorRT-RTX builder.

TensorRT-RTX's builder runs ahead of time on a machine without a GPU, so these builds run
here; the engines are not run (that needs an RTX GPU). Form ``ops`` (the default) builds;
form ``nms_op`` parses but is refused at build time: TensorRT-RTX has no implementation of
``INMSLayer`` (and ships no EfficientNMS plugin), which is why form ``ops`` exists.
"""

from __future__ import annotations

import time

import onnx
import pytest
from onnx import TensorProto

from optim.tasks.detect_graph import with_nms
from tests.helpers.models import identity_model

trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (pip install tensorrt-rtx-cu12): "
                          "its builder is what these tests check")


class _Errors(trt.ILogger):
    def __init__(self) -> None:
        trt.ILogger.__init__(self)
        self.errors: list[str] = []

    def log(self, severity, msg: str) -> None:
        if severity in (trt.ILogger.ERROR, trt.ILogger.INTERNAL_ERROR):
            self.errors.append(msg)


def build(path, ranges: dict[int, tuple[int, int]] | None = None,
          sm: str | None = None) -> tuple[int | None, list[str], float]:
    """Engine bytes (None where refused), the builder's errors, build seconds: a strongly typed
    network from the ONNX file and one profile, each symbolic axis from ``ranges[axis]`` (min,
    max; opt = min), default batch 1 .. 4 and 1 for other axes; for compute capability ``sm``
    (e.g. "SM75"), else the builder's default."""
    ranges = {0: (1, 4), **(ranges or {})}
    log = _Errors()
    builder = trt.Builder(log)
    net = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(net, log)
    assert parser.parse_from_file(str(path)), [parser.get_error(i).desc() for i in range(parser.num_errors)]
    cfg = builder.create_builder_config()
    if sm is not None:
        cfg.num_compute_capabilities = 1
        cfg.set_compute_capability(getattr(trt.ComputeCapability, sm), 0)
    profile = builder.create_optimization_profile()
    for i in range(net.num_inputs):
        t = net.get_input(i)
        lo = [d if d >= 0 else ranges.get(j, (1, 1))[0] for j, d in enumerate(t.shape)]
        hi = [d if d >= 0 else ranges.get(j, (1, 1))[1] for j, d in enumerate(t.shape)]
        profile.set_shape(t.name, lo, lo, hi)
    cfg.add_optimization_profile(profile)
    start = time.perf_counter()
    engine = builder.build_serialized_network(net, cfg)
    return (None if engine is None else engine.nbytes), log.errors, time.perf_counter() - start


@pytest.fixture(scope="module")
def detectors(tmp_path_factory):
    """The bundled detector exported at 160x160 (A = 525) and 640x640 (A = 8400), each with
    both forms of NMS appended: {(size, form): path} (about 8 s)."""
    from optim.settings import ExportSettings, InputSpec
    from optim.sources import load_model
    from optim.stages.export import onnx_from_torch

    d = tmp_path_factory.mktemp("rtx")
    files = {}
    for size in (160, 640):
        raw = d / f"det{size}.onnx"
        onnx_from_torch(load_model("bundled:fashion_detector"), InputSpec(name="images", shape=(3, size, size)),
                        ExportSettings(output_names=("output0",), verify_batches=(1,)), raw)
        m = onnx.load(str(raw))
        for form in ("ops", "nms_op"):
            files[size, form] = d / f"det{size}.{form}.onnx"
            onnx.save(with_nms(m, max_det=100, conf=0.25, iou=0.7, form=form), str(files[size, form]))
    return files


@pytest.mark.slow  # exports detectors (module fixture detectors), TensorRT-RTX builds
@pytest.mark.parametrize("size,sm", [
    (160, None),
    (640, None),
    (160, "SM75"),   # Turing: where an FP32 MatMul in the loop would not compile
    (160, "SM120"),  # Blackwell
])
def test_ops_form_builds_on_tensorrt_rtx(detectors, size, sm):
    nbytes, errors, seconds = build(detectors[size, "ops"], sm=sm)
    assert nbytes and not errors, errors
    assert seconds < 60  # about 1 s here


@pytest.mark.slow  # exports detectors (module fixture detectors)
@pytest.mark.parametrize("sm", [None, "SM120"])
def test_nms_op_form_is_refused_by_tensorrt_rtx(detectors, sm):
    """The reason form ops exists: the builder has no runner for NonMaxSuppression (INMSLayer)."""
    nbytes, errors, _ = build(detectors[160, "nms_op"], sm=sm)
    assert nbytes is None
    assert any("optim_nms/selected" in e and "has no runners that implement it" in e for e in errors), errors


@pytest.mark.parametrize("anchors,max_det,max_candidates,dtype", [
    (525, 100, 1024, TensorProto.FLOAT),     # fewer anchors than candidates: M = A
    (8400, 300, 3840, TensorProto.FLOAT),    # the largest TopK TensorRT takes
    ("anchors", 20, 64, TensorProto.FLOAT),  # A read at run time: -1 columns padded before TopK
    (40, 100, 1024, TensorProto.FLOAT),      # fewer anchors than max_det
    (525, 100, 1024, TensorProto.FLOAT16),   # an FP16 model's raw output (cast to float32 first)
], ids=["A525", "A8400-M3840", "A-symbolic", "A40", "A525-fp16"])
def test_ops_form_builds_for_other_shapes(tmp_path, anchors, max_det, max_candidates, dtype):
    path = tmp_path / "nms.onnx"
    onnx.save(with_nms(identity_model(14, anchors, dtype=dtype), max_det=max_det, max_candidates=max_candidates),
              str(path))
    nbytes, errors, _ = build(path, {2: (8, 3000)} if anchors == "anchors" else None)
    assert nbytes and not errors, errors
