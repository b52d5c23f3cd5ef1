"""The build stage's own logic on CPU: recipe -> build settings, profile shapes, the engine plan
for TensorRT 10 and 11.

Tests named ``test_recording_fake_only__...`` drive ``optim.stages.build`` through a recording
fake of the ``tensorrt`` module (tests/helpers/fake_tensorrt.py), wrapped to mimic one TensorRT
version (tests/helpers/fake_tensorrt_versions.py: it refuses any name that version's Python API
lacks). They show which TensorRT calls and flags optim makes; they are NOT proof that
TensorRT accepts them or that an engine works. That evidence comes only from tests/gpu/
on a GPU with TensorRT.
"""

from __future__ import annotations

import dataclasses
import json
import re

import onnx
import pytest

from optim.stages.build import engine_from_onnx, layer_summary, onnx_precision, plan_engine, profile_for
from optim.backends.engine_compat import manifest_path
from optim.errors import BackendUnavailable, InputError, ModelError, RecipeError
from optim.backends.machine import Gpu
from optim.onnx_tools import TensorInfo, graph_inputs, load_onnx
from optim.recipe import load_recipe
from optim.settings import BatchRange, BuildSettings
from optim.backends.tensorrt_api import TensorRT
from optim.errors import BuildError
from tests.helpers import REPO
from tests.helpers.fake_tensorrt import FakeTensorRT, names
from tests.helpers.fake_tensorrt_versions import fake_tensorrt, strict
from tests.helpers.models import precision_model
from tests.helpers.cli import assert_one_line_error, optim

H100 = Gpu(0, "NVIDIA H100 80GB HBM3", (9, 0), 81559)
A100 = Gpu(0, "NVIDIA A100-SXM4-80GB", (8, 0), 81920)
PRECISION_FLAGS = {"BuilderFlag.FP16", "BuilderFlag.BF16", "BuilderFlag.INT8", "BuilderFlag.FP8"}
MAJORS = (10, 11)


@pytest.fixture
def onnx_file(tmp_path):
    def make(kind: str):
        p = tmp_path / f"m.{kind}.onnx"
        onnx.save(precision_model(kind), str(p))
        return p
    return make


# -- recipe -> build settings --------------------------------------------------------------------
def _recipe_text(extra: str = "") -> str:
    text = (REPO / "recipes/fashion_resnet.yaml").read_text().replace("../calib/", f"{REPO}/calib/")
    return text + extra


