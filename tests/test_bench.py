"""Bench stage: statistics, one path for every backend (a toy one included), and a short real
run (real timings are printed, never asserted)."""

from __future__ import annotations

import numpy as np
import pytest

from optim.backends import WALL_TIME
from optim.stages.bench import BenchResult, bench_model, stats
from optim.errors import InputError, ModelError
from optim.settings import BenchSettings
from tests.helpers.runners import ToyRunner


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
    assert res.skipped is None and "onnxruntime" in res.method and res.method.endswith(f"; {WALL_TIME}")
    back = BenchResult.from_dict(res.as_dict())
    assert back.at(3) == res.timings[1] and back.at(2) is None


def test_bench_fused_preprocessing_model_on_uint8_frames(fused, monkeypatch):
    from optim.backends.base import TensorSpec
    from optim.ops.plugins import find

    if find("cpu") is None:
        pytest.skip("csrc/ CPU library not built (bash scripts/build_plugins.sh)")
    seen = []
    random = TensorSpec.random
    monkeypatch.setattr(TensorSpec, "random", lambda self, *a: seen.append(random(self, *a)) or seen[-1])
    res = bench_model(fused[0], BenchSettings(batch_sizes=(2,), warmup=0, iterations=2, threads=1))
    assert "csrc/ CPU library" in res.method and res.timings[0].iterations == 2
    assert seen[0].dtype == np.uint8 and seen[0].shape == (2, 21, 27, 3) and seen[0].max() > 200


@pytest.mark.slow  # quantizes to BF16
def test_bench_skips_bf16_with_reason(tmp_path, tiny_onnx):
    from optim.stages.quantize.stage import quantize_onnx
    from optim.settings import QuantizeSettings

    bf16 = tmp_path / "bf16.onnx"
    quantize_onnx(tiny_onnx, QuantizeSettings(precision="bf16"), bf16)
    res = bench_model(bf16, BenchSettings(batch_sizes=(1,), warmup=0, iterations=1))
    assert res.timings == [] and "BF16" in res.skipped


def test_bench_missing_model(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        bench_model(tmp_path / "nope.onnx", BenchSettings())


@pytest.mark.usefixtures("toy_backend")
def test_bench_any_registered_backend_times_with_its_own_measure(tmp_path):
    p = tmp_path / "m.toy"
    p.write_text("toy")
    s = BenchSettings(batch_sizes=(1, 4), warmup=2, iterations=3, threads=3, cuda_graph=True)
    res = bench_model(p, s, backend="toy", tag="toy")
    assert ToyRunner.opened == [{"path": p, "threads": 3, "cuda_graph": True}]
    assert ToyRunner.measured == [(1, 2, 3), (4, 2, 3)]
    assert res.method == f"toy backend on m.toy; {ToyRunner.timing_method}"
    assert [(t.batch, t.iterations, t.median_ms, t.throughput) for t in res.timings] == [(1, 3, 1.0, 1000.0),
                                                                                         (4, 3, 4.0, 1000.0)]
    assert res.tag == "toy" and res.skipped is None
    back = BenchResult.from_dict(res.as_dict())
    assert back == res and back.settings["cuda_graph"] is True
    assert bench_model(p, s).method == res.method, "auto: the backend that claims .toy"


@pytest.mark.usefixtures("toy_backend")
def test_bench_skips_a_backend_whose_timings_mean_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(ToyRunner, "timing_meaningful", False)
    monkeypatch.setattr(ToyRunner, "timing_note", "toy timings describe nothing")
    p = tmp_path / "m.toy"
    p.write_text("toy")
    res = bench_model(p, BenchSettings(batch_sizes=(1,)), backend="toy")
    assert res.timings == [] and res.skipped == res.note == "toy timings describe nothing"
    assert ToyRunner.measured == []


def test_bench_unknown_or_wrong_backend(tiny_onnx):
    with pytest.raises(InputError, match="unknown backend 'turbo'"):
        bench_model(tiny_onnx, BenchSettings(), backend="turbo")
    with pytest.raises(InputError, match="build one first"):
        bench_model(tiny_onnx, BenchSettings(), backend="tensorrt")
