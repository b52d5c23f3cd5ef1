"""Runners: ONNX Runtime CPU, and the BF16 emulation checked against NumPy."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from optim.backends import open_runner
from optim.backends.bf16 import Bf16EmulationRunner, emulate_bf16


def _bf16(a: np.ndarray) -> np.ndarray:
    return a.astype(ml_dtypes.bfloat16).astype(np.float32)


def _gemm_relu_bf16_model(w: np.ndarray, b: np.ndarray) -> onnx.ModelProto:
    """x(fp32) -> Cast bf16 -> Gemm(W bf16, b bf16) -> Relu -> Cast fp32."""
    nodes = [
        helper.make_node("Cast", ["x"], ["xb"], to=TensorProto.BFLOAT16, name="cast_in"),
        helper.make_node("Gemm", ["xb", "W", "B"], ["h"], transB=1, name="gemm"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT, name="cast_out"),
    ]
    inits = [numpy_helper.from_array(w.astype(ml_dtypes.bfloat16), "W"),
             numpy_helper.from_array(b.astype(ml_dtypes.bfloat16), "B")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 22)])


def test_bf16_emulation_matches_numpy_rounding():
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((4, 8)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    x = rng.standard_normal((5, 8)).astype(np.float32)
    # what the emulation promises: bf16 storage of inputs/weights/outputs, fp32 arithmetic
    want = _bf16(np.maximum(_bf16(_bf16(x) @ _bf16(w).T + _bf16(b)), 0))
    with Bf16EmulationRunner(_gemm_relu_bf16_model(w, b)) as r:
        got = r.infer({"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert not np.allclose(got, np.maximum(x @ w.T + b, 0), rtol=0, atol=1e-6), "no rounding happened"


def test_emulated_graph_has_no_bf16_compute():
    m = emulate_bf16(_gemm_relu_bf16_model(np.ones((4, 8), np.float32), np.ones(4, np.float32)))
    assert all(i.data_type == TensorProto.FLOAT for i in m.graph.initializer)
    gemm = next(n for n in m.graph.node if n.op_type == "Gemm")
    assert gemm.output[0] == "h__fp32"


def test_open_runner_picks_emulation_for_bf16(tmp_path):
    p = tmp_path / "m.onnx"
    onnx.save(_gemm_relu_bf16_model(np.ones((4, 8), np.float32), np.zeros(4, np.float32)), p)
    r = open_runner(p)
    assert isinstance(r, Bf16EmulationRunner) and not r.timing_meaningful
    assert "emulated" in r.method


def test_ort_runner_matches_torch(tiny_onnx, calib_x):
    import torch

    from tests.conftest import tiny_cnn

    with open_runner(tiny_onnx, threads=1) as r:
        assert r.input_names == ["input"] and r.output_names == ["logits"]
        got = r.infer({"input": calib_x})["logits"]
        assert "1 threads" in r.method
    with torch.no_grad():
        want = tiny_cnn()(torch.from_numpy(calib_x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
