"""``optim deploy triton``: the repository layout and configs, validated against Triton's own schema.

Run folders are written by hand from the tiny ONNX fixture. Tests with ``fake_plan`` in their
name use stand-in ``.plan`` files (bytes, not engines) with a hand-written build manifest: they
test the repository's layout and configs, not TensorRT or Triton loading an engine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

from optim.artifacts import RunDir, sha256_file
from optim.stages.deploy import schema
from optim.stages.deploy.triton import Options
from optim.errors import InputError, OutputPathError
from optim.stages.deploy import stage as deploy_stage
from optim.stages.deploy.stage import deploy_triton
from tests.helpers.cli import assert_one_line_error, optim

RECIPE = """
name: tiny
model: {source: "tests.conftest:tiny_cnn"}
input: {shape: [3, 16, 16], batch: {min: 1, opt: 8, max: 32}}
export: {output_names: [logits]}
calibration: {data: {kind: synthetic, count: 8}, samples: 8}
evaluation: {data: {kind: synthetic, count: 16}}
precisions: [fp32, fp16, {precision: int8, target: tensorrt}]
"""
TAGS = ["fp32", "fp16", "int8-tensorrt", "int8-tensorrt-nobudget"]


def _run_folder(tmp_path: Path, tiny_onnx: Path, *, recipe: bool = True, tags=TAGS) -> Path:
    """A run folder as optim run leaves it (the parts deploy reads): models, run.json, manifest."""
    run = tmp_path / "art" / "tiny"
    run.mkdir(parents=True)
    (tmp_path / "tiny.yaml").write_text(RECIPE)
    rd = RunDir(run)
    for t in tags:
        shutil.copyfile(tiny_onnx, run / f"model.{t}.onnx")
        rd.record(t, f"model.{t}.onnx", "quantize", kind="onnx", tag=t)
    if recipe:
        rd.manifest.recipe, rd.manifest.recipe_sha256 = str(tmp_path / "tiny.yaml"), sha256_file(tmp_path / "tiny.yaml")
        rd.save()
    (run / "run.json").write_text(json.dumps({
        "recipe": "tiny", "tags": list(tags), "files": {t: f"model.{t}.onnx" for t in tags},
        "gpu": {"target": "h100", "not_run": {t: "TensorRT is not importable here" for t in tags}},
        # the recipe's input.batch, as optim run records it (recipe=False: a run.json from before it did)
        **({"batch": {"min": 1, "opt": 8, "max": 32}} if recipe else {})}))
    return run


def _fake_plan(run: Path, tag: str, target: str = "h100", cc: str = "9.0", onnx_file: str | None = None,
               plugins: list[Path] = (), batch=(1, 4, 16), sample=(3, 16, 16), input_name: str = "input") -> Path:
    """Stand-in engine bytes and the build manifest optim writes beside an engine (not a TensorRT engine)."""
    plan = run / f"model.{tag}.{target}.plan"
    plan.write_bytes(b"not a TensorRT engine: a stand-in for the repository layout test " + tag.encode())
    src = run / (onnx_file or f"model.{tag}.onnx")
    man = {"engine": plan.name, "onnx": str(src), "onnx_sha256": sha256_file(src), "tensorrt": "10.16.1.11",
           "tensorrt_major": 10, "target": target, "gpu": {"name": f"GPU sm{cc}", "compute_capability": cc},
           "plan": {"profile": {"input": input_name, "min": [batch[0], *sample], "opt": [batch[1], *sample],
                                "max": [batch[2], *sample], "note": ""}, "hardware_compatibility": "NONE"},
           "plugins": [{"path": str(p), "sha256": sha256_file(p)} for p in plugins]}
    Path(str(plan) + ".json").write_text(json.dumps(man))
    return plan


def _configs(repo: Path) -> dict[str, object]:
    """Every config.pbtxt of a repository, parsed with Triton's schema."""
    return {p.parent.name: schema.parse(p.read_text(), str(p)) for p in sorted(repo.glob("*/config.pbtxt"))}


