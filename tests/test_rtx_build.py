"""Real TensorRT-RTX builds on this CPU-only machine (``tensorrt-rtx-cu12``, pinned in requirements.txt).

These call the real builder and parser, not a fake: every precision's file of a tiny model, a
file the parser refuses (the ONNX Runtime placement's int32 bias), a builder refusal (FP8 for
Ampere), and the CLI. Nothing here runs an engine: loading one needs one of its GPUs.
The bundled models' engines are built by ``optim run`` in tests/test_e2e.py and the detector's
(NMS deployables and other sizes included) in tests/test_detect_pipeline.py.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from optim.backends.engine_compat import manifest_path
from optim.errors import BuildError, InputError
from optim.settings import BatchRange, BuildSettings
from optim.stages.build import engine_cell, engine_from_onnx, plan_engine, profile_for
from tests.helpers.models import precision_model
from tests.helpers.cli import assert_one_line_error, optim

rtx = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (pip install tensorrt-rtx-cu12)")


@pytest.fixture
def api():
    from optim.backends.tensorrt_api import TensorRT

    return TensorRT.load("tensorrt_rtx")


def _save(model: onnx.ModelProto, path) -> object:
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("kind", ["fp32", "fp16", "bf16", "int8", "fp8"])
def test_every_precision_builds_with_the_real_builder(kind, tmp_path, api):
    src = _save(precision_model(kind), tmp_path / f"m.{kind}.onnx")
    out = tmp_path / f"m.{kind}.rtx.plan"
    rep = engine_from_onnx(src, out, BuildSettings(), "rtx", batch=BatchRange(min=1, opt=4, max=16), api=api)
    data = out.read_bytes()
    assert len(data) > 1000 and rep.manifest["bytes"] == len(data)
    man = json.loads(manifest_path(out).read_text())
    assert man["flavour"] == "tensorrt_rtx" and man["tensorrt"] == rtx.__version__ and man["gpu"] is None
    assert man["plan"]["strongly_typed"] and man["plan"]["network_flags"] == []  # always strongly typed
    assert man["plan"]["precision"] == kind and man["timing_cache"] is None and man["layers"] is None
    want = ["8.9", "12.0"] if kind == "fp8" else ["8.6", "8.9", "12.0"]  # Ampere has no FP8
    assert man["compute_capabilities"] == want
    assert man["profile"] == {"input": "x", "min": [1, 8], "opt": [4, 8], "max": [16, 8]}
    assert man["build_seconds"] > 0 and not (tmp_path / f"m.{kind}.rtx.layers.json").exists()
    assert engine_cell(man).startswith(f"built (RTX {rtx.__version__}, sm{'/'.join(c.replace('.', '') for c in want)}, ")


def _ort_style_bias(path):
    """x -> Conv whose bias is DequantizeLinear(int32): how ONNX Runtime's quantizer stores biases."""
    inits = [numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w"),
             numpy_helper.from_array(np.array([5, -3], np.int32), "b_q"),
             numpy_helper.from_array(np.array([0.01, 0.01], np.float32), "b_s"),
             numpy_helper.from_array(np.zeros(2, np.int32), "b_zp")]
    nodes = [helper.make_node("DequantizeLinear", ["b_q", "b_s", "b_zp"], ["b"], name="conv.bias_DequantizeLinear",
                              axis=0),
             helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2, 6, 6])], inits)
    return _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)]), path)


def test_a_file_the_parser_refuses_is_one_line_naming_node_and_reason(tmp_path, api):
    src = _ort_style_bias(tmp_path / "m.int8-onnxruntime.onnx")
    out = tmp_path / "m.rtx.plan"
    with pytest.raises(BuildError) as e:
        engine_from_onnx(src, out, BuildSettings(), "rtx", api=api)
    msg = str(e.value)
    assert "\n" not in msg and "cudaError" not in msg and "/_src/" not in msg
    assert msg.startswith("TensorRT-RTX cannot parse m.int8-onnxruntime.onnx: node conv.bias_DequantizeLinear "
                          "(DequantizeLinear): input has type Int32"), msg
    assert not out.exists() and not manifest_path(out).exists()  # nothing half-written


def test_a_builder_refusal_is_one_line(tmp_path, api):
    """FP8 for Ampere (sm86), forced past the plan that leaves sm86 out: the builder's own reason."""
    src = _save(precision_model("fp8"), tmp_path / "m.fp8.onnx")
    prof = profile_for([_input("x", ("n", 8))], BatchRange())
    plan = plan_engine("fp8", None, BuildSettings(), prof, rtx.__version__, "tensorrt_rtx")
    assert plan.compute_capabilities == ("SM89", "SM120")
    with pytest.raises(BuildError) as e:
        api.build(src, dataclasses.replace(plan, compute_capabilities=("SM86",)), b"")
    msg = str(e.value)
    assert msg == ("TensorRT-RTX could not build m.fp8.onnx: Cannot compile for target(s) sm86, because the "
                   "model contains HW-specific datatypes: fp8_e4m3."), msg


def test_a_missing_plugin_library_is_refused_before_parsing(tmp_path, api):
    """(Replaces the recording fake's failure test: parse and build failures above are the real builder's.)"""
    from optim.errors import ModelError

    src = _save(precision_model("fp32"), tmp_path / "m.fp32.onnx")
    with pytest.raises(ModelError, match="plugin library not found: .*nope.so"):
        engine_from_onnx(src, tmp_path / "m.rtx.plan", BuildSettings(plugins=(tmp_path / "nope.so",)), "rtx", api=api)
    assert not (tmp_path / "m.rtx.plan").exists()


def _input(name, shape):
    from optim.onnx_tools import TensorInfo

    return TensorInfo(name, shape, TensorProto.FLOAT)


def test_weak_typing_is_refused_in_one_line_before_the_builder():
    prof = profile_for([_input("x", ("n", 8))], BatchRange())
    with pytest.raises(InputError, match="TensorRT-RTX has no FP16 builder flag"):
        plan_engine("fp32", "fp16", BuildSettings(), prof, rtx.__version__, "tensorrt_rtx")
    with pytest.raises(Exception, match="TensorRT-RTX 2.0 is not supported"):
        plan_engine("fp32", None, BuildSettings(), prof, "2.0", "tensorrt_rtx")


@pytest.mark.slow  # optim subprocesses building TensorRT-RTX engines
def test_cli_builds_for_rtx_and_refuses_an_ort_file(tmp_path):
    src = _save(precision_model("int8"), tmp_path / "m.int8.onnx")
    p = optim("build", src, "--target", "rtx", "--batch", "1,2,8")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "m.int8.rtx.plan").is_file() and "for 8.6, 8.9, 12.0 (no GPU needed)" in p.stderr + p.stdout
    bad = _ort_style_bias(tmp_path / "bad.onnx")
    assert_one_line_error(optim("build", bad, "--target", "rtx"), 4, "node conv.bias_DequantizeLinear")
