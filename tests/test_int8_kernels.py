"""INT8 kernels on x86 CPUs without VNNI, for real, whatever CPU runs the tests.

Without VNNI, x86 integer kernels multiply uint8 x int8 with ``vpmaddubsw``, which adds each
pair of products into a signed 16-bit lane and saturates there (255 x 127 x 2 = 64,770 >
32,767); VNNI and AMX-INT8 sum in 32 bits. Two ways to get such kernels on any machine:

- ONNX Runtime: ``qemu-x86_64 -cpu Haswell`` runs this machine's own ORT binary on a CPU that
  reports AVX2 and FMA and no AVX-512/VNNI, so ORT's MLAS picks its AVX2 kernels. Skipped, with
  the reason, where qemu-user is not installed (``.ci/run`` installs it when it can). Speed
  under emulation means nothing and is not measured.
- OpenVINO: ``ONEDNN_MAX_CPU_ISA=AVX2`` caps its oneDNN kernels at AVX2 (the runtime graph then
  names ``jit_avx2_..._I8`` kernels); natively, in a child process.

A 1x1 Conv whose products pairs exceed 16 bits comes out saturated on both (OpenVINO's signed
INT8 activations, shifted to uint8 inside, collapse to almost 0: the defect that gave a trained
YOLOv8n 2.4% agreement on an AVX2-only EPYC); with the 7-bit weights optim gives that class
(``optim.stages.quantize.scheme``: 255 x 64 x 2 = 32,640) both are exact.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

QEMU = shutil.which("qemu-x86_64")
K = 64  # input channels: 32 product pairs per output
_SCRIPT = """
import sys, numpy as np, onnxruntime as ort
so = ort.SessionOptions(); so.intra_op_num_threads = 1
s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
np.save(sys.argv[3], s.run(None, {"x": np.load(sys.argv[2])})[0])
"""

needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 not installed (apt-get install qemu-user): "
                                                     "no emulated AVX2-only CPU to run ONNX Runtime on")


def conv_u8s8(weight: int, activations: str = "uint8") -> onnx.ModelProto:
    """x (float, 0..1) -> Q ``activations`` (uint8: scale 1/255; int8: 1/127) -> DQ -> 1x1 Conv with int8
    weights all ``weight`` (scale 1/127) -> Q uint8 -> DQ -> y: the QDQ form ORT fuses into its
    QLinearConv. y is K * weight / 127 at x = 1."""
    w = np.full((1, K, 1, 1), weight, np.int8)
    out_scale = K / 255  # y reaches K when x = 1 and weight = 127
    s8 = activations == "int8"
    inits = [numpy_helper.from_array(np.array(1 / 127 if s8 else 1 / 255, np.float32), "xs"),
             numpy_helper.from_array(np.array(0, np.int8 if s8 else np.uint8), "xz"),
             numpy_helper.from_array(w, "w_q"),
             numpy_helper.from_array(np.array(1 / 127, np.float32), "ws"),
             numpy_helper.from_array(np.array(0, np.int8), "wz"),
             numpy_helper.from_array(np.array(out_scale, np.float32), "ys"),
             numpy_helper.from_array(np.array(0, np.uint8), "yz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w_q", "ws", "wz"], ["wd"]),
             helper.make_node("Conv", ["xd", "wd"], ["c"], name="conv"),
             helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "ys", "yz"], ["y"])]
    g = helper.make_graph(nodes, "u8s8", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _run(tmp: Path, model: onnx.ModelProto, x: np.ndarray, cpu: str | None) -> np.ndarray:
    m, xi, yo, py = tmp / "m.onnx", tmp / "x.npy", tmp / "y.npy", tmp / "run.py"
    onnx.save(model, str(m))
    np.save(xi, x)
    py.write_text(_SCRIPT)
    cmd = [sys.executable, str(py), str(m), str(xi), str(yo)]
    if cpu:
        cmd = [QEMU, "-cpu", cpu, *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return np.load(yo)


@pytest.mark.slow  # ONNX Runtime on an emulated (qemu) AVX2-only CPU
@needs_qemu
@pytest.mark.parametrize("weight,exact_on_avx2", [(127, False), (64, True)])
def test_u8s8_saturates_without_vnni_and_7bit_weights_do_not(tmp_path, weight, exact_on_avx2):
    x = np.ones((1, K, 4, 4), np.float32)  # uint8 255 everywhere
    want = K * weight / 127  # the float result: every product 255 x weight, no saturation
    step = K / 255  # one output quantization step
    emulated = _run(tmp_path, conv_u8s8(weight), x, "Haswell")
    if exact_on_avx2:
        np.testing.assert_allclose(emulated, want, atol=step)
    else:  # 16-bit pair sums clipped at 32,767 instead of 64,770: about half the result
        assert float(emulated.max()) < 0.6 * want, emulated.ravel()[:4]
    # this machine's CPU: with VNNI (or AMX) both are exact; without, it matches the emulation. Its real
    # flags decide (not OPTIM_CPU_FEATURES, which changes optim's decisions, not ORT's kernels)
    from optim.hostcpu import NATIVE, parse_cpuinfo

    native = _run(tmp_path, conv_u8s8(weight), x, None)
    try:
        flags = parse_cpuinfo(Path("/proc/cpuinfo").read_text())[1] or frozenset()
    except OSError:
        pytest.skip("no /proc/cpuinfo: this CPU's integer instructions are unknown")
    if flags & set(NATIVE["int8-vnni"]):
        np.testing.assert_allclose(native, want, atol=step)
    else:
        np.testing.assert_allclose(native, emulated, atol=step)


@pytest.mark.slow  # quantizes the bundled classifier, runs it on an emulated (qemu) AVX2-only CPU
@needs_qemu
def test_optims_avx2_file_of_the_bundled_classifier_is_right_on_an_emulated_avx2_cpu(tmp_path, monkeypatch):
    """The bundled classifier's onnxruntime INT8 file as optim makes it for an AVX2-only CPU, run on one
    (emulated) against FP32 on the first 64 test images: top-1 agreement at least 95% and cosine 0.99
    (the 8-bit file optim made before gave cosine 0.960 and lost 3 points on a real AVX2-only EPYC)."""
    from optim import data as data_mod
    from optim.backends import open_runner
    from optim.stages.quantize.scheme import resolve
    from optim.recipe import load_recipe
    from optim.settings import QuantizeSettings
    from optim.stages.export import onnx_from_torch
    from optim.stages.quantize.stage import quantize_onnx
    from optim.sources import load_model

    r = load_recipe(Path("recipes/fashion_resnet.yaml"))
    fp32, q = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    onnx_from_torch(load_model(r.model.source), r.input, r.export, fp32)
    calib, _, _ = data_mod.prepare(r.calibration.data, r.preprocess, r.input, 256)
    x, _, _ = data_mod.prepare(r.evaluation.data, r.preprocess, r.input, 64)
    monkeypatch.setenv("OPTIM_CPU_FEATURES", "avx2 fma")
    qs = resolve(QuantizeSettings(**r.quantize.model_dump(), precision="int8", target="onnxruntime"))
    assert qs.int8_scheme.format == "u8s8_7bit"
    quantize_onnx(fp32, qs, q, calib)
    with open_runner(fp32) as runner:
        ref = runner.infer({"input": x})["logits"]
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT.replace('{"x":', '{"input":'))
    np.save(tmp_path / "x.npy", x)
    p = subprocess.run([QEMU, "-cpu", "Haswell", sys.executable, str(script), str(q), str(tmp_path / "x.npy"),
                        str(tmp_path / "y.npy")], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    got = np.load(tmp_path / "y.npy")
    cos = np.sum(ref * got, 1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert np.mean(ref.argmax(1) == got.argmax(1)) >= 0.95 and cos.mean() >= 0.99, (cos.mean(), got[:2])


_OV_SCRIPT = """
import json, sys, numpy as np, openvino as ov
c = ov.Core().compile_model(ov.convert_model(sys.argv[1]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
y = c(np.ones((1, %d, 4, 4), np.float32))[0]
kernels = [op.get_rt_info()["primitiveType"].astype(str) for op in c.get_runtime_model().get_ops()
           if op.get_rt_info()["layerType"].astype(str) == "Convolution"]
print(json.dumps({"y": float(y.ravel()[0]), "kernels": kernels}))
""" % K


def _openvino(tmp: Path, model: onnx.ModelProto, isa: str | None) -> dict:
    import json
    import os

    m, py = tmp / "m.onnx", tmp / "ov.py"
    onnx.save(model, str(m))
    py.write_text(_OV_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    p = subprocess.run([sys.executable, str(py), str(m)], capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("activations,weight,exact_on_avx2", [
    ("int8", 127, False), ("uint8", 127, False), ("int8", 64, True), ("uint8", 64, True)])
def test_openvino_avx2_int8_kernels_saturate_and_7bit_weights_do_not(tmp_path, activations, weight, exact_on_avx2):
    """OpenVINO's own defect on x86 without VNNI: its AVX2 INT8 convolution saturates 16-bit pair sums.
    Signed activations (modelopt's Q/DQ) are shifted to uint8 first, so x = 127 becomes 255 and the
    result collapses (0.5 instead of 32.3 x 2 here); uint8 ones come out halved. 7-bit weights: exact."""
    pytest.importorskip("openvino")
    from optim.hostcpu import parse_cpuinfo

    if not (parse_cpuinfo(Path("/proc/cpuinfo").read_text())[1] or frozenset()) & {"avx2"}:
        pytest.skip("this CPU has no AVX2: OpenVINO cannot be capped at AVX2 kernels here")
    want = K * weight / 127
    got = _openvino(tmp_path, conv_u8s8(weight, activations), "AVX2")
    if not all("avx2" in k for k in got["kernels"]):
        pytest.skip(f"OpenVINO did not cap its kernels at AVX2 (ran {got['kernels']}): ONEDNN_MAX_CPU_ISA ignored")
    if exact_on_avx2:
        assert abs(got["y"] - want) < 0.01 * want, got
    elif activations == "int8":
        assert abs(got["y"]) < 0.1 * want, got  # collapses
    else:
        assert abs(got["y"] - want / 2) < 0.05 * want, got  # 32,767 instead of 64,770 per pair
