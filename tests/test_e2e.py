"""`optim run` on the bundled default recipe, on a reduced subset of the real test set."""

from __future__ import annotations

import json
import time

import pytest

from optim.artifacts import sha256_file
from tests.helpers import REPO
from tests.helpers.cli import assert_one_line_error, optim

pytestmark = pytest.mark.slow
WEIGHTS = REPO / "optim/sources/weights/fashion_resnet.safetensors"
TAGS = ["fp32", "int8-tensorrt", "int8-onnxruntime", "fp8-tensorrt", "fp16", "bf16",
        "int8-tensorrt-nobudget", "int8-onnxruntime-nobudget", "fp8-tensorrt-nobudget"]
REDUCED = ["--eval-samples", "300", "--calib-samples", "64", "--bench-iterations", "3"]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts")
    p = optim("run", "recipes/fashion_resnet.yaml", "--out-root", out, *REDUCED)
    return out / "fashion_resnet", p


def test_default_recipe_runs_end_to_end(default_run):
    run_dir, p = default_run
    assert p.returncode == 0, p.stderr[-3000:]
    for t in TAGS:
        assert (run_dir / f"model.{t}.onnx").is_file()
    for ext in ("md", "html", "json", "png"):
        assert (run_dir / f"report.{ext}").is_file()
    assert "skipped build (TensorRT engines)" in p.stderr
    # a short summary fits a terminal; the full table is in the files, whose paths are printed
    assert any(ln.startswith("entry") and "×fp32" in ln for ln in p.stdout.splitlines())
    assert all(len(ln) <= 100 for ln in p.stdout.splitlines()), p.stdout
    assert all(f"wrote {run_dir / f'report.{ext}'}" in p.stdout for ext in ("md", "html", "png", "json"))
    assert "s in all" in p.stdout.splitlines()[-1]


def test_default_recipe_builds_real_tensorrt_rtx_engines(default_run, tmp_path):
    """TensorRT-RTX (pinned in requirements.txt) builds an engine for every TensorRT entry on this CPU-only
    machine; the report and run.json say so; `optim deploy rtx` places them, Triton never gets them."""
    run_dir, p = default_run
    info = json.loads((run_dir / "run.json").read_text())
    cells = info["engines"]["rtx"]
    for t in ("fp32", "int8-tensorrt", "fp8-tensorrt", "fp16", "bf16"):
        assert cells[f"{t}.rtx"].startswith("built (RTX 1.7.1.116, sm"), cells
        assert (run_dir / f"model.{t}.rtx.plan").stat().st_size > 100_000
        man = json.loads((run_dir / f"model.{t}.rtx.plan.json").read_text())
        assert man["engine_sha256"] == sha256_file(run_dir / f"model.{t}.rtx.plan")
    assert "sm89/120" in cells["fp8-tensorrt.rtx"] and "sm86/89/120" in cells["int8-tensorrt.rtx"]
    assert cells["int8-onnxruntime.rtx"].startswith("not built: placed for ONNX Runtime on CPU")
    assert "RTX engines: 5 built" in p.stdout
    md = (run_dir / "report.md").read_text()
    assert "| RTX engine |" in md and "## RTX engines (built here without a GPU" in md
    rows = {r["tag"]: r for r in json.loads((run_dir / "report.json").read_text())["rows"] if r["primary"]}
    assert rows["fp16"]["engines"]["rtx"] == cells["fp16.rtx"] and rows["fp16"]["gpu_method"].startswith("not run")
    d = optim("deploy", "rtx", run_dir, "-o", tmp_path / "rtx")
    assert d.returncode == 0, d.stderr
    readme = (tmp_path / "rtx" / "README.md").read_text()
    assert readme.count(".rtx.plan` (recipe size)") == 5 and "| fp8 | sm89/120 |" in readme
    t = optim("deploy", "triton", run_dir, "-o", tmp_path / "triton")
    assert t.returncode == 0, t.stderr
    assert ".rtx.plan" not in (tmp_path / "triton" / "deploy.json").read_text()
    kinds = {m["tag"]: m["instance_kind"] for m in json.loads((tmp_path / "triton" / "deploy.json").read_text())["models"]}
    assert kinds["int8-onnxruntime"] == "KIND_CPU" and kinds["fp16"] == "KIND_GPU"  # the CPU placement stays on CPU
    from optim.verify import problems

    assert problems(run_dir) == []  # every engine and its build manifest is recorded where it lies


