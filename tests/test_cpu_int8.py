"""INT8 that is right on every x86 CPU class (issue 19).

- the CPU's integer instructions decide the onnxruntime INT8 format (``optim.stages.quantize.scheme``), for
  each class with patched CPU features; the AVX2 decision changes the file and its cache key;
- a backend that computes a file wrongly (a fake OpenVINO here) fails its row's gate, is never ★,
  and the console and report say why in one phrase;
- the budget runs for int8-onnxruntime and scores every variant on every backend the run reports:
  a file that fails on one backend only gets the node that backend computes wrongly kept back.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from optim.hostcpu import CpuInfo, cpu_info
from optim.stages.quantize.scheme import NO_VNNI, NOT_X86, UNKNOWN, VNNI, ort_int8_scheme, resolve
from optim.settings import QuantizeSettings

AVX2_ONLY = ("avx2",)  # AMD EPYC (Zen 3) class: AVX2 + FMA only
AVX512_NO_VNNI = ("avx2", "avx512f")  # Skylake-SP class
ZEN4 = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16")  # AMD EPYC (Zen 4) class
AMX = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_int8", "amx_bf16")  # Xeon with AMX


@pytest.mark.parametrize("features,fmt,klass,why", [
    (AVX2_ONLY, "u8s8_7bit", NO_VNNI, "AVX2 without VNNI: ONNX Runtime's U8S8 kernel adds product pairs in 16 bits"),
    (AVX512_NO_VNNI, "u8s8_7bit", NO_VNNI, "AVX-512 without VNNI"),
    (ZEN4, "u8s8", VNNI, "AVX512_VNNI sums uint8 x int8 products in 32 bits"),
    (AMX, "u8s8", VNNI, "AMX-INT8/AVX512_VNNI sums"),
])
def test_the_cpu_class_decides_the_int8_format(features, fmt, klass, why):
    s = ort_int8_scheme(CpuInfo("test CPU", 2, frozenset(features)))
    assert (s.format, s.cpu_class) == (fmt, klass)
    assert why in s.reason
    assert s.reduce_range == (fmt == "u8s8_7bit") and s.activations == "uint8" and s.weights == "int8"


def test_unknown_features_and_other_architectures():
    assert ort_int8_scheme(CpuInfo("x", 2, frozenset(), False)).format == "u8s8_7bit"  # safe on any x86
    assert ort_int8_scheme(CpuInfo("x", 2, frozenset(), False)).cpu_class == UNKNOWN
    arm = ort_int8_scheme(CpuInfo("x", 2, frozenset(), False, "aarch64"))
    assert (arm.format, arm.cpu_class) == ("u8s8", NOT_X86)
    forced = ort_int8_scheme(CpuInfo("x", 2, frozenset(AVX2_ONLY)), choice="u8u8")
    assert forced.format == "u8u8" and forced.weights == "uint8" and "asked for" in forced.reason


def test_features_env_replaces_the_flags_read(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: Test CPU\nflags\t\t: fpu avx2 avx512f avx512_vnni\n")
    monkeypatch.delenv("OPTIM_CPU_FEATURES", raising=False)
    assert cpu_info(info).features == {"avx2", "avx512f", "avx512_vnni"}
    monkeypatch.setenv("OPTIM_CPU_FEATURES", "avx2,fma")
    cpu = cpu_info(info)
    assert cpu.features == {"avx2"} and "OPTIM_CPU_FEATURES" in cpu.model and cpu.int8_label() == "AVX2 without VNNI"


def test_resolve_touches_only_onnxruntime_int8(monkeypatch):
    monkeypatch.setenv("OPTIM_CPU_FEATURES", "avx2")
    ort = resolve(QuantizeSettings(precision="int8", target="onnxruntime"))
    assert ort.int8_scheme.format == "u8s8_7bit"
    trt = resolve(QuantizeSettings(precision="int8", target="tensorrt", ort_int8="u8u8"))
    assert trt.int8_scheme is None and trt.ort_int8 == "auto"  # nothing of the CPU in a TensorRT file's key


def _weights(path: Path) -> list[np.ndarray]:
    m = onnx.load(str(path))
    return [onnx.numpy_helper.to_array(i) for i in m.graph.initializer
            if i.name.endswith("_quantized") and i.data_type == onnx.TensorProto.INT8]


@pytest.mark.slow  # quantizes for two CPU classes
def test_avx2_class_gets_7bit_weights_and_its_own_cache_key(tmp_path, tiny_onnx, calib_x, monkeypatch):
    """On an AVX2-only CPU every int8 weight of the onnxruntime file lies in [-64, 64], so ORT's 16-bit
    pair sums (255 x 64 x 2 = 32,640) cannot saturate; the format is in the quantize JSON and the
    manifest, and a run folder moved to a VNNI CPU quantizes again (a file for that class)."""
    from optim.artifacts import Artifact, Data
    from optim.executor import Executor
    from optim.stages.quantize import stage as quantize

    fp32 = Artifact.of_file(tiny_onnx, "fp32", "onnx")
    calib = Data.of("data/calibration", calib_x)
    ex = Executor(tmp_path / "run")

    def step(features: str) -> Artifact:
        monkeypatch.setenv("OPTIM_CPU_FEATURES", features)
        qs = resolve(QuantizeSettings(precision="int8", target="onnxruntime", method="max"))
        return ex.step(quantize, "int8-onnxruntime", "model.int8-onnxruntime.onnx", [fp32, calib], qs,
                       tag="int8-onnxruntime")

    a = step("avx2 fma")
    w = _weights(a.path)
    assert w and max(int(np.abs(x.astype(np.int32)).max()) for x in w) <= 64
    rep = json.loads((tmp_path / "run/quantize/int8-onnxruntime.json").read_text())
    assert rep["int8_scheme"]["format"] == "u8s8_7bit" and rep["int8_scheme"]["cpu_class"] == NO_VNNI
    man = json.loads((tmp_path / "run/manifest.json").read_text())["artifacts"]["int8-onnxruntime"]
    assert man["settings"]["int8_scheme"]["format"] == "u8s8_7bit"

    assert step("avx2 fma").sha256 == a.sha256 and ex.ran("cached") == ["int8-onnxruntime"]
    b = step("avx2 avx512f avx512_vnni")  # another class: quantized again, full 8-bit weights
    assert ex.ran("done") == ["int8-onnxruntime", "int8-onnxruntime"] and b.sha256 != a.sha256
    assert max(int(np.abs(x.astype(np.int32)).max()) for x in _weights(b.path)) > 64
    assert json.loads((tmp_path / "run/quantize/int8-onnxruntime.json").read_text())["int8_scheme"]["format"] == "u8s8"
    step("avx2 avx512f amx_int8")  # a third CPU of the VNNI class: the same file, reused
    assert ex.ran("cached")[-1] == "int8-onnxruntime"


# -- a backend that computes INT8 wrongly, through optim run -------------------------------------


def spread_cnn():
    """tests.conftest's tiny CNN with its head centred and scaled on normal inputs, so that every
    class wins somewhere (a reference that predicts one class cannot tell right from wrong)."""
    import torch

    from tests.helpers.models import tiny_cnn

    m = tiny_cnn()
    xs = torch.from_numpy(np.random.default_rng(7).standard_normal((256, 3, 16, 16)).astype(np.float32))
    with torch.no_grad():
        feats = m[:-1](xs)
        m[-1].weight.copy_(torch.randn(m[-1].weight.shape, generator=torch.Generator().manual_seed(0))
                           / feats.std(0).clamp_min(1e-6))
        m[-1].bias.copy_(-(m[-1].weight @ feats.mean(0)))
    return m


TINY = {
    "name": "tiny",
    "model": {"source": "tests.test_cpu_int8:spread_cnn"},
    "input": {"shape": [3, 16, 16], "batch": {"min": 1, "opt": 4, "max": 64}},
    "export": {"output_names": ["logits"], "verify_batches": [1, 2]},
    "calibration": {"data": {"kind": "synthetic", "count": 32}, "samples": 32},
    "evaluation": {"data": {"kind": "synthetic", "count": 64, "seed": 3}},
    "precisions": ["fp32", {"precision": "int8", "target": "onnxruntime"}],
    "quantize": {"method": "max"},
    "check": {"batch_size": 64},
    "bench": {"batch_sizes": [1, 8], "warmup": 0, "iterations": 2},
    "gates": {"default": {"min_top1_agreement": 60.0}},
    "backends": ["onnxruntime", "openvino"],
}
KEPT = "/2/Conv"  # the node the fake OpenVINO computes wrongly in the budget test


def _fake_openvino(broken_when):
    """Register ``openvino`` as ONNX Runtime with the class scores rolled by one (top-1 agreement with
    FP32 near 0) for the files ``broken_when(model)`` picks, and timings 10x faster than ORT's."""
    from optim.backends import register_backend
    from optim.backends.onnxruntime import OrtRunner

    class Miscomputing(OrtRunner):
        def __init__(self, path, threads=None, **_):
            super().__init__(path, threads=threads)
            self.broken = broken_when(onnx.load(str(path)))
            self.method = "fake OpenVINO (ONNX Runtime, INT8 scores rolled)"

        def infer(self, feeds):
            out = super().infer(feeds)
            return {k: np.roll(v, 1, axis=1) for k, v in out.items()} if self.broken else out

        def measure(self, batch, warmup, iterations, *, on_run=None):
            return [t / 10 for t in super().measure(batch, warmup, iterations, on_run=on_run)]

    from optim.backends.select import OPENVINO_HINTS

    # the same part in optim run as the real one: a CPU family, whose FP16/BF16 entries are hinted
    register_backend("openvino", lambda path, threads=None, **kw: Miscomputing(path, threads=threads),
                     handles=(".onnx",), family=True, package="openvino", precision_hints=OPENVINO_HINTS,
                     replace=True)


