"""Quantize stage on a tiny CNN built in code: every precision and both placements."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from optim.errors import ModelError, QuantizeError
from optim.onnx_tools import has_bfloat16, has_float8, load_onnx, quant_coverage
from optim.stages.quantize.stage import quantize_onnx
from optim.settings import QuantizeSettings
from optim.backends import open_runner


def _outputs(path, x):
    with open_runner(path) as r:
        return r.infer({"input": x})["logits"]


@pytest.mark.parametrize("precision,target,dtype", [
    ("int8", "tensorrt", "int8"),
    pytest.param("int8", "onnxruntime", "uint8", marks=pytest.mark.slow),  # a quantize worker each: one in the fast tier
    pytest.param("fp8", "tensorrt", "float8e4m3fn", marks=pytest.mark.slow),
])
def test_ptq_quantizes_and_stays_close(tmp_path, tiny_onnx, calib_x, precision, target, dtype):
    out = tmp_path / "q.onnx"
    rep = quantize_onnx(tiny_onnx, QuantizeSettings(precision=precision, target=target, method="max"),
                        out, calib_x)
    model = load_onnx(out)
    cov = quant_coverage(model)
    assert cov.quantized >= 2 and cov.eligible == 4  # FP8 skips the 3-channel first conv
    assert dtype in cov.qdq_dtypes
    assert rep.coverage["quantized"] == cov.quantized and rep.calibration_samples == len(calib_x)
    ref, got = _outputs(tiny_onnx, calib_x), _outputs(out, calib_x)
    assert not np.array_equal(ref, got), "quantization changed nothing"
    cos = (ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got)
    assert cos > 0.98


@pytest.mark.slow  # quantizes (a quantize worker)
def test_tensorrt_placement_keeps_fp32_outside_quantized_ops(tmp_path, tiny_onnx, calib_x):
    out = tmp_path / "q.onnx"
    quantize_onnx(tiny_onnx, QuantizeSettings(precision="int8", method="max"), out, calib_x)
    inits = load_onnx(out).graph.initializer
    assert not any(i.data_type == onnx.TensorProto.FLOAT16 for i in inits)


@pytest.mark.slow  # quantizes (a quantize worker)
def test_exclusions_are_respected(tmp_path, tiny_onnx, calib_x):
    conv_names = [n.name for n in load_onnx(tiny_onnx).graph.node if n.op_type == "Conv"]
    out = tmp_path / "q.onnx"
    quantize_onnx(tiny_onnx, QuantizeSettings(precision="int8", method="max",
                                              exclude_nodes=(conv_names[0],)), out, calib_x)
    g = load_onnx(out).graph
    dq_out = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
    first = next(n for n in g.node if n.name == conv_names[0])
    assert not any(i in dq_out for i in first.input)
    assert quant_coverage(load_onnx(out)).quantized >= 1


@pytest.mark.slow  # converts (a quantize worker each)
@pytest.mark.parametrize("precision,check", [("fp16", None), ("bf16", has_bfloat16)])
def test_float_conversions(tmp_path, tiny_onnx, calib_x, precision, check):
    out = tmp_path / f"{precision}.onnx"
    rep = quantize_onnx(tiny_onnx, QuantizeSettings(precision=precision), out)
    model = load_onnx(out, check=False)
    want = onnx.TensorProto.FLOAT16 if precision == "fp16" else onnx.TensorProto.BFLOAT16
    assert any(i.data_type == want for i in model.graph.initializer)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # io kept fp32
    assert rep.coverage is None and rep.calibration_samples == 0
    ref, got = _outputs(tiny_onnx, calib_x), _outputs(out, calib_x)
    tol = 2e-2 if precision == "bf16" else 2e-3
    assert np.abs(ref - got).max() < tol * max(1.0, np.abs(ref).max())
    assert not np.array_equal(ref, got)


@pytest.mark.slow  # quantizes (a quantize worker)
def test_fp8_model_is_marked_float8(tmp_path, tiny_onnx, calib_x):
    out = tmp_path / "fp8.onnx"
    quantize_onnx(tiny_onnx, QuantizeSettings(precision="fp8", method="max"), out, calib_x)
    assert has_float8(load_onnx(out, check=False))


@pytest.mark.parametrize("settings,calib,fragment", [
    (dict(precision="fp8", target="onnxruntime"), True, "INT8 only"),
    (dict(precision="int8", method="percentile"), True, "'max' or 'entropy'"),
    (dict(precision="int8"), False, "needs calibration data"),
    (dict(precision="fp32"), False, "reference"),
])
def test_refusals_leave_no_file(tmp_path, tiny_onnx, calib_x, settings, calib, fragment):
    out = tmp_path / "q.onnx"
    with pytest.raises(QuantizeError, match=fragment):
        quantize_onnx(tiny_onnx, QuantizeSettings(**settings), out, calib_x if calib else None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # quantizes (a quantize worker)
def test_percentile_calibration_for_onnxruntime_target(tmp_path, tiny_onnx, calib_x):
    out = tmp_path / "q.onnx"
    rep = quantize_onnx(tiny_onnx, QuantizeSettings(precision="int8", target="onnxruntime",
                                                    method="percentile", percentile=99.9), out, calib_x)
    assert rep.method == "percentile" and out.is_file()


@pytest.mark.parametrize("content", [b"", b"not an onnx file at all", None])
def test_corrupt_or_truncated_onnx(tmp_path, tiny_onnx, calib_x, content):
    bad = tmp_path / "bad.onnx"
    data = tiny_onnx.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if content is None else content)
    with pytest.raises(ModelError, match="bad.onnx"):
        quantize_onnx(bad, QuantizeSettings(precision="int8"), tmp_path / "q.onnx", calib_x)
    assert not (tmp_path / "q.onnx").exists()


def _upsampler(with_max: bool):
    """Conv, ReLU, a scale-factor Upsample (its Resize batch is floor(1.0*batch)) and a concat with the
    input; ``with_max``: the channel max appended too (a ReduceMax)."""
    import torch
    from torch import nn

    class Up(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(11, 4, 3, 1, 1)
            self.up = nn.Upsample(scale_factor=2.0, mode="nearest")

        def forward(self, x):
            y = self.b(torch.cat([self.up(torch.relu(self.a(x))), x], 1))
            return torch.cat([y, y.amax(1, keepdim=True)], 1) if with_max else y

    torch.manual_seed(0)
    return Up().eval()


def _ort_int8_against_fp32(src: Path, tmp_path: Path):
    """``src`` quantized for ONNX Runtime INT8 on 16 random samples: (report, FP32 outputs, INT8 outputs) of 4."""
    x = np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32)
    out = tmp_path / src.name.replace(".onnx", ".int8.onnx")
    rep = quantize_onnx(src, QuantizeSettings(precision="int8", target="onnxruntime"), out, x)
    with open_runner(src) as ref, open_runner(out) as q:
        a, b = (next(iter(r.infer({"x": x[:4]}).values())) for r in (ref, q))
    return rep, a, b


@pytest.mark.slow  # quantizes (a quantize worker)
def test_onnxruntime_target_quantizes_a_scale_factor_upsample(tmp_path, calib_x):
    """An exported nn.Upsample(scale_factor=2) makes a Resize whose batch is floor(1.0*batch): ORT's
    symbolic shape inference refuses it ("Incomplete symbolic shape inference", as on every Ultralytics
    export) unless it may merge the two; optim retries with auto_merge and says so."""
    from optim.settings import ExportSettings, InputSpec
    from optim.sources import LoadedModel
    from optim.stages.export import onnx_from_torch

    src = tmp_path / "up.onnx"
    onnx_from_torch(LoadedModel(_upsampler(False), "test:Up", None), InputSpec(name="x", shape=(3, 16, 16)),
                    ExportSettings(verify_batches=(1, 2)), src)
    assert any(n.op_type == "Resize" for n in onnx.load(str(src)).graph.node)
    rep, a, b = _ort_int8_against_fp32(src, tmp_path)
    assert rep.coverage["quantized"] == 2 and any("auto_merge" in n for n in rep.notes), rep.notes
    assert a.shape == b.shape == (4, 4, 16, 16)
    cos = float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
    assert cos > 0.99, cos


@pytest.mark.slow  # quantizes (a quantize worker)
def test_onnxruntime_target_without_symbolic_shapes(tmp_path):
    """Opset 18: a scale-factor Resize (auto_merge needed) and a ReduceMax with its axes as an input,
    which ORT's symbolic shape inference has no handler for even with auto_merge. optim quantizes
    after ONNX's own shape inference then, and says so."""
    import torch

    src = tmp_path / "upmax.onnx"
    torch.onnx.export(_upsampler(True), (torch.zeros(1, 3, 16, 16),), str(src), dynamo=False, opset_version=18,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    assert any(n.op_type == "ReduceMax" and len(n.input) == 2 for n in onnx.load(str(src)).graph.node)
    rep, a, b = _ort_int8_against_fp32(src, tmp_path)
    assert rep.coverage["quantized"] == 2 and any("skip_symbolic_shape" in n for n in rep.notes), rep.notes
    assert a.shape == b.shape == (4, 5, 16, 16)
    assert float(np.abs(a - b).max()) < 0.1 * float(np.abs(a).max())