def test_manifest_hashes_match_files(default_run):
    run_dir, _ = default_run
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["target_gpu"].startswith("h100") and m["tools"]["onnxruntime"]
    assert m["host"]["cpu_count"] >= 1
    names = set(m["artifacts"])
    assert set(TAGS) <= names and {f"check/{t}" for t in TAGS} <= names
    for rec in m["artifacts"].values():
        assert sha256_file(run_dir / rec["path"]) == rec["sha256"], rec["path"]
    assert m["artifacts"]["int8-tensorrt-nobudget"]["parents"] == ["fp32"]
    assert m["artifacts"]["int8-tensorrt-nobudget"]["settings"]["method"] == "entropy"
    tuned = m["artifacts"]["int8-tensorrt"]
    assert tuned["stage"] == "tune" and tuned["parents"] == ["int8-tensorrt-nobudget", "fp32"]
    assert tuned["settings"]["max_drop"] == 0.3 and "kept_in_high_precision" in tuned["settings"]
    assert not list(run_dir.rglob(".*partial*"))


def test_report_has_real_accuracy_and_timings(default_run):
    run_dir, _ = default_run
    rep = json.loads((run_dir / "report.json").read_text())
    rows = {r["tag"]: r for r in rep["rows"] if r["primary"]}
    assert set(rows) == set(TAGS) and rep["accuracy_meaningful"] is True
    assert rows["fp32"]["accuracy"]["top1"] > 80.0  # trained weights on real labelled test images
    for t in TAGS:
        assert abs(rows[t]["accuracy"]["top1_delta"]) < 5.0
        assert rows[t]["accuracy"]["cosine"] > 0.99
    for t in set(TAGS) - {"bf16"}:
        assert rows[t]["p50_ms"] > 0 and rows[t]["throughput"] > 0
    assert rows["bf16"]["throughput"] is None and "not run" in rows["bf16"]["timing_method"]
    assert "emulated" in rows["bf16"]["accuracy_method"]
    assert rows["int8-tensorrt"]["coverage"].split("/")[0] != "0"