def _quantized(model: onnx.ModelProto, name: str | None = None) -> bool:
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return any(any(i in dq for i in n.input) for n in model.graph.node
               if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and (name is None or n.name == name))


@pytest.fixture
def fake_openvino():
    pytest.importorskip("openvino")  # the family is offered only where OpenVINO is installed
    from optim.backends.select import register_builtin_backends

    yield _fake_openvino
    register_builtin_backends()  # the real OpenVINO backend again


def _run(tmp_path: Path, recipe: dict):
    from optim.recipe import load_recipe
    from optim.workflow.run import Workflow

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    wf = Workflow(load_recipe(path), path, out_root=tmp_path / "art")
    return wf, wf.ex.root


@pytest.mark.slow  # quantizes and checks
def test_a_backend_that_computes_int8_wrongly_fails_its_gate_is_not_starred_and_says_why(
        tmp_path, fake_openvino, capsys):
    from optim.errors import GateError
    from optim.stages.report.stage import collect

    fake_openvino(lambda m: _quantized(m))
    wf, root = _run(tmp_path, TINY)
    with pytest.raises(GateError, match="int8-onnxruntime@openvino"):
        wf.run()
    _, rows = collect(root)
    by = {(r.tag, r.backend): r for r in rows}
    bad, good = by[("int8-onnxruntime", "openvino")], by[("int8-onnxruntime", "onnxruntime")]
    assert "FAILED" in bad.gates and "FAILED" not in good.gates
    assert bad.throughput > good.throughput  # faster, yet not the ★ row: it is wrong
    assert not bad.fastest and good.fastest
    phrase = bad.disagrees
    assert phrase.startswith(f"OpenVINO INT8 kernels on {cpu_info().int8_label()} disagree with the reference: "
                             "agreement ")
    assert "(ONNX Runtime, same entry: " in phrase and good.disagrees is None
    out = capsys.readouterr()
    assert "int8-onnxruntime@openvino: OpenVINO INT8 kernels on" in " ".join((out.out + out.err).split())
    md = (root / "report.md").read_text()
    assert phrase in md and "| int8 | onnxruntime | onnxruntime ★ |" in md
    assert next(r for r in json.loads((root / "report.json").read_text())["rows"]
                if r["tag"] == "int8-onnxruntime" and r["backend"] == "openvino")["disagrees"] == phrase
    assert "INT8 format: uint8 activations x int8 weights" in md  # the scheme, in the report too