def test_repository_layout_from_onnx_entries(tmp_path, tiny_onnx):
    run = _run_folder(tmp_path, tiny_onnx)
    out = tmp_path / "repo"
    index = deploy_triton(run, out, Options())
    cfgs = _configs(out)
    assert sorted(cfgs) == ["tiny-fp16", "tiny-fp32", "tiny-int8-tensorrt"]  # no -nobudget entry
    pb = schema.pb2()
    for name, c in cfgs.items():
        assert c.name == name and c.backend == "onnxruntime" and not c.platform
        assert (out / name / "1" / "model.onnx").is_file()
        assert c.max_batch_size == 32  # the recipe's input.batch max
        assert list(c.dynamic_batching.preferred_batch_size) == [8, 32]
        assert c.dynamic_batching.max_queue_delay_microseconds == 100
        (inp,), (outp,) = c.input, c.output
        assert (inp.name, inp.data_type, list(inp.dims)) == ("input", pb.TYPE_FP32, [3, 16, 16])
        assert (outp.name, outp.data_type, list(outp.dims)) == ("logits", pb.TYPE_FP32, [5])
        assert [(g.kind, g.count) for g in c.instance_group] == [(pb.ModelInstanceGroup.KIND_GPU, 1)]
    readme = (out / "README.md").read_text()
    assert "nvcr.io/nvidia/tritonserver:$TRITON_TAG" in readme and "TRITON_TAG=<yy.mm>-py3" in readme
    assert all(f"perf_analyzer -m {n} " in readme for n in cfgs)
    files = {f["path"]: f for m in index["models"] for f in m["files"]}
    assert files["tiny-fp16/1/model.onnx"]["sha256"] == sha256_file(out / "tiny-fp16/1/model.onnx")
    assert files["tiny-fp16/1/model.onnx"]["from"] == "model.fp16.onnx"
    assert json.loads((out / "deploy.json").read_text())["skipped"] == {}
    assert not list(tmp_path.glob(".repo.*"))  # nothing left of the build folder


def test_cpu_instances_and_batch_options(tmp_path, tiny_onnx):
    run = _run_folder(tmp_path, tiny_onnx)
    deploy_triton(run, tmp_path / "repo", Options(onnx_instance="cpu", instances=2, max_batch=8, preferred=(2, 8),
                                                  queue_delay_us=500))
    c = _configs(tmp_path / "repo")["tiny-fp32"]
    assert [(g.kind, g.count) for g in c.instance_group] == [(schema.pb2().ModelInstanceGroup.KIND_CPU, 2)]
    assert c.max_batch_size == 8 and list(c.dynamic_batching.preferred_batch_size) == [2, 8]
    assert c.dynamic_batching.max_queue_delay_microseconds == 500
    with pytest.raises(InputError, match="preferred batch sizes must be 1..8"):
        deploy_triton(run, tmp_path / "repo2", Options(max_batch=8, preferred=(16,)))


def test_batch_profile_missing_asks_for_max_batch(tmp_path, tiny_onnx):
    run = _run_folder(tmp_path, tiny_onnx, recipe=False)
    with pytest.raises(InputError, match="--max-batch"):
        deploy_triton(run, tmp_path / "repo", Options())
    assert not (tmp_path / "repo").exists()
    deploy_triton(run, tmp_path / "repo", Options(max_batch=4))
    assert _configs(tmp_path / "repo")["tiny-fp32"].max_batch_size == 4


def test_repository_layout_with_fake_plan_files__not_tensorrt(tmp_path, tiny_onnx):
    """An entry with an engine becomes a tensorrt_plan model (layout and config only: the .plan is fake)."""
    run = _run_folder(tmp_path, tiny_onnx)
    _fake_plan(run, "fp16", batch=(1, 4, 16))
    deploy_triton(run, tmp_path / "repo", Options())
    cfgs = _configs(tmp_path / "repo")
    c = cfgs["tiny-fp16"]
    assert c.platform == "tensorrt_plan" and not c.backend and not c.cc_model_filenames
    assert c.max_batch_size == 16 and list(c.dynamic_batching.preferred_batch_size) == [4, 16]  # the engine's profile
    d = tmp_path / "repo" / "tiny-fp16" / "1"
    assert sorted(p.name for p in d.iterdir()) == ["model.plan", "model.plan.json"]
    assert (d / "model.plan").read_bytes() == (run / "model.fp16.h100.plan").read_bytes()
    assert cfgs["tiny-fp32"].backend == "onnxruntime"  # no engine: its ONNX
    # engines only: the entries without one are listed as not deployed, with the reason
    index = deploy_triton(run, tmp_path / "trt", Options(backend="tensorrt"))
    assert [m["name"] for m in index["models"]] == ["tiny-fp16"]
    assert "TensorRT is not importable here" in index["skipped"]["fp32"]
    assert "Not deployed: fp32: no TensorRT engine" in (tmp_path / "trt" / "README.md").read_text()
    index = deploy_triton(run, tmp_path / "ort", Options(backend="onnxruntime"))
    assert all(m["backend"] == "onnxruntime" for m in index["models"])


