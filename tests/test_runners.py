"""Runners: the interface, the registry by name (with a toy backend), ONNX Runtime CPU,
and the BF16 emulation checked against NumPy."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from optim.backends import (WALL_TIME, Runner, TensorSpec, backend_names, open_runner, register_backend,
                            unregister_backend)
from optim.backends.bf16 import Bf16EmulationRunner, emulate_bf16
from optim.backends.onnxruntime import OrtRunner
from optim.errors import InputError, ModelError
from tests.helpers.runners import FramesRunner, ToyRunner


def test_toy_backend_by_name_and_by_suffix(tmp_path, tiny_onnx, toy_backend):
    p = tmp_path / "m.toy"
    p.write_text("toy")
    assert "toy" in backend_names()
    r = open_runner(p, backend="toy", threads=3, cuda_graph=True)
    assert isinstance(r, ToyRunner) and ToyRunner.opened[-1] == {"path": p, "threads": 3, "cuda_graph": True}
    assert isinstance(open_runner(p), ToyRunner), "auto: the backend that claims .toy"
    with r:
        assert r.infer({"x": np.ones((2, 4), np.float32)})["y"].tolist() == [[4.0], [4.0]]
        assert r.measure(2, 1, 3) == [2e-3] * 3
    with pytest.raises(InputError, match=r"m\.toy runs on backend toy, not onnxruntime"):
        open_runner(p, backend="onnxruntime")
    with pytest.raises(InputError, match="runs on backend onnxruntime, ort-cuda, ort-tensorrt, openvino, openvino-bf16 or openvino-f16, not toy"):
        open_runner(tiny_onnx, backend="toy")


def test_unregistered_backend_is_gone(tmp_path):
    register_backend("toy2", ToyRunner, handles="toy2")
    assert isinstance(open_runner(tmp_path / "m.toy2", backend="toy2"), ToyRunner)
    unregister_backend("toy2")
    assert "toy2" not in backend_names()
    with pytest.raises(InputError, match="unknown backend 'toy2'"):
        open_runner(tmp_path / "m.toy2", backend="toy2")


def test_register_backend_refuses_taken_names():
    for name in ("auto", "onnxruntime", "cpu", "tensorrt"):
        with pytest.raises(ValueError, match="already"):
            register_backend(name, ToyRunner)
    assert backend_names()[:2] == ("auto", "onnxruntime")


def test_open_runner_unknown_backend(tiny_onnx):
    with pytest.raises(InputError, match="unknown backend 'turbo'; choose one of auto, onnxruntime, cpu, tensorrt"):
        open_runner(tiny_onnx, backend="turbo")


def test_cpu_is_an_alias_of_onnxruntime(tiny_onnx):
    assert type(open_runner(tiny_onnx, backend="cpu")) is OrtRunner
    assert type(open_runner(tiny_onnx, backend="onnxruntime")) is OrtRunner


def test_ort_runner_default_measure(tiny_onnx):
    assert OrtRunner.measure is Runner.measure, "ORT times with the interface's own measure"
    runs = []
    with open_runner(tiny_onnx, threads=1) as r:
        assert r.input_spec() == TensorSpec("input", (3, 16, 16), np.dtype(np.float32))
        times = r.measure(2, 1, 5, on_run=lambda: runs.append(1))
        assert r.timing_method == WALL_TIME
    assert len(times) == 5 and all(t > 0 for t in times) and len(runs) == 6


def test_default_measure_feeds_random_frames():
    r = FramesRunner(Path("f.toy"))
    with r:
        assert len(r.measure(3, 2, 4)) == 4
    assert len(r.fed) == 6
    x = r.fed[0]
    assert x.dtype == np.uint8 and x.shape == (3, 5, 6, 3) and len(np.unique(x)) > 100


def test_tensor_spec_random_dtypes():
    assert TensorSpec("h", (2,), np.dtype(np.float16)).random(3).dtype == np.float16
    x = TensorSpec("f", (100,), np.dtype(np.float32)).random(10)
    assert x.dtype == np.float32 and abs(float(x.mean())) < 0.1 and 0.9 < float(x.std()) < 1.1
    assert TensorSpec("i", (50,), np.dtype(np.int8)).random(2).max() <= 127


def test_input_spec_refuses_dynamic_sizes(tmp_path):
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "k"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "k"])])
    p = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), p)
    with open_runner(p) as r, pytest.raises(ModelError, match="non-fixed sizes \\['k'\\] besides the batch axis"):
        r.measure(1, 0, 1)


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

    from tests.helpers.models import tiny_cnn

    with open_runner(tiny_onnx, threads=1) as r:
        assert r.input_names == ["input"] and r.output_names == ["logits"]
        got = r.infer({"input": calib_x})["logits"]
        assert "1 threads" in r.method
    with torch.no_grad():
        want = tiny_cnn()(torch.from_numpy(calib_x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
