"""Run folders: the tiny recipe, and a run folder written by hand (no stage run)."""

from __future__ import annotations

import json
from pathlib import Path

TINY = """
name: tiny
model: {source: "tests.conftest:tiny_cnn"}
input: {shape: [3, 16, 16], batch: {min: 1, opt: 4, max: 16}}
export: {output_names: [logits], verify_batches: [1, 2]}
calibration: {data: {kind: synthetic, count: 8}, samples: 8}
evaluation: {data: {kind: synthetic, count: 16, seed: 3}}
precisions: [fp32, fp16]
bench: {batch_sizes: [1, 2], warmup: 1, iterations: 2}
"""


def write_json(p: Path, obj) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj))


def check_record(tag, top1, delta, cos, passed=True) -> dict:
    return {"tag": tag, "candidate": f"model.{tag}.onnx", "reference": "model.fp32.onnx", "samples": 100,
            "method": "ort cpu", "reference_method": "ort cpu", "data": "test set",
            "outputs": {"logits": {"max_abs_error": 0.1, "mean_abs_error": 0.01, "cosine": cos,
                                   "min_cosine": cos, "top1_agreement": 99.0}},
            "accuracy": {"top1": top1, "top5": 99.0, "reference_top1": 90.0, "reference_top5": 99.0,
                         "top1_delta": delta, "top5_delta": 0.0},
            "gates": [{"gate": "min_cosine", "value": cos, "limit": 0.99, "passed": passed}]}


def bench_record(tag, b1_ms, b64_ms, skipped=None) -> dict:
    timings = [] if skipped else [
        {"batch": 1, "iterations": 5, "median_ms": b1_ms, "p90_ms": b1_ms, "p99_ms": b1_ms * 2,
         "mean_ms": b1_ms, "min_ms": b1_ms, "throughput": 1000 / b1_ms},
        {"batch": 64, "iterations": 5, "median_ms": b64_ms, "p90_ms": b64_ms, "p99_ms": b64_ms,
         "mean_ms": b64_ms, "min_ms": b64_ms, "throughput": 64000 / b64_ms}]
    return {"model": f"model.{tag}.onnx", "tag": tag, "method": "ort cpu 2 threads", "settings": {},
            "timings": timings, "skipped": skipped, "note": ""}


def write_run_folder(tmp_path: Path) -> Path:
    """tmp_path/run: fp32, int8-tensorrt (gate failed) and bf16 (bench skipped); the ``run_dir`` fixture."""
    d = tmp_path / "run"
    tags = ["fp32", "int8-tensorrt", "bf16"]
    write_json(d / "run.json", {"recipe": "demo", "tags": tags,
                                "files": {t: f"model.{t}.onnx" for t in tags},
                                "accuracy_meaningful": True, "notes": ["TensorRT build: not run: no GPU"],
                                "host": {"cpu": "test cpu", "cpu_count": 2}})
    for t in tags:
        (d / f"model.{t}.onnx").write_bytes(b"x" * 2048)
    write_json(d / "quantize/int8-tensorrt.json", {"coverage": {"quantized": 9, "eligible": 10}})
    write_json(d / "check/fp32.json", check_record("fp32", 90.0, 0.0, 1.0))
    write_json(d / "check/int8-tensorrt.json", check_record("int8-tensorrt", 89.5, -0.5, 0.98, passed=False))
    write_json(d / "check/bf16.json", check_record("bf16", 90.0, 0.0, 0.9999))
    write_json(d / "bench/fp32.json", bench_record("fp32", 1.0, 50.0))
    write_json(d / "bench/int8-tensorrt.json", bench_record("int8-tensorrt", 2.0, 100.0))
    write_json(d / "bench/bf16.json", bench_record("bf16", 0, 0, skipped="no BF16 kernels on CPU"))
    return d
