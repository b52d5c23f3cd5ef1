"""Bench stage: statistics and a short real run (timings are printed, never asserted)."""

from __future__ import annotations

import numpy as np
import pytest

from optim.stages.bench import BenchResult, bench_model, stats
from optim.errors import ModelError
from optim.recipe import BenchSettings


def test_stats_percentiles_and_throughput():
    times = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    t = stats(8, times)
    assert t.median_ms == pytest.approx(50.5)
    assert t.p90_ms == pytest.approx(np.percentile(np.arange(1, 101), 90))
    assert t.p99_ms == pytest.approx(np.percentile(np.arange(1, 101), 99))
    assert t.min_ms == pytest.approx(1.0)
    assert t.throughput == pytest.approx(8 / 0.0505, rel=1e-3)
    assert t.iterations == 100


def test_bench_runs_each_batch_size(tiny_onnx):
    res = bench_model(tiny_onnx, BenchSettings(batch_sizes=(1, 3), warmup=1, iterations=4, threads=1))
    assert [t.batch for t in res.timings] == [1, 3]
    assert all(t.iterations == 4 and t.median_ms > 0 for t in res.timings)
    assert res.skipped is None and "onnxruntime" in res.method
    back = BenchResult.from_dict(res.as_dict())
    assert back.at(3) == res.timings[1] and back.at(2) is None


def test_bench_skips_bf16_with_reason(tmp_path, tiny_onnx):
    from optim.stages.quantize import quantize_onnx
    from optim.recipe import QuantizeSettings

    bf16 = tmp_path / "bf16.onnx"
    quantize_onnx(tiny_onnx, QuantizeSettings(precision="bf16"), bf16)
    res = bench_model(bf16, BenchSettings(batch_sizes=(1,), warmup=0, iterations=1))
    assert res.timings == [] and "BF16" in res.skipped


def test_bench_missing_model(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        bench_model(tmp_path / "nope.onnx", BenchSettings())
