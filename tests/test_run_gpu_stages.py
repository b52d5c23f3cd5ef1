"""`optim run` where the build/GPU stages cannot run: one line says why, the report says "not run".

Also the report's GPU columns from engine results written by hand (no GPU needed to
read them; nothing here measures or claims a GPU number).
"""

from __future__ import annotations

import json

import pytest

from optim.backends import machine
from optim.backends.machine import Machine
from optim.workflow.run import Workflow
from optim.recipe import load_recipe
from optim.stages.report.stage import NOT_RUN, collect, write_report
from tests.helpers.runs import TINY, bench_record, check_record, write_json

SKIP_LINE = "skipped build (TensorRT engines) and GPU bench: "


@pytest.fixture(scope="module")
def tiny_recipe(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_run")
    (d / "tiny.yaml").write_text(TINY)
    return d / "tiny.yaml"


def _run(recipe_path, monkeypatch, capsys, m: Machine):
    monkeypatch.setattr(machine, "probe", lambda: m)
    Workflow(load_recipe(recipe_path), recipe_path, out_root=recipe_path.parent / "art").run()
    err = capsys.readouterr().err
    return recipe_path.parent / "art" / "tiny", [ln for ln in err.splitlines() if ln.startswith(SKIP_LINE)]


@pytest.mark.slow  # an optim run of the tiny recipe
def test_no_tensorrt_one_line_and_not_run_rows(tiny_recipe, monkeypatch, capsys):
    run, lines = _run(tiny_recipe, monkeypatch, capsys, Machine(tensorrt_error="No module named 'tensorrt'"))
    assert len(lines) == 1 and lines[0].startswith(SKIP_LINE + "TensorRT is not importable here")
    assert "scripts/setup_gpu.sh" in lines[0]
    rows = {r["tag"]: r for r in json.loads((run / "report.json").read_text())["rows"] if r["primary"]}
    for r in rows.values():
        assert r["gpu_method"].startswith("not run: TensorRT is not importable here"), r["gpu_method"]
        assert r["gpu_throughput"] is None and r["gpu_accuracy"] == {} and not r["gpu_checked"]
        assert r["p50_ms"] is not None  # the CPU bench still ran
    md = (run / "report.md").read_text()
    assert "| GPU top-1 % | GPU p50 b1 ms | GPU img/s b2 | GPU × fp32 |" in md
    assert f"| {NOT_RUN} | {NOT_RUN} | {NOT_RUN} | {NOT_RUN} |" in md
    assert "TensorRT build and GPU bench: not run: TensorRT is not importable" in md
    assert not list(run.glob("*.plan")) and not (run / "gpu").exists()
    gpu = json.loads((run / "run.json").read_text())["gpu"]
    assert gpu["target"] == "h100" and set(gpu["not_run"]) == {"fp32", "fp16"}
    # no TensorRT-RTX either (the probe says so): one more line, and the RTX column says why
    engines = json.loads((run / "run.json").read_text())["engines"]["rtx"]
    assert set(engines) == {"fp32.rtx", "fp16.rtx"}
    assert all(c.startswith("not built: TensorRT-RTX is not importable here") for c in engines.values())
    assert "RTX / workstation GPUs engines: not built: TensorRT-RTX is not importable" in md


@pytest.mark.slow  # an optim run building every TensorRT-RTX engine
def test_tensorrt_rtx_builds_every_entry_without_a_gpu(tiny_recipe, monkeypatch, capsys):
    """A CPU-only machine with TensorRT-RTX (the real one, where installed): both entries get an engine."""
    from optim.backends.tensorrt_api import installed_version

    version, why = installed_version("tensorrt_rtx")
    if version is None:
        pytest.skip(f"TensorRT-RTX is not installed here ({why})")
    m = Machine(tensorrt_error="No module named 'tensorrt'", tensorrt_rtx=version, cuda_error="no GPU")
    run, lines = _run(tiny_recipe, monkeypatch, capsys, m)
    assert len(lines) == 1 and "TensorRT is not importable" in lines[0]  # the H100 build is still skipped
    engines = json.loads((run / "run.json").read_text())["engines"]["rtx"]
    assert all(engines[f"{t}.rtx"].startswith(f"built (RTX {version}, sm86/89/120, ") for t in ("fp32", "fp16"))
    assert (run / "model.fp16.rtx.plan").stat().st_size > 1000
    rows = {r["tag"]: r for r in json.loads((run / "report.json").read_text())["rows"] if r["primary"]}
    assert rows["fp16"]["engines"] == {"rtx": engines["fp16.rtx"]}
    assert rows["fp16"]["gpu_method"].startswith("not run: TensorRT is not importable")  # no GPU numbers


def test_tensorrt_without_gpu_says_so(tiny_recipe, monkeypatch, capsys):
    m = Machine(tensorrt="10.16.1.11", cuda_error="torch sees no CUDA device")
    run, lines = _run(tiny_recipe, monkeypatch, capsys, m)
    assert len(lines) == 1 and lines[0].startswith(SKIP_LINE + "no CUDA GPU is visible here")
    rows = json.loads((run / "report.json").read_text())["rows"]
    assert all("no CUDA GPU" in r["gpu_method"] for r in rows if r["primary"])


def test_report_gpu_columns_from_engine_results(run_dir):
    run = json.loads((run_dir / "run.json").read_text())
    run["gpu"] = {"target": "h100", "not_run": {"bf16": "build failed: unsupported"}}
    (run_dir / "run.json").write_text(json.dumps(run))
    for t, ms, passed in (("fp32", 0.2, True), ("int8-tensorrt", 0.1, False)):
        write_json(run_dir / f"gpu/check/{t}.json", check_record(t, 90.0, 0.0, 0.999, passed=passed))
        write_json(run_dir / f"gpu/bench/{t}.json", bench_record(t, ms, ms * 4))
        write_json(run_dir / f"gpu/build/{t}.json", {"engine": f"model.{t}.h100.plan", "manifest": {
            "tensorrt": "10.16.1.11", "gpu": {"name": "test gpu"},
            "layer_summary": {"by_input_precision": {"INT8": 9, "FP32": 1}}}})
    _, rows = collect(run_dir)
    by = {r.tag: r for r in rows}
    assert by["int8-tensorrt"].gpu_throughput == pytest.approx(160000.0)
    assert by["int8-tensorrt"].gpu_speedup_vs_fp32 == pytest.approx(2.0)  # vs the fp32 engine, not the CPU
    assert by["int8-tensorrt"].gpu_gates.startswith("FAILED")
    assert by["bf16"].gpu_method == "not run: build failed: unsupported"
    md = write_report(run_dir)["md"].read_text()
    assert "GPU engine FAILED: min_cosine" in md and "'INT8': 9" in md
    assert "| int8 | tensorrt | 89.50 | -0.50 |" in md
