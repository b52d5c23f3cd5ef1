"""The OpenVINO CPU backends (openvino, openvino-bf16, openvino-f16) on the tiny CNN, and the CPU
identity they describe themselves with (``optim.backends.machine.cpu_info``).

Tests that need OpenVINO skip themselves where it is not installed; the CPU-identity, registry and
"not installed" tests run everywhere."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import pytest

from optim.backends import machine
from optim.backends import backend_for, backend_names, get_backend, open_runner
from optim.errors import BackendUnavailable, InputError, ModelError
from optim.install import INSTALL
from tests.helpers.cli import optim
from tests.helpers.models import TINY_SHAPE

HAVE_OV = importlib.util.find_spec("openvino") is not None
needs_ov = pytest.mark.skipif(not HAVE_OV, reason=f"OpenVINO is not installed here ({INSTALL['openvino']})")

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 avx avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16 avx512_fp16
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 avx avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16 avx512_fp16
"""


def _cpu(*features: str, model: str = "Fake CPU") -> machine.CpuInfo:
    return machine.CpuInfo(model, 2, frozenset(features))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _ort(path, x):
    with open_runner(path) as r:
        return r.infer({"input": x})["logits"]


def _ov(path, x, backend="openvino", threads=2):
    with open_runner(path, backend=backend, threads=threads) as r:
        return r.infer({"input": x})["logits"], r


# --- CPU identity (no OpenVINO needed) ---------------------------------------------------------------

def test_cpuinfo_features_and_native_precisions(tmp_path):
    p = tmp_path / "cpuinfo"
    p.write_text(CPUINFO)
    cpu = machine.cpu_info(p)
    assert cpu.model == "Intel(R) Xeon(R) Platinum 8480+" and cpu.features_known
    assert cpu.feature_list() == ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16",
                                  "avx512_fp16"]  # amx_tile is not one that matters; order is CPU_FEATURES'
    assert cpu.native() == ("int8-vnni", "bf16", "f16")
    assert machine.native_precisions({"avx2"}) == ()
    assert machine.native_precisions({"avx_vnni"}) == ("int8-vnni",)
    assert machine.native_precisions({"amx_fp16"}) == ("f16",)
    assert "native: int8-vnni, bf16, f16" in cpu.describe()
    unknown = machine.cpu_info(tmp_path / "missing")
    assert not unknown.features_known and unknown.features == frozenset() and "features unknown" in unknown.describe()
    assert unknown.as_dict()["features"] is None


@pytest.mark.slow  # optim doctor subprocess
def test_this_machine_cpu_goes_into_host_info_and_doctor():
    from optim.artifacts import host_info
    from optim.doctor import inventory

    cpu = machine.cpu_info()
    host = host_info()
    assert host["cpu"] == cpu.model and host["cpu_native"] == list(cpu.native())
    assert host["cpu_features"] == (cpu.feature_list() if cpu.features_known else None)
    line = next(i for i in inventory(machine.Machine(cpu=_cpu("avx2", "avx512f", "avx512_bf16", model="X")))
                if i.name == "CPU")
    assert line.ok and line.value.startswith("X, 2 logical CPUs; AVX2 AVX-512 AVX512_BF16; native: bf16; ")
    # and the INT8 format onnxruntime-target files get on that CPU (no VNNI: 7-bit weights)
    assert "ONNX Runtime INT8 here: uint8 activations x int8 weights (7-bit) (AVX-512 without VNNI" in line.value
    p = optim("doctor")
    assert p.returncode == 0, p.stderr
    assert "CPU" in p.stdout and cpu.model in p.stdout and "openvino" in p.stdout
    data = json.loads(optim("doctor", "--json").stdout)
    assert data["machine"]["cpu"]["model"] == cpu.model


# --- registry (no OpenVINO needed) -------------------------------------------------------------------