@pytest.mark.slow  # quantizes and tunes
def test_the_budget_keeps_the_node_one_backend_computes_wrongly(tmp_path, fake_openvino):
    """int8-onnxruntime gets the budget; ONNX Runtime alone meets it, the (fake) OpenVINO computes the file
    wrongly while /2/Conv is quantized: the budget ranks on OpenVINO, keeps /2/Conv, and both rows pass."""
    from optim.stages.report.stage import collect

    fake_openvino(lambda m: _quantized(m, KEPT))
    recipe = {**TINY, "tuning": {"samples": 64, "sensitivity_samples": 32, "max_drop": {"int8": 50.0},
                                 "metric": "agreement"}}
    wf, root = _run(tmp_path, recipe)
    wf.run()
    tune = json.loads((root / "tune/int8-onnxruntime.json").read_text())
    assert tune["backends"] == ["onnxruntime", "openvino"] and tune["ranked_on"] == ["openvino"]
    assert tune["full"]["onnxruntime"] <= 50.0 < tune["full"]["openvino"]
    assert [e["node"] for e in tune["budget"]["excluded"]] == [KEPT]
    assert tune["budget"]["before"]["backend"] == "openvino" and tune["budget"]["after"]["drop"] <= 50.0
    tuned = onnx.load(str(root / "model.int8-onnxruntime.onnx"))
    assert not _quantized(tuned, KEPT) and _quantized(tuned)
    _, rows = collect(root)
    by = {(r.tag, r.backend): r for r in rows}
    assert "FAILED" not in by[("int8-onnxruntime", "openvino")].gates
    assert "FAILED" in by[("int8-onnxruntime-nobudget", "openvino")].gates or \
        by[("int8-onnxruntime-nobudget", "openvino")].disagrees  # the file before the budget: wrong there