def test_repository_layout_with_fake_plans_for_two_compute_capabilities__not_tensorrt(tmp_path, tiny_onnx):
    run = _run_folder(tmp_path, tiny_onnx)
    _fake_plan(run, "fp16", "h100", "9.0")
    _fake_plan(run, "fp16", "a100", "8.0", batch=(1, 4, 8))
    deploy_triton(run, tmp_path / "repo", Options())
    c = _configs(tmp_path / "repo")["tiny-fp16"]
    assert dict(c.cc_model_filenames) == {"9.0": "model.sm90.plan", "8.0": "model.sm80.plan"}
    assert c.max_batch_size == 8  # what every engine takes
    d = tmp_path / "repo" / "tiny-fp16" / "1"
    assert {p.name for p in d.iterdir()} == {"model.sm90.plan", "model.sm90.plan.json", "model.sm80.plan",
                                             "model.sm80.plan.json"}
    assert (d / "model.sm80.plan").read_bytes() == (run / "model.fp16.a100.plan").read_bytes()


def test_fake_plan_with_fused_preprocessing_and_plugin__not_tensorrt(tmp_path, tiny_onnx):
    """Frames input (uint8 NHWC) from the graph; the plugin library copied beside the model and named
    in the README (how Triton loads it). Layout only: neither the engine nor the library is real."""
    from optim.ops.preprocess import PreprocessOp, prepend

    run = _run_folder(tmp_path, tiny_onnx, tags=["fp32", "fp16"])
    fused = prepend(onnx.load(str(tiny_onnx)), PreprocessOp(out_h=16, out_w=16), (24, 32))
    rd = RunDir(run)
    for t in ("fp32", "fp16"):
        onnx.save(fused, str(run / f"model.{t}.frames.onnx"))
        rd.record(f"{t}.frames", f"model.{t}.frames.onnx", "fuse", parents=[t], kind="onnx", tag=t)
    info = json.loads((run / "run.json").read_text())
    info["files"] = {t: f"model.{t}.frames.onnx" for t in ("fp32", "fp16")}
    (run / "run.json").write_text(json.dumps(info))
    lib = tmp_path / "liboptim_preprocess_trt.so"
    lib.write_bytes(b"stand-in plugin library")
    _fake_plan(run, "fp16", onnx_file="model.fp16.frames.onnx", plugins=[lib], sample=(24, 32, 3), input_name="frames")
    deploy_triton(run, tmp_path / "repo", Options())
    cfgs, pb = _configs(tmp_path / "repo"), schema.pb2()
    (inp,) = cfgs["tiny-fp16"].input
    assert (inp.name, inp.data_type, list(inp.dims)) == ("frames", pb.TYPE_UINT8, [24, 32, 3])
    assert (tmp_path / "repo/tiny-fp16/plugins/liboptim_preprocess_trt.so").read_bytes() == lib.read_bytes()
    readme = (tmp_path / "repo" / "README.md").read_text()
    assert "LD_PRELOAD=/models/tiny-fp16/plugins/liboptim_preprocess_trt.so" in readme
    assert '--backend-config=tensorrt,plugins="/models/tiny-fp16/plugins/liboptim_preprocess_trt.so"' in readme
    assert "uint8 frames" in readme
    # ONNX Runtime in Triton cannot run OptimPreprocess: the model without the op is deployed, and said so
    (inp,) = cfgs["tiny-fp32"].input
    assert (inp.name, list(inp.dims)) == ("input", [3, 16, 16])
    assert "model.fp32.frames.onnx takes uint8 frames" in readme and "model.fp32.onnx" in readme


def test_schema_rejects_misspelt_fields_and_bad_enums(tmp_path, tiny_onnx):
    """The validation every written config goes through refuses what Triton would refuse."""
    run = _run_folder(tmp_path, tiny_onnx, tags=["fp32"])
    deploy_triton(run, tmp_path / "repo", Options())
    text = (tmp_path / "repo/tiny-fp32/config.pbtxt").read_text()
    assert schema.parse(text).name == "tiny-fp32"
    for bad, word in ((text.replace("max_batch_size", "max_batch_sise"), "max_batch_sise"),
                      (text.replace("TYPE_FP32", "TYPE_FLOAT32", 1), "TYPE_FLOAT32"),
                      (text.replace("KIND_GPU", "KIND_GPGPU"), "KIND_GPGPU"),
                      ('name: "x"\ninput { name: "a" dims: [1] data_type: TYPE_FP32 shape: 2 }', "shape")):
        with pytest.raises(InputError, match=word) as exc:
            schema.parse(bad, "config.pbtxt")
        assert "not a valid Triton model config" in str(exc.value)