def test_backend_names_and_auto_stays_on_onnxruntime(tmp_path):
    names = backend_names()
    for name in ("openvino", "openvino-bf16", "openvino-f16"):
        assert name in names and ".onnx" in get_backend(name).handles
    assert backend_for(tmp_path / "m.onnx").name == "onnxruntime"
    assert backend_for(tmp_path / "m.onnx", "openvino-bf16").name == "openvino-bf16"
    with pytest.raises(InputError, match="runs on backend tensorrt, not openvino"):
        backend_for(tmp_path / "m.plan", "openvino")


def test_without_openvino_opening_says_how_to_install(monkeypatch, tiny_onnx):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    with pytest.raises(BackendUnavailable) as e:
        open_runner(tiny_onnx, backend="openvino")
    msg = str(e.value)
    assert "OpenVINO is not importable here" in msg and INSTALL["openvino"] in msg and "\n" not in msg


# --- describe(): method and timing note per CPU and per what OpenVINO ran (no OpenVINO needed) ---------

def _probe(precision: str, *layers: tuple[str, int]):
    from optim.backends.openvino import Probe

    return Probe(True, precision, 1, 2, 1, {(p, f"kernel_{p}"): n for p, n in layers})


def test_describe_native_and_not_native_bf16():
    from optim.backends.openvino import describe

    amx = _cpu("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8")
    how, note = describe("bf16", _probe("bf16", ("bf16", 53)), amx)
    assert "bf16 native (AMX-BF16/AVX512_BF16)" in how and note == ""
    how, note = describe("bf16", _probe("bf16", ("bf16", 53)), _cpu("avx2", "avx512f", "avx512_bf16"))
    assert "bf16 native (AVX512_BF16, no AMX)" in how and note == ""
    # an AVX-512 CPU without BF16: OpenVINO accepts the hint and emulates
    how, note = describe("bf16", _probe("bf16", ("bf16", 53)), _cpu("avx2", "avx512f"))
    assert "bf16 NOT native" in how and "not BF16 speed" in note
    # no AVX-512: OpenVINO ignores the hint and runs f32
    how, note = describe("bf16", _probe("f32", ("f32", 53)), _cpu("avx2"))
    assert "OpenVINO runs f32 instead" in how and "asked for bf16, OpenVINO ran f32" in note
    assert "not BF16 speed or accuracy" in note


def test_describe_f16_int8_fp8_and_unknown_features():
    from optim.backends.openvino import describe

    how, note = describe("f16", _probe("bf16", ("bf16", 10)), _cpu("avx2", "avx512f", "avx512_bf16"))
    assert "f16 hint: OpenVINO runs bf16 instead" in how and "not FP16 speed or accuracy" in note
    how, note = describe("f16", _probe("f16", ("f16", 10)), _cpu("avx2", "avx512f", "avx512_fp16"))
    assert "f16 native (AVX512_FP16)" in how and note == ""
    how, note = describe(None, _probe("f32", ("u8", 52), ("f32", 1)), _cpu("avx2", "avx512f", "avx512_vnni"))
    assert "int8 kernels with AVX512_VNNI" in how and note == ""
    how, _ = describe(None, _probe("f32", ("u8", 52)), _cpu("avx2"))
    assert "int8 kernels without VNNI" in how
    how, note = describe(None, _probe("f32", ("f32", 4)), _cpu("avx2"), float8=True)
    assert "no FP8 kernels" in how and "not FP8 speed" in note
    how, note = describe("bf16", _probe("bf16", ("bf16", 4)), machine.CpuInfo("?", 1, frozenset(), False))
    assert "cannot tell whether native" in how and note == ""


# --- the runner on OpenVINO ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def int8_files(tmp_path_factory, tiny_onnx, calib_x):
    """The tiny CNN quantized to INT8 Q/DQ with modelopt (TensorRT placement) and ORT quantize_static."""
    from optim.settings import QuantizeSettings
    from optim.stages.quantize.stage import quantize_onnx

    d = tmp_path_factory.mktemp("ov-int8")
    files = {}
    for target in ("tensorrt", "onnxruntime"):
        files[target] = d / f"tiny.int8-{target}.onnx"
        quantize_onnx(tiny_onnx, QuantizeSettings(precision="int8", target=target, method="max"), files[target],
                      calib_x)
    return files