def test_recipe_build_defaults_and_tags(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(_recipe_text())
    r = load_recipe(p)
    assert r.build == BuildSettings()
    assert r.build.hardware_compatibility == "none" and r.build.tf32 is False and r.build.timing_cache
    assert r.build_tags() == ["fp32", "int8-tensorrt", "fp8-tensorrt", "fp16", "bf16"]  # not int8-onnxruntime


def test_recipe_build_section_is_validated_and_paths_resolved(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(_recipe_text("build:\n  precisions: [fp16, int8-tensorrt]\n  plugins: [plugins/libx.so]\n"
                              "  hardware_compatibility: ampere_plus\n  optimization_level: 5\n  extra_targets: []\n"))
    r = load_recipe(p)
    assert r.build_tags() == ["int8-tensorrt", "fp16"] and r.build.extra_targets == ()
    assert r.build.plugins == ((tmp_path / "plugins/libx.so").resolve(),)
    assert r.build.optimization_level == 5
    for bad, fragment in [("build:\n  turbo: true\n", "unknown key 'turbo'"),
                          ("build:\n  precisions: [int4]\n", "build.precisions names ['int4']"),
                          # targets say which builder a file is for: the ORT placement never reaches one
                          ("build:\n  precisions: [int8-onnxruntime]\n", "placed for ONNX Runtime on CPU: TensorRT's parser"),
                          ("build:\n  extra_targets: [h100]\n", "extra_targets"),
                          ("build:\n  hardware_compatibility: hopper_plus\n", "hardware_compatibility"),
                          ("build:\n  optimization_level: 9\n", "optimization_level")]:
        p.write_text(_recipe_text(bad))
        with pytest.raises(RecipeError, match=re.escape(fragment)):
            load_recipe(p)


# -- what a model computes in, and profile shapes ------------------------------------------------
@pytest.mark.parametrize("kind", ["fp32", "fp16", "bf16", "int8", "fp8"])
def test_onnx_precision_reads_the_graph(onnx_file, kind):
    assert onnx_precision(load_onnx(onnx_file(kind), check=False)) == kind


def test_profile_from_recipe_batch_range(tiny_onnx):
    prof = profile_for(graph_inputs(load_onnx(tiny_onnx)), BatchRange(min=1, opt=64, max=256), (3, 16, 16))
    assert (prof.input, prof.min, prof.opt, prof.max) == ("input", (1, 3, 16, 16), (64, 3, 16, 16), (256, 3, 16, 16))
    assert prof.note == ""


def test_profile_fixed_batch_and_bad_inputs():
    fixed = [TensorInfo("x", (8, 3, 4, 4), 1)]
    prof = profile_for(fixed, BatchRange(min=1, opt=4, max=16))
    assert prof.min == prof.opt == prof.max == (8, 3, 4, 4) and "fixed batch of 8" in prof.note
    with pytest.raises(InputError, match=r"\[3, 4, 4\] per sample, the recipe says \[3, 8, 8\]"):
        profile_for(fixed, BatchRange(), (3, 8, 8))
    with pytest.raises(ModelError, match="non-fixed sizes"):
        profile_for([TensorInfo("x", ("n", 3, "h", 4), 1)], BatchRange())
    with pytest.raises(ModelError, match="2 inputs"):
        profile_for(fixed * 2, BatchRange())


# -- the engine plan -----------------------------------------------------------------------------
def _prof():
    return profile_for([TensorInfo("x", ("n", 8), 1)], BatchRange(min=1, opt=4, max=16))


@pytest.mark.parametrize("major", MAJORS)
@pytest.mark.parametrize("kind", ["int8", "fp8", "fp16", "bf16", "fp32"])
def test_typed_models_build_strongly_typed_without_precision_flags(kind, major):
    plan = plan_engine(kind, None, BuildSettings(), _prof(), major)
    assert plan.strongly_typed and plan.precision == kind and plan.tensorrt_major == major
    assert not {f"BuilderFlag.{f}" for f in plan.flags_on} & PRECISION_FLAGS
    assert plan.flags_off == ("TF32",)  # TF32 is on by default in TensorRT; the default here is off
    # the creation flag only where the major needs it: TensorRT 11 networks are always strongly typed
    assert plan.network_flags == (("STRONGLY_TYPED",) if major == 10 else ())


@pytest.mark.parametrize("kind", ["int8", "fp8", "fp16", "bf16", "fp32"])
@pytest.mark.parametrize("s", [BuildSettings(), BuildSettings(tf32=True, version_compatible=True, workspace_mib=64,
                                                              hardware_compatibility="ampere_plus")])
def test_strongly_typed_plans_are_the_same_under_both_majors(kind, s):
    p10, p11 = (plan_engine(kind, None, s, _prof(), major) for major in MAJORS)
    assert dataclasses.replace(p10, tensorrt_major=11) == p11
    assert p10.as_dict()["network_flags"] == ["STRONGLY_TYPED"] and p11.as_dict()["network_flags"] == []


def test_plan_takes_the_version_string_or_the_major():
    assert plan_engine("int8", None, BuildSettings(), _prof(), "11.4.0.106").tensorrt_major == 11
    assert plan_engine("int8", None, BuildSettings(), _prof(), "10.16.1.11") == \
        plan_engine("int8", None, BuildSettings(), _prof(), 10)
    for other in ("9.3.0", "12.0.1", 12):
        with pytest.raises(BackendUnavailable, match="optim supports TensorRT 10 and 11.*setup_gpu.sh --tensorrt"):
            plan_engine("int8", None, BuildSettings(), _prof(), other)


def test_plan_options_map_to_tensorrt_names():
    s = BuildSettings(tf32=True, version_compatible=True, hardware_compatibility="ampere_plus",
                      optimization_level=5, workspace_mib=512)
    plan = plan_engine("int8", "int8", s, _prof(), 10)
    assert plan.flags_on == ("TF32", "VERSION_COMPATIBLE") and plan.flags_off == ()
    assert plan.hardware_compatibility == "AMPERE_PLUS" and plan.optimization_level == 5
    assert plan.workspace_bytes == 512 << 20
    assert plan_engine("fp32", None, BuildSettings(), _prof(), 10).hardware_compatibility == "NONE"


def test_fp16_from_fp32_model_uses_the_builder_flag_weakly_typed_on_tensorrt_10():
    plan = plan_engine("fp32", "bf16", BuildSettings(), _prof(), 10)
    assert not plan.strongly_typed and plan.flags_on == ("BF16",) and plan.network_flags == ()


@pytest.mark.parametrize("want", ["fp16", "bf16"])
def test_tensorrt_11_refuses_builder_flags_in_one_line_naming_autocast(want):
    with pytest.raises(InputError) as err:
        plan_engine("fp32", want, BuildSettings(), _prof(), "11.1.0")
    msg = str(err.value)
    assert "\n" not in msg and f"TensorRT 11 removed the {want.upper()} builder flag" in msg
    assert f"optim quantize MODEL --precision {want}" in msg and "build.fp16_bf16: strongly_typed" in msg


def test_plan_refuses_what_tensorrt_would_misbuild():
    for major in MAJORS:
        with pytest.raises(InputError, match="optim quantize --precision int8"):
            plan_engine("fp32", "int8", BuildSettings(), _prof(), major)
        with pytest.raises(InputError, match="already computes in int8"):
            plan_engine("int8", "fp16", BuildSettings(), _prof(), major)


def test_layer_summary_counts_compute_layers_by_input_precision():
    info = json.dumps({"Layers": [
        {"LayerType": "CaskConvolution", "Inputs": [{"Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}]},
        {"LayerType": "Reformat", "Inputs": [{"Format/Datatype": "Row major linear FP32"}]},
        {"LayerType": "CaskGemm", "Inputs": [{"Format/Datatype": "Row major linear FP16 format"}]},
        {"LayerType": "CaskGemm", "Inputs": [{"Format/Datatype": "Channel major BF16"}]},
        {"LayerType": "Pooling", "Inputs": [{"Format/Datatype": "Float"}]}]})
    s = layer_summary(info)
    assert s["compute_layers"] == 4
    assert s["by_input_precision"] == {"BF16": 1, "FP16": 1, "FP32": 1, "INT8": 1}
    assert layer_summary("not json")["compute_layers"] is None


# -- the build stage through the recording fake ----------------------------------------------------
def _build(onnx_path, tmp_path, fake, s=BuildSettings(), gpu=H100, **kw):
    """Build through ``fake``, made strict: names its TensorRT version lacks raise AttributeError."""
    return engine_from_onnx(onnx_path, tmp_path / "m.h100.plan", s, "h100", batch=BatchRange(min=1, opt=4, max=16),
                            timing_cache=tmp_path / "timing.cache", api=TensorRT(strict(fake)), gpu=gpu, **kw)


def test_recording_fake_only__int8_build_calls_flags_and_files(onnx_file, tmp_path):
    lib = tmp_path / "libplug.so"
    lib.write_bytes(b"\x7fELF")
    fake = FakeTensorRT()
    rep = _build(onnx_file("int8"), tmp_path, fake, BuildSettings(plugins=(lib,)))
    calls, order = fake.calls, names(fake)
    # plugins are registered before the ONNX is parsed
    assert order.index("init_libnvinfer_plugins") < order.index("registry.load_library") < order.index(
        "parser.parse_from_file")
    assert ("builder.create_network", 1 << 0) in calls  # STRONGLY_TYPED
    assert not {c[1] for c in calls if c[0] == "config.set_flag"} & PRECISION_FLAGS
    assert ("config.clear_flag", "BuilderFlag.TF32") in calls
    assert ("config.builder_optimization_level=", 3) in calls
    assert ("config.hardware_compatibility_level=", "HardwareCompatibilityLevel.NONE") in calls
    assert ("config.profiling_verbosity=", "ProfilingVerbosity.DETAILED") in calls
    assert "config.set_memory_pool_limit" not in order  # TensorRT's default unless asked
    assert fake.profile == ("x", (1, 8), (4, 8), (16, 8))
    assert ("context.set_input_shape", "x", (4, 8)) in calls  # layer info for the opt shape
    plan = tmp_path / "m.h100.plan"
    assert plan.read_bytes().startswith(b"FAKE-PLAN") and rep.engine == str(plan)
    man = json.loads(manifest_path(plan).read_text())
    assert man["tensorrt"] == "10.16.1.11" and man["model_precision"] == "int8"
    assert man["tensorrt_major"] == 10 and "STRONGLY_TYPED creation flag" in man["tensorrt_major_implies"]
    assert man["plan"]["tensorrt_major"] == 10 and man["plan"]["network_flags"] == ["STRONGLY_TYPED"]
    assert man["gpu"] == {"name": H100.name, "compute_capability": "9.0"}
    assert {"cuda", "driver", "settings", "plan", "plugins", "onnx_sha256", "engine_sha256"} <= set(man)
    assert man["settings"]["hardware_compatibility"] == "none" and man["plan"]["strongly_typed"] is True
    assert man["plugins"][0]["path"] == str(lib)
    assert man["layer_summary"]["by_input_precision"] == {"FP32": 1, "INT8": 1}
    assert json.loads((tmp_path / "m.h100.layers.json").read_text())["Layers"][0]["Name"] == "conv1"
    assert man["timing_cache"] == {"path": "timing.cache", "reused": False}


def test_recording_fake_only__timing_cache_is_kept_and_reused(onnx_file, tmp_path):
    _build(onnx_file("fp16"), tmp_path, FakeTensorRT())
    first = (tmp_path / "timing.cache").read_bytes()
    fake = FakeTensorRT()
    rep = _build(onnx_file("fp16"), tmp_path, fake)
    assert ("config.create_timing_cache", first) in fake.calls
    assert rep.manifest["timing_cache"]["reused"] is True
    (tmp_path / "timing.cache").write_bytes(b"FOREIGN")  # another GPU/TensorRT: start afresh, do not fail
    fake = FakeTensorRT()
    assert _build(onnx_file("fp16"), tmp_path, fake).manifest["timing_cache"]["reused"] is False
    assert ("config.create_timing_cache", b"") in fake.calls


def test_recording_fake_only__fp16_builder_flag_mode(onnx_file, tmp_path):
    fake = FakeTensorRT()
    _build(onnx_file("fp32"), tmp_path, fake, BuildSettings(tf32=True, workspace_mib=64), precision="fp16")
    assert ("builder.create_network", 0) in fake.calls
    assert ("config.set_flag", "BuilderFlag.FP16") in fake.calls and ("config.set_flag", "BuilderFlag.TF32") in fake.calls
    assert ("config.set_memory_pool_limit", "MemoryPoolType.WORKSPACE", 64 << 20) in fake.calls


@pytest.mark.parametrize("kind", ["int8", "fp8", "fp16", "bf16", "fp32"])
def test_recording_fake_only__tensorrt_11_builds_strongly_typed_without_the_creation_flag(onnx_file, tmp_path, kind):
    fake = fake_tensorrt(11)
    rep = _build(onnx_file(kind), tmp_path, fake)
    assert ("builder.create_network", 0) in fake.calls  # every TensorRT 11 network is strongly typed
    assert not {c[1] for c in fake.calls if c[0] in ("config.set_flag", "config.clear_flag")} & PRECISION_FLAGS
    man = rep.manifest
    assert man["tensorrt"] == "11.1.0.106" and man["tensorrt_major"] == 11 and man["plan"]["strongly_typed"]
    assert "every network is strongly typed" in man["tensorrt_major_implies"] and man["plan"]["network_flags"] == []
    # the same plan as under TensorRT 10, but for the major
    fake10 = fake_tensorrt(10)
    plan10 = _build(onnx_file(kind), tmp_path, fake10).manifest["plan"]
    assert {**plan10, "tensorrt_major": 11, "network_flags": []} == man["plan"]
    assert ("builder.create_network", 1 << 0) in fake10.calls


def test_recording_fake_only__tensorrt_11_fp16_from_fp32_fails_before_building(onnx_file, tmp_path):
    fake = fake_tensorrt(11)
    with pytest.raises(InputError, match="TensorRT 11 removed the FP16 builder flag"):
        _build(onnx_file("fp32"), tmp_path, fake, precision="fp16")
    assert "Builder" not in names(fake) and not (tmp_path / "m.h100.plan").exists()


def test_recording_fake_only__the_fake_refuses_what_its_version_lacks(onnx_file, tmp_path):
    """A TensorRT 10 plan with the FP16 flag, handed to a fake TensorRT 11: the flag does not exist there."""
    plan10 = plan_engine("fp32", "fp16", BuildSettings(), _prof(), 10)
    trt11 = TensorRT(strict(fake_tensorrt(11)))
    with pytest.raises(BuildError, match="plan was made for TensorRT 10, but this is TensorRT 11.1.0.106"):
        trt11.build(onnx_file("fp32"), plan10, b"")
    forged = dataclasses.replace(plan10, tensorrt_major=11)  # past the guard: the fake itself refuses
    with pytest.raises(AttributeError, match="TensorRT 11.1.0 has no BuilderFlag.FP16"):
        trt11.build(onnx_file("fp32"), forged, b"")
    with pytest.raises(AttributeError, match="has no tensorrt.NoSuchThing"):
        strict(fake_tensorrt(10)).NoSuchThing  # noqa: B018


def _fake_tensorrt_package(tmp_path, major: int):
    """A folder whose ``tensorrt`` package is the strict recording fake of TensorRT ``major``."""
    pkg = tmp_path / f"fake_trt{major}" / "tensorrt"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "import sys\nfrom tests.helpers.fake_tensorrt_versions import fake_tensorrt, strict\n"
        f"sys.modules[__name__] = strict(fake_tensorrt({major}))\n")
    return pkg.parent


@pytest.mark.slow  # two optim subprocesses
def test_recording_fake_only__cli_precision_fp16_under_tensorrt_11_and_10(tmp_path, onnx_file, monkeypatch):
    fp32 = onnx_file("fp32")
    monkeypatch.setenv("PYTHONPATH", str(_fake_tensorrt_package(tmp_path, 11)))
    p = optim("build", fp32, "--precision", "fp16", "-o", tmp_path / "x.plan")
    assert_one_line_error(p, InputError.exit_code, "TensorRT 11 removed the FP16 builder flag",
                          "optim quantize MODEL --precision fp16")
    assert not (tmp_path / "x.plan").exists()
    # TensorRT 10: planned with the builder flag as before; then, without a GPU, the one line of today
    monkeypatch.setenv("PYTHONPATH", str(_fake_tensorrt_package(tmp_path, 10)))
    p = optim("build", fp32, "--precision", "fp16", "-o", tmp_path / "x.plan")
    if p.returncode == 0:  # a machine with an sm_90 GPU: the fake "built" it; its manifest has the plan
        assert json.loads(manifest_path(tmp_path / "x.plan").read_text())["plan"]["flags_on"] == ["FP16"]
    else:
        assert_one_line_error(p, BackendUnavailable.exit_code, "cannot build")


def test_recording_fake_only__target_gpu_is_checked_before_building(onnx_file, tmp_path):
    fake = FakeTensorRT()
    with pytest.raises(BackendUnavailable, match=r"A100.*\(sm_80\).*must be built on an sm_90 GPU.*ampere_plus"):
        _build(onnx_file("fp16"), tmp_path, fake, gpu=A100)
    assert "builder.build_serialized_network" not in names(fake)
    rep = _build(onnx_file("fp16"), tmp_path, FakeTensorRT(), BuildSettings(hardware_compatibility="ampere_plus"),
                 gpu=A100)
    assert rep.manifest["plan"]["hardware_compatibility"] == "AMPERE_PLUS"


def test_build_without_tensorrt_is_one_line(tmp_path, tiny_onnx):
    p = optim("build", tiny_onnx, "--target", "h100", "-o", tmp_path / "x.plan")
    assert_one_line_error(p, BackendUnavailable.exit_code, "TensorRT is not installed", "scripts/setup_gpu.sh")
    assert not (tmp_path / "x.plan").exists()
    assert_one_line_error(optim("build", tiny_onnx, "--precision", "int8"), 2, "--precision takes fp16 or bf16")
    assert_one_line_error(optim("build", tiny_onnx, "--target", "a100"), 2, "unknown target GPU 'a100'")
    assert_one_line_error(optim("build", tiny_onnx, "--batch", "1,4"), 2, "min,opt,max")
    assert_one_line_error(optim("build", tiny_onnx, "--hardware-compat", "any"), 2, "hardware_compatibility")


def test_the_build_stage_key_changes_with_the_tensorrt_version(monkeypatch):
    """Engines from TensorRT 10 are not reused under 11, nor TensorRT-RTX 1.7 engines under 1.8: each
    flavour's version is part of the stage's environment."""
    from optim.backends import tensorrt_api
    from optim.stages import build

    for version in ("10.16.1.11", "11.4.0.106", None):
        for flavour in ("tensorrt", "tensorrt_rtx"):
            monkeypatch.setattr(tensorrt_api, "installed_version",
                                lambda f="tensorrt", v=version, want=flavour: (v if f == want else "x", ""))
            env = build.environment()
            assert env[flavour] == version and env[{"tensorrt": "tensorrt_rtx"}.get(flavour, "tensorrt")] == "x"