@pytest.mark.slow  # optim subprocesses
def test_existing_output_refused_without_force_and_replaced_whole_with_it(tmp_path, tiny_onnx):
    run = _run_folder(tmp_path, tiny_onnx, tags=["fp32"])
    out = tmp_path / "repo"
    out.mkdir()
    (out / "old.txt").write_text("previous")
    p = optim("deploy", "triton", run, "-o", out)
    assert_one_line_error(p, 2, str(out), "--force")
    assert (out / "old.txt").is_file()
    p = optim("deploy", "triton", run, "-o", out, "--force")
    assert p.returncode == 0, p.stderr
    assert not (out / "old.txt").exists() and (out / "tiny-fp32/config.pbtxt").is_file()
    for bad, words in ((run, ("would replace the run folder",)), (run / "run.json", ("is a file",))):
        assert_one_line_error(optim("deploy", "triton", run, "-o", bad, "--force"), 2, *words)
    assert_one_line_error(optim("deploy", "triton", tmp_path / "nowhere", "-o", tmp_path / "r2"), 2, "run folder not found")
    assert_one_line_error(optim("deploy", "triton", run, "-o", tmp_path / "r3", "--backend", "trt"), 2, "--backend")


def test_failure_leaves_no_repository_and_keeps_the_previous_one(tmp_path, tiny_onnx, monkeypatch):
    run = _run_folder(tmp_path, tiny_onnx, tags=["fp32"])
    out = tmp_path / "repo"

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(deploy_stage, "readme", boom)
    with pytest.raises(Exception, match="No space left"):
        deploy_triton(run, out, Options())
    assert not out.exists() and not list(tmp_path.glob(".repo.*"))
    monkeypatch.undo()
    deploy_triton(run, out, Options())
    before = (out / "deploy.json").read_text()
    monkeypatch.setattr(deploy_stage, "readme", boom)
    with pytest.raises(Exception, match="No space left"):
        deploy_triton(run, out, Options(), force=True)
    assert (out / "deploy.json").read_text() == before  # the previous repository, whole
    assert not list(tmp_path.glob(".repo.*"))


def test_recorded_in_the_manifest_only_inside_the_run(tmp_path, tiny_onnx):
    run = _run_folder(tmp_path, tiny_onnx, tags=["fp32", "fp16"])
    before = json.loads((run / "manifest.json").read_text())["artifacts"]
    deploy_triton(run, tmp_path / "outside", Options())
    assert json.loads((run / "manifest.json").read_text())["artifacts"] == before
    deploy_triton(run, run / "triton", Options())
    rec = RunDir(run).manifest.artifacts["deploy/triton"]
    assert rec.path == "triton/deploy.json" and rec.stage == "deploy" and rec.kind == "deploy"
    assert sorted(rec.parents) == ["fp16", "fp32"] and rec.sha256 == sha256_file(run / "triton/deploy.json")
    assert RunDir(run).verify() == []
    # a second deploy into the run folder does not pick up the copies in the first one
    deploy_triton(run, run / "triton", Options(), force=True)
    assert sorted(_configs(run / "triton")) == ["tiny-fp16", "tiny-fp32"]
    with pytest.raises(OutputPathError, match="holds results of the run"):
        (run / "check").mkdir()
        (run / "check" / "fp32.json").write_text("{}")
        RunDir(run).record("check/fp32", "check/fp32.json", "check")
        deploy_triton(run, run / "check", Options(), force=True)


def test_changed_model_is_refused(tmp_path, tiny_onnx):
    run = _run_folder(tmp_path, tiny_onnx, tags=["fp32"])
    with open(run / "model.fp32.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(InputError, match="changed since the run recorded it"):
        deploy_triton(run, tmp_path / "repo", Options())


@pytest.mark.slow
def test_optim_run_then_deploy_every_config_parses(tmp_path):
    """`optim run` on the tiny recipe, then `optim deploy triton` into the run folder."""
    from tests.helpers.runs import TINY

    (tmp_path / "tiny.yaml").write_text(TINY)
    p = optim("run", tmp_path / "tiny.yaml", "--out-root", tmp_path / "art")
    assert p.returncode == 0, p.stderr
    run = tmp_path / "art" / "tiny"
    p = optim("deploy", "triton", run, "-o", run / "triton")
    assert p.returncode == 0, p.stderr
    cfgs = _configs(run / "triton")
    assert sorted(cfgs) == ["tiny-fp16", "tiny-fp32"]
    assert all(c.max_batch_size == 16 and list(c.dynamic_batching.preferred_batch_size) == [4, 16]
               for c in cfgs.values())
    assert "deploy/triton" in json.loads((run / "manifest.json").read_text())["artifacts"]