@pytest.mark.slow  # OpenVINO compiles at several batch sizes
@needs_ov
def test_fp32_matches_onnxruntime_at_any_batch(tiny_onnx, eval_xy):
    x, _ = eval_xy
    for n in (1, 3, 17, 64):  # the batch axis stays dynamic
        got, r = _ov(tiny_onnx, x[:n])
        np.testing.assert_allclose(got, _ort(tiny_onnx, x[:n]), rtol=1e-4, atol=1e-5)
    assert r.method.startswith("openvino 2026.4.1 CPU (") and "2 threads" in r.method
    assert "inference precision f32" in r.method and "Conv/MatMul layers: f32 4" in r.method
    assert r.timing_note == "" and r.timing_meaningful
    with open_runner(tiny_onnx, backend="openvino") as r:
        spec = r.input_spec()
        assert (spec.name, spec.shape, spec.dtype) == ("input", TINY_SHAPE, np.float32)
        assert r.input_names == ["input"] and r.output_names == ["logits"]
        out = r.infer(r.random_feeds(5))["logits"]
        assert out.shape == (5, 5)


@pytest.mark.slow  # quantizes (module fixture int8_files)
@needs_ov
@pytest.mark.parametrize("target", ["tensorrt", "onnxruntime"])
def test_int8_qdq_runs_with_integer_kernels(int8_files, tiny_onnx, eval_xy, target):
    x, _ = eval_xy
    got, r = _ov(int8_files[target], x)
    ref = _ort(tiny_onnx, x)
    assert _cos(got, ref) > 0.995
    assert not np.array_equal(got, ref)
    int_layers = sum(n for (p, _), n in r.probe.layers.items() if p in ("u8", "i8"))
    assert int_layers >= 3, r.probe.layers  # the three convolutions at least
    assert "int8 kernels" in r.method
    # and OpenVINO agrees with ONNX Runtime on the same Q/DQ file
    assert _cos(got, _ort(int8_files[target], x)) > 0.999


@needs_ov
def test_bf16_hint_is_close_and_says_what_ran(tiny_onnx, eval_xy):
    x, _ = eval_xy
    got, r = _ov(tiny_onnx, x, "openvino-bf16")
    ref = _ort(tiny_onnx, x)
    assert _cos(got, ref) > 0.999 and np.abs(got - ref).max() < 0.05 * np.abs(ref).max()
    assert "bf16 hint: OpenVINO runs" in r.method
    cpu = machine.cpu_info()
    if r.probe.precision == "bf16" and "bf16" in cpu.native():
        assert "bf16 native" in r.method and r.timing_note == ""
    else:
        assert "not BF16 speed" in r.timing_note


@needs_ov
def test_method_and_note_follow_the_cpu_features(monkeypatch, tiny_onnx):
    """The same compiled model, described for a CPU with and without BF16 instructions."""
    monkeypatch.setattr(machine, "cpu_info", lambda *a: _cpu("avx2", "avx512f", "avx512_bf16", "amx_bf16"))
    r = open_runner(tiny_onnx, backend="openvino-bf16")
    if r.probe.precision != "bf16":
        pytest.skip(f"OpenVINO runs {r.probe.precision} for a bf16 hint on this CPU (no AVX-512)")
    assert "bf16 native (AMX-BF16/AVX512_BF16)" in r.method and r.timing_note == ""
    monkeypatch.setattr(machine, "cpu_info", lambda *a: _cpu("avx2", "avx512f"))
    r = open_runner(tiny_onnx, backend="openvino-bf16")
    assert "bf16 NOT native" in r.method and "AVX2 AVX-512)" in r.method
    assert "not BF16 speed" in r.timing_note