def test_report_shows_budget_sensitivity_and_calibration_study(default_run):
    run_dir, _ = default_run
    md = (run_dir / "report.md").read_text()
    for section in ("## Accuracy budget", "## Sensitivity: int8-tensorrt", "## Sensitivity: fp8-tensorrt",
                    "## Calibration study"):
        assert section in md
    assert "budget 0.3 points of task top-1 on 1024 tuning samples" in md
    assert (run_dir / "report.sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    tune = json.loads((run_dir / "tune/int8-tensorrt.json").read_text())
    assert tune["budget"]["after"]["drop"] <= 0.3 and tune["sensitivity"]["evaluations"] >= 10
    study = json.loads((run_dir / "study/calibration.json").read_text())
    assert [(r["method"], r["calibration_samples"]) for r in study["rows"]] == [
        ("max", 64), ("entropy", 64)]  # 512 > the 64 calibration samples of the reduced run
    assert study["skipped"]
    # scored on the tuning data (1,024 training images), never on the evaluation (test) set
    assert study["samples"] == 1024 and "test" not in study["data"].lower()
    assert "tuning samples" in md and "evaluation samples" not in md


def test_report_command_keeps_manifest_true(default_run):
    run_dir, _ = default_run
    p = optim("report", run_dir)
    assert p.returncode == 0, p.stderr
    m = json.loads((run_dir / "manifest.json").read_text())
    for rec in m["artifacts"].values():
        assert sha256_file(run_dir / rec["path"]) == rec["sha256"], rec["path"]
    assert m["artifacts"]["report.md"]["parents"]


def test_rerun_reuses_every_stage(default_run):
    run_dir, _ = default_run
    t0 = time.perf_counter()
    p = optim("run", "recipes/fashion_resnet.yaml", "--out-root", run_dir.parent, *REDUCED)
    assert p.returncode == 0, p.stderr[-2000:]
    # export, quantize, tune, calibration study, check and bench on each CPU backend, the 5 RTX engines
    from optim.backends import cpu

    assert p.stderr.count("cached ") == 1 + 5 + 3 + 1 + (9 + 9) * len(cpu.installed()) + 5
    assert p.stderr.count("cached build ") == 5 and "done build" not in p.stderr
    assert "done quantize" not in p.stderr
    assert time.perf_counter() - t0 < 60


def test_default_recipe_on_the_avx2_only_class(tmp_path, monkeypatch):
    """The AVX2-only CPU class (no AVX-512, no VNNI), forced on whatever CPU runs this: optim's decisions
    through OPTIM_CPU_FEATURES, OpenVINO's kernels capped at AVX2 (ONEDNN_MAX_CPU_ISA). ONNX Runtime's
    kernels cannot be pinned; tests/test_int8_kernels.py runs them on an emulated AVX2 CPU. The INT8
    entries of the default recipe pass their gates on both backends, and the onnxruntime file has the
    7-bit weights that class gets, said in the report."""
    monkeypatch.setenv("OPTIM_CPU_FEATURES", "avx2 fma")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    p = optim("run", "recipes/fashion_resnet.yaml", "--out-root", tmp_path, "--precisions", "fp32,int8",
              "--eval-samples", "500", "--calib-samples", "64", "--bench-iterations", "2")
    assert p.returncode == 0, p.stderr[-3000:]
    run_dir = tmp_path / "fashion_resnet"
    q = json.loads((run_dir / "quantize/int8-onnxruntime-nobudget.json").read_text())
    assert q["int8_scheme"]["format"] == "u8s8_7bit" and "AVX2 without VNNI" in q["int8_scheme"]["reason"]
    rep = json.loads((run_dir / "report.json").read_text())
    rows = {(r["tag"], r["backend"]): r for r in rep["rows"]}
    for tag in ("int8-onnxruntime", "int8-tensorrt"):
        for backend in {b for _, b in rows}:
            r = rows[(tag, backend)]
            assert r["gates"].startswith("passed") and not r["disagrees"], (tag, backend, r["gates"])
    assert rows[("int8-tensorrt", "onnxruntime")]["int8_scheme"] is None  # a TensorRT file: no CPU format
    assert rows[("int8-onnxruntime", "onnxruntime")]["int8_scheme"].startswith("uint8 activations x int8 weights (7-bit)")
    if ("int8-onnxruntime", "openvino") in rows:
        assert "capped at AVX2" in rows[("int8-onnxruntime", "openvino")]["accuracy_method"]
    assert "INT8 format: uint8 activations x int8 weights (7-bit)" in (run_dir / "report.md").read_text()


def test_failed_gate_exits_nonzero_after_writing_report(tmp_path):
    text = (REPO / "recipes/fashion_resnet.yaml").read_text().replace("../calib/", f"{REPO}/calib/")
    text = text.replace("  default: {max_top1_drop: 1.0, min_cosine: 0.99}",
                        "  default: {max_top1_drop: 1.0, min_cosine: 0.99}\n  int8: {max_abs_error: 0.0}")
    recipe = tmp_path / "strict.yaml"
    recipe.write_text(text)
    p = optim("run", recipe, "--out-root", tmp_path, "--precisions", "int8-onnxruntime",
              "--eval-samples", "100", "--calib-samples", "32", "--bench-iterations", "1")
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert p.returncode == 3 and len(lines) == 1
    assert "max_abs_error" in lines[0] and "int8-onnxruntime" in lines[0]
    assert (tmp_path / "fashion_resnet/report.md").is_file()
    assert "FAILED: max_abs_error" in (tmp_path / "fashion_resnet/report.md").read_text()


def test_unknown_precision_override(tmp_path):
    p = optim("run", "recipes/fashion_resnet.yaml", "--out-root", tmp_path, "--precisions", "int4")
    assert_one_line_error(p, 2, "int4")


def test_force_redoes_cached_stages(default_run):
    run_dir, _ = default_run
    p = optim("run", "recipes/fashion_resnet.yaml", "--out-root", run_dir.parent, *REDUCED,
              "--precisions", "fp16", "--force")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "cached " not in p.stderr
    assert "done export fp32" in p.stderr and "done quantize fp16" in p.stderr


def test_random_weights_report_says_accuracy_is_not_meaningful(tmp_path):
    recipe = tmp_path / "r18.yaml"
    recipe.write_text("""
name: r18
model: {source: "torchvision:resnet18"}
input: {shape: [3, 32, 32], batch: {min: 1, opt: 1, max: 8}}
export: {output_names: [logits], verify_batches: [1, 2], atol: 1.0e-3}
calibration: {data: {kind: synthetic, count: 8}, samples: 8}
evaluation: {data: {kind: synthetic, count: 8, seed: 3}}
precisions: [fp32, fp16]
bench: {batch_sizes: [1, 2], warmup: 1, iterations: 2}
""")
    p = optim("run", recipe, "--out-root", tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    md = (tmp_path / "r18/report.md").read_text()
    assert "ACCURACY COLUMNS ARE NOT MEANINGFUL" in md and "random weights" in md
    assert "| fp32 | reference | onnxruntime | no labels |" in md or "| fp32 | reference | no labels |" in md
    rep = json.loads((tmp_path / "r18/report.json").read_text())
    assert rep["accuracy_meaningful"] is False
    # the warning travels with every row and every console line of the numbers
    assert all("random weights" in r["notes"] for r in rep["rows"])
    checks = [ln for ln in p.stderr.splitlines() if ln.startswith(("  fp32:", "  fp16:"))]
    assert len(checks) == 2 and all("NOT MEANINGFUL: random weights" in ln for ln in checks), checks


def test_fused_preprocessing_run_feeds_frames(tmp_path, plugin_libraries):
    """fused_preprocess: every model takes uint8 frames; on 28x28 grey frames the op does what the
    host preprocessing does, so the FP32 frames model equals the plain one."""
    import onnx

    text = (REPO / "recipes/fashion_resnet.yaml").read_text().replace("../calib/", f"{REPO}/calib/")
    text = text[: text.index("tuning:")] + "fused_preprocess: {frame: [28, 28]}\n"
    recipe = tmp_path / "fused.yaml"
    recipe.write_text(text)
    p = optim("run", recipe, "--out-root", tmp_path, "--precisions", "int8-tensorrt", "--eval-samples", "200",
              "--calib-samples", "32", "--bench-iterations", "2")
    assert p.returncode == 0, p.stderr[-2000:]
    run_dir = tmp_path / "fashion_resnet"
    for t in ("fp32", "int8-tensorrt"):
        m = onnx.load(str(run_dir / f"model.{t}.frames.onnx"))
        inp = m.graph.input[0].type.tensor_type
        assert inp.elem_type == onnx.TensorProto.UINT8 and [d.dim_value for d in inp.shape.dim][1:] == [28, 28, 1]
    rows = {r["tag"]: r for r in json.loads((run_dir / "report.json").read_text())["rows"] if r["primary"]}
    assert rows["fp32"]["file"] == "model.fp32.frames.onnx" and rows["fp32"]["accuracy"]["max_abs_error"] < 1e-4
    assert rows["fp32"]["accuracy"]["top1"] > 80 and abs(rows["int8-tensorrt"]["accuracy"]["top1_delta"]) < 5
    assert rows["int8-tensorrt"]["throughput"] > 0 and "csrc/ CPU library" in rows["fp32"]["accuracy_method"]
    man = json.loads((run_dir / "manifest.json").read_text())["artifacts"]
    assert man["fp32.frames"]["stage"] == "fuse" and man["fp32.frames"]["parents"] == ["fp32"]
