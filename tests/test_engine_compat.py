"""Engine manifests and the compatibility decisions the engine runner makes before touching a GPU.

``test_recording_fake_only__...`` tests run the engine runner against a recording fake
of ``tensorrt``: they show optim refuses a mismatched engine before deserializing it;
they are NOT proof that TensorRT loads or runs an engine (tests/gpu/ is).
"""

from __future__ import annotations

import json

import pytest

from optim.backends.engine_compat import TARGETS, build_blocker, engine_problem, manifest_path, read_manifest, target_problem
from optim.errors import BackendUnavailable, InputError
from optim.backends.machine import Gpu, Machine
from optim.backends import open_runner
from optim.backends.tensorrt import EngineRunner
from optim.backends.tensorrt_api import TensorRT
from tests.helpers.fake_tensorrt import FakeTensorRT, names

H100 = Gpu(0, "NVIDIA H100 80GB HBM3", (9, 0))
H200 = Gpu(0, "NVIDIA H200", (9, 0))
A100 = Gpu(0, "NVIDIA A100-SXM4-80GB", (8, 0))
RTX = Gpu(0, "NVIDIA GeForce RTX 3090", (8, 6))
T4 = Gpu(0, "Tesla T4", (7, 5))


def _manifest(trt="10.16.1.11", cc="9.0", hw="NONE", vc=False):
    return {"tensorrt": trt, "gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": cc},
            "target": "h100", "onnx": "model.int8-tensorrt.onnx",
            "plan": {"hardware_compatibility": hw, "version_compatible": vc, "precision": "int8",
                     "strongly_typed": True}}


def test_same_tensorrt_same_architecture_runs():
    assert engine_problem(_manifest(), "10.16.1.11", H100) is None
    assert engine_problem(_manifest(), "10.16.1.11", H200) is None  # same sm_90


def test_other_tensorrt_version_is_refused_with_what_to_do():
    msg = engine_problem(_manifest(), "10.13.3.9", H100)
    assert "built with TensorRT 10.16.1.11" in msg and "has TensorRT 10.13.3.9" in msg
    assert "optim build model.int8-tensorrt.onnx --target h100" in msg and "version_compatible" in msg


def test_version_compatible_engines_load_in_later_versions_only():
    assert engine_problem(_manifest(trt="10.13.3.9", vc=True), "10.16.1.11", H100) is None
    assert "older" in engine_problem(_manifest(trt="10.16.1.11", vc=True), "10.13.3.9", H100)


def test_other_gpu_architecture_is_refused():
    msg = engine_problem(_manifest(), "10.16.1.11", A100)
    assert "built on NVIDIA H100 80GB HBM3 (sm_90)" in msg and "A100-SXM4-80GB (sm_80)" in msg
    assert "ampere_plus" in msg


def test_ampere_plus_engines_run_on_ampere_and_newer():
    m = _manifest(cc="8.0", hw="AMPERE_PLUS")
    assert engine_problem(m, "10.16.1.11", H100) is None and engine_problem(m, "10.16.1.11", RTX) is None
    assert "Ampere or newer" in engine_problem(m, "10.16.1.11", T4)


def test_target_problem_for_building():
    h100 = TARGETS["h100"]
    assert target_problem(h100, H200, "none") is None
    assert "must be built on an sm_90 GPU" in target_problem(h100, A100, "none")
    assert target_problem(h100, A100, "ampere_plus") is None
    assert "sm_80 or newer" in target_problem(h100, T4, "ampere_plus")


def test_build_blocker_names_the_first_missing_piece():
    h100 = TARGETS["h100"]
    assert "TensorRT is not importable" in build_blocker(Machine(tensorrt_error="No module named 'tensorrt'"), h100)
    assert "no CUDA GPU is visible" in build_blocker(Machine(tensorrt="10.16.1.11"), h100)
    assert build_blocker(Machine(tensorrt="10.16.1.11", gpus=[H100]), h100) is None


def test_read_manifest_refuses_missing_or_broken(tmp_path):
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"FAKE-PLAN")
    with pytest.raises(InputError, match="no build manifest beside it"):
        read_manifest(plan)
    manifest_path(plan).write_text("{not json")
    with pytest.raises(InputError, match="not a readable engine manifest"):
        read_manifest(plan)
    manifest_path(plan).write_text(json.dumps({"engine": "m.plan"}))
    with pytest.raises(InputError, match="lacks the tensorrt/gpu fields"):
        read_manifest(plan)


@pytest.fixture
def engine(tmp_path):
    plan = tmp_path / "m.int8.h100.plan"
    plan.write_bytes(b"FAKE-PLAN[]")
    manifest_path(plan).write_text(json.dumps(_manifest()))
    return plan


def test_recording_fake_only__runner_refuses_mismatch_before_deserializing(engine):
    fake = FakeTensorRT()
    fake.__version__ = "10.13.3.9"
    with pytest.raises(BackendUnavailable, match="m.int8.h100.plan: engine was built with TensorRT 10.16.1.11"):
        EngineRunner(engine, api=TensorRT(fake), gpu=H100).activate()
    with pytest.raises(BackendUnavailable, match="this GPU is NVIDIA A100"):
        EngineRunner(engine, api=TensorRT(FakeTensorRT()), gpu=A100).activate()
    assert "runtime.deserialize_cuda_engine" not in names(fake)


def test_engine_runner_without_tensorrt_or_manifest(engine, tmp_path):
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed"):
        with open_runner(engine):
            pass
    bare = tmp_path / "bare.plan"
    bare.write_bytes(b"x")
    with pytest.raises(InputError, match="no build manifest"):
        open_runner(bare)
    with pytest.raises(InputError, match="runs on backend tensorrt"):
        open_runner(engine, backend="ort-cuda")


def test_ort_gpu_backend_refused_without_onnxruntime_gpu(tiny_onnx):
    with pytest.raises(BackendUnavailable, match="no CUDAExecutionProvider.*setup_gpu.sh"):
        open_runner(tiny_onnx, backend="ort-cuda")
    with pytest.raises(InputError, match="build one first"):
        open_runner(tiny_onnx, backend="tensorrt")