@needs_ov
def test_f16_hint_says_what_ran(tiny_onnx, eval_xy):
    x, _ = eval_xy
    got, r = _ov(tiny_onnx, x, "openvino-f16")
    assert _cos(got, _ort(tiny_onnx, x)) > 0.999
    if r.probe.precision != "f16":
        assert f"OpenVINO runs {r.probe.precision} instead" in r.method
        assert "not FP16 speed" in r.timing_note


@pytest.mark.slow  # quantizes to FP8 and BF16 (modelopt)
@needs_ov
def test_fp8_and_bf16_files_load_or_say_why(tmp_path, tiny_onnx, calib_x, eval_xy):
    from optim.settings import QuantizeSettings
    from optim.stages.quantize.stage import quantize_onnx

    x, _ = eval_xy
    ref = _ort(tiny_onnx, x)
    for precision in ("fp8", "bf16"):
        out = tmp_path / f"tiny.{precision}.onnx"
        quantize_onnx(tiny_onnx, QuantizeSettings(precision=precision, method="max"), out,
                      calib_x if precision == "fp8" else None)
        try:
            got, r = _ov(out, x)
        except (ModelError, BackendUnavailable) as exc:  # allowed: one line saying why
            assert "\n" not in str(exc) and "OpenVINO" in str(exc)
            continue
        assert _cos(got, ref) > 0.99
        if precision == "fp8":
            assert "no FP8 kernels" in r.method and "not FP8 speed" in r.timing_note


@needs_ov
def test_refuses_fused_preprocessing(tmp_path, tiny_onnx):
    from optim.ops.preprocess import PreprocessOp, prepend

    p = tmp_path / "tiny.frames.onnx"
    onnx.save(prepend(onnx.load(str(tiny_onnx)), PreprocessOp(out_h=16, out_w=16), (20, 24)), str(p))
    with pytest.raises(BackendUnavailable, match="OptimPreprocess") as e:
        open_runner(p, backend="openvino")
    assert "\n" not in str(e.value)


@needs_ov
def test_native_crash_in_compile_is_one_line(monkeypatch, tiny_onnx):
    from optim.backends import openvino as ovb

    monkeypatch.setenv(ovb.TEST_CRASH_ENV, "1")
    with pytest.raises(ModelError, match=r"crashed \(SIGSEGV\) compiling .*a probe process took the crash"):
        open_runner(tiny_onnx, backend="openvino")


@needs_ov
def test_broken_file_is_a_model_error(tmp_path):
    p = tmp_path / "bad.onnx"
    p.write_bytes(b"not an onnx file")
    with pytest.raises(ModelError):
        open_runner(p, backend="openvino")


@needs_ov
def test_throughput_mode_measures(tiny_onnx):
    from optim.backends.openvino import OpenVinoRunner

    with OpenVinoRunner(tiny_onnx, threads=2, mode="throughput") as r:
        times = r.measure(4, 1, 3)
        assert len(times) == 3 and all(t > 0 for t in times)
        assert "throughput hint" in r.method and "amortised" in r.timing_method


@pytest.mark.slow  # optim subprocess
@needs_ov
def test_bench_cli_backend_openvino(tmp_path, tiny_onnx):
    out = tmp_path / "b.json"
    p = optim("bench", tiny_onnx, "--backend", "openvino", "--batch-sizes", "1,8", "--warmup", "1",
              "--iterations", "3", "--threads", "2", "--json", out)
    assert p.returncode == 0, p.stderr
    (res,) = json.loads(out.read_text())
    assert [t["batch"] for t in res["timings"]] == [1, 8]
    assert res["method"].startswith("openvino 2026.4.1 CPU") and "wall time" in res["method"]
    assert "tiny.fp32.onnx: openvino" in p.stdout