def test_detection_gates_agreement_with_fp32_by_default(tmp_path):
    """A detector file (or backend) that computes garbage fails on unlabelled images too: detection's
    default gates hold agreement with FP32's detections at 75%, under any recipe gates; 0 turns it off."""
    from optim.cli.evaluate import _gates
    from optim.recipe import load_recipe
    from optim.tasks import get_task

    det = get_task("detection")
    r = load_recipe(Path("recipes/fashion_detector.yaml"))
    gates = r.gates_for("int8-tensorrt")
    assert gates.min_agreement == 75.0 and gates.max_map_drop == 1.0  # the recipe's own gates stay
    unlabelled = det.gates_model(**det.default_gates)  # a recipe with no gates of its own, images without boxes
    outputs = {"output0": {"cosine": 0.26, "max_abs_error": 300.0, "agreement": 2.4}}
    failed = [g for g in det.apply_gates(outputs, None, unlabelled) if not g.passed]
    assert [g.gate for g in failed] == ["min_agreement"] and failed[0].value == 2.4
    ok = {"output0": {"cosine": 0.997, "max_abs_error": 90.0, "agreement": 92.5}}
    assert all(g.passed for g in det.apply_gates(ok, None, unlabelled))
    assert _gates(det).min_agreement == 75.0 and _gates(det, min_agreement=0.0).min_agreement == 0.0
    assert not get_task("classification").default_gates  # classification recipes set their own
