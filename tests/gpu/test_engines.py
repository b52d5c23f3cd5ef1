"""On an H100 with TensorRT 10 or 11: build FP32/FP16/BF16/INT8/FP8 engines of the bundled model, check
them against ONNX Runtime on the CPU and the labelled gates, round-trip the manifest check, bench.

This is the evidence that optim's TensorRT layer works; the CPU tests with a recording fake are not.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from optim.stages.bench import bench_model
from optim.stages.check import output_deltas
from optim.data import prepare
from optim.backends.engine_compat import engine_problem, manifest_path, read_manifest
from optim.errors import BackendUnavailable
from optim.backends.machine import cuda_gpus, onnxruntime_providers
from optim.recipe import load_recipe
from optim.settings import BenchSettings
from optim.backends import open_runner, run_batched
from optim.backends.tensorrt_api import installed_version
from tests.helpers import REPO
from tests.gpu._env import ENGINE_TAGS, RUN_REASON
from tests.helpers.cli import optim

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(RUN_REASON is not None, reason=RUN_REASON or "")]

# engine vs the same ONNX file in ONNX Runtime CPU: (min mean cosine, min top-1 agreement %)
TOLERANCE = {"fp32": (0.99999, 99.5), "fp16": (0.9999, 99.0), "bf16": (0.999, 98.5),
             "int8-tensorrt": (0.995, 97.0), "fp8-tensorrt": (0.995, 97.0)}


def _engine(run, tag):
    return run / f"model.{tag}.h100.plan"


@pytest.mark.parametrize("tag", ENGINE_TAGS)
def test_engine_built_with_manifest_and_layers(gpu_run, tag):
    run, _ = gpu_run
    man = read_manifest(_engine(run, tag))
    assert man["tensorrt"] == installed_version()[0] and man["gpu"]["compute_capability"] == "9.0"
    assert man["plan"]["strongly_typed"] is True and man["target"] == "h100"
    major = int(installed_version()[0].split(".")[0])
    assert man["tensorrt_major"] == major and man["plan"]["tensorrt_major"] == major
    assert man["plan"]["network_flags"] == (["STRONGLY_TYPED"] if major == 10 else [])
    assert {"cuda", "driver", "settings"} <= set(man) and man["driver"]
    assert json.loads((run / man["layers"]).read_text())["Layers"]
    summary = man["layer_summary"]
    assert summary["compute_layers"] > 0
    if tag == "int8-tensorrt":
        assert summary["by_input_precision"].get("INT8", 0) > 0, summary


@pytest.mark.parametrize("tag", ENGINE_TAGS)
def test_engine_matches_onnxruntime_cpu(gpu_run, tag):
    run, _ = gpu_run
    r = load_recipe(REPO / "recipes/fashion_resnet.yaml")
    x, _, _ = prepare(r.evaluation.data, r.preprocess, r.input, 1000)
    onnx_file = run / f"model.{tag}.onnx"
    with open_runner(onnx_file) as cpu:
        want = run_batched(cpu, x, 500)
    with open_runner(_engine(run, tag)) as gpu:
        got = run_batched(gpu, x, 500)  # 500 > the profile's max 256: the runner splits it
    d = output_deltas(want["logits"], got["logits"])
    cos, agree = TOLERANCE[tag]
    assert d["cosine"] >= cos and d["top1_agreement"] >= agree, d


@pytest.mark.parametrize("tag", ENGINE_TAGS)
def test_engine_passes_the_labelled_gates(gpu_run, tag):
    run, _ = gpu_run
    res = json.loads((run / f"gpu/check/{tag}.json").read_text())
    assert res["passed"] and res["gates"] and res["accuracy"]["top1"] > 80.0
    assert "TensorRT" in res["method"]


def test_manifest_compatibility_round_trip(gpu_run, tmp_path):
    run, _ = gpu_run
    _, gpus, _ = cuda_gpus()
    src = _engine(run, "int8-tensorrt")
    man = read_manifest(src)
    assert engine_problem(man, installed_version()[0], gpus[0]) is None
    for field, value, fragment in (("tensorrt", "9.0.0.1", "built with TensorRT 9.0.0.1"),
                                   ("gpu", {"name": "NVIDIA A100", "compute_capability": "8.0"}, "sm_80")):
        dst = tmp_path / f"{field}.plan"
        shutil.copy(src, dst)
        manifest_path(dst).write_text(json.dumps({**man, field: value}))
        with pytest.raises(BackendUnavailable, match=fragment):
            with open_runner(dst):
                pass


def test_short_bench_on_the_gpu(gpu_run):
    run, _ = gpu_run
    for tag in ENGINE_TAGS:
        b = json.loads((run / f"gpu/bench/{tag}.json").read_text())
        assert {t["batch"] for t in b["timings"]} == {1, 64} and all(t["median_ms"] > 0 for t in b["timings"])
        assert "CUDA events" in b["method"]
    res = bench_model(_engine(run, "int8-tensorrt"), BenchSettings(batch_sizes=(1, 64), warmup=3, iterations=20,
                                                                     cuda_graph=True))
    assert "CUDA graph replay on" in res.method and all(t.throughput > 0 for t in res.timings)
    rep = json.loads((run / "report.json").read_text())
    assert all(r["gpu_throughput"] for r in rep["rows"] if r["tag"] in ENGINE_TAGS)


def test_cli_build_reuses_the_timing_cache(gpu_run, tmp_path):
    run, _ = gpu_run
    cache = tmp_path / "timing.cache"
    shutil.copy(run / "timing.cache", cache)
    out = tmp_path / "fp16.plan"
    p = optim("build", run / "model.fp16.onnx", "--target", "h100", "-o", out, "--timing-cache", cache,
              "--batch", "1,64,256")
    assert p.returncode == 0, p.stderr
    assert read_manifest(out)["timing_cache"]["reused"] is True
    p = optim("check", out, "--reference", run / "model.fp32.onnx", "--data", "calib/fashion_mnist_test.yaml",
              "--samples", "500", "--recipe", "recipes/fashion_resnet.yaml", "--min-cosine", "0.999")
    assert p.returncode == 0, p.stderr


def test_fp16_from_fp32_by_builder_flag_on_tensorrt_10_only(gpu_run, tmp_path):
    run, _ = gpu_run
    out = tmp_path / "fp32-as-fp16.plan"
    p = optim("build", run / "model.fp32.onnx", "--target", "h100", "-o", out, "--precision", "fp16")
    if int(installed_version()[0].split(".")[0]) >= 11:
        assert p.returncode == 2 and "TensorRT 11 removed the FP16 builder flag" in p.stderr, p.stderr
        assert not out.exists()
    else:
        assert p.returncode == 0, p.stderr
        plan = read_manifest(out)["plan"]
        assert plan["flags_on"][:1] == ["FP16"] and plan["strongly_typed"] is False and plan["network_flags"] == []


@pytest.mark.skipif("CUDAExecutionProvider" not in onnxruntime_providers(), reason="onnxruntime-gpu not installed")
def test_onnxruntime_cuda_provider(gpu_run):
    run, _ = gpu_run
    res = bench_model(run / "model.fp32.onnx", BenchSettings(batch_sizes=(1, 64), warmup=2, iterations=10),
                      backend="ort-cuda")
    assert "CUDAExecutionProvider" in res.method and "host arrays" in res.method
    assert all(t.throughput > 0 for t in res.timings)
    with open_runner(run / "model.fp32.onnx", backend="ort-cuda") as r:
        x = np.zeros((4, 1, 28, 28), np.float32)
        assert r.infer({"input": x})["logits"].shape == (4, 10)


def test_triton_repository_holds_the_engines(gpu_run, tmp_path):
    """`optim deploy triton` on the engine run: every engine entry is a tensorrt_plan model whose
    model.plan is byte-identical to the run's engine, and every config parses against Triton's schema."""
    from optim.artifacts import sha256_file
    from optim.stages.deploy.schema import parse as parse_config

    run, _ = gpu_run
    repo = tmp_path / "repo"
    p = optim("deploy", "triton", run, "-o", repo)
    assert p.returncode == 0, p.stderr
    for tag in ENGINE_TAGS:
        (model,) = [d for d in repo.iterdir() if d.is_dir() and d.name.endswith(f"-{tag}")]
        cfg = parse_config((model / "config.pbtxt").read_text())
        assert cfg.platform == "tensorrt_plan", (tag, cfg)
        assert sha256_file(model / "1" / "model.plan") == sha256_file(_engine(run, tag))