@pytest.mark.slow  # quantizes (module fixture int8_files), optim subprocess
@needs_ov
def test_check_cli_backend_openvino_keeps_the_reference_on_onnxruntime(tmp_path, tiny_onnx, int8_files):
    out = tmp_path / "c.json"
    p = optim("check", int8_files["onnxruntime"], "--reference", tiny_onnx, "--data", "synthetic:32",
              "--backend", "openvino", "--min-cosine", "0.99", "--json", out)
    assert p.returncode == 0, p.stderr + p.stdout
    res = json.loads(out.read_text())
    assert res["method"].startswith("openvino") and res["reference_method"].startswith("onnxruntime")
    p = optim("check", int8_files["onnxruntime"], "--reference", tiny_onnx, "--data", "synthetic:8",
              "--backend", "nope")
    assert p.returncode == 2 and "unknown backend 'nope'" in p.stderr


@needs_ov
def test_int8_concat_qdq_feeding_an_int8_conv_matches_onnxruntime(tmp_path):
    """OpenVINO 2026.4's ``Core.read_model`` computes a signed INT8 Q/DQ on a Concat output that feeds
    an INT8 Conv with wrong values (modelopt's Q/DQ, as in every YOLO neck: the detector lost 34 mAP
    points there); ``convert_model``, which the runner uses, gets it right. Max error then was ~1."""
    from onnx import TensorProto, helper, numpy_helper

    from optim.backends.onnxruntime import OrtRunner

    rng = np.random.default_rng(0)
    c, cout = 32, 64
    w = (rng.standard_normal((cout, 3 * c, 1, 1)) * 0.1).astype(np.float32)
    inits = [numpy_helper.from_array(np.array(0.08, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z"),
             numpy_helper.from_array(w, "W"), numpy_helper.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), "B"),
             numpy_helper.from_array((np.abs(w).reshape(cout, -1).max(1) / 127).astype(np.float32), "ws"),
             numpy_helper.from_array(np.zeros(cout, np.int8), "wz")]
    nodes = [helper.make_node("Split", ["x", "parts"], ["x0", "x1", "x2"], axis=1),
             helper.make_node("Concat", ["x0", "x1", "x2"], ["cat"], axis=1),
             helper.make_node("QuantizeLinear", ["cat", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
             helper.make_node("QuantizeLinear", ["W", "ws", "wz"], ["Wq"], axis=0),
             helper.make_node("DequantizeLinear", ["Wq", "ws", "wz"], ["Wdq"], axis=0),
             helper.make_node("Conv", ["dq", "Wdq", "B"], ["y"])]
    inits.append(numpy_helper.from_array(np.array([c, c, c], np.int64), "parts"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3 * c, 20, 20])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    path = tmp_path / "concat_qdq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), path)
    x = rng.standard_normal((2, 3 * c, 20, 20)).astype(np.float32) * 3
    x = x / (1 + np.exp(-x))  # SiLU outputs, as in the detector
    with OrtRunner(path) as ort_run, open_runner(path, backend="openvino") as ov_run:
        ref, got = ort_run.infer({"x": x})["y"], ov_run.infer({"x": x})["y"]
    assert np.abs(ref - got).max() < 0.05


@needs_ov
def test_openvino_ir_runs_like_its_onnx(tmp_path, tiny_onnx, calib_x):
    """OpenVINO IR (``.xml``, NNCF's output in scripts/bench_openvino_peer.py) is read with read_model, the
    only reader of IR: convert_model, which ONNX files go through, refuses it ("Cannot recognize input model")."""
    import openvino as ov

    from optim.backends.onnxruntime import OrtRunner
    from optim.backends.openvino import OpenVinoRunner

    xml = tmp_path / "tiny.xml"
    ov.save_model(ov.convert_model(str(tiny_onnx)), str(xml), compress_to_fp16=False)
    with OrtRunner(tiny_onnx) as ref_run, OpenVinoRunner(xml) as ir_run:
        ref, got = ref_run.infer({"input": calib_x})["logits"], ir_run.infer({"input": calib_x})["logits"]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
