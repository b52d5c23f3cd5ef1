"""``optim ci github``: a GitHub Actions workflow that runs recipes on CPU and GPU runners;
``optim ci merge``: the GPU jobs' results gathered into the CPU job's run folder.

The workflow (one file, validated by actionlint in tests/test_ci_workflow.py)::

    cpu      ubuntu runner: bash scripts/setup.sh, optim run RECIPE (export, quantize, check and
             bench on CPU), the run folder cached (key: the recipe and the lock files) and
             uploaded (onnx-<model>: the ONNX files, the manifest and the CPU results)
    gpu      workflow_dispatch only; a matrix of model x entry (the recipe's entries that get an
             engine): a self-hosted GPU runner (label: an input), inside the NGC TensorRT container
             (tag: an input); downloads onnx-<model>, sets up optim with TensorRT
             (scripts/setup_gpu.sh), restores engines cached per TensorRT version and compute
             capability (the key names both), optim run RECIPE --precisions ENTRY (build, check,
             bench), uploads the entry's engine, its manifest and gpu/ results (engines-<model>-<entry>)
    report   optim ci merge (the GPU results into the CPU run folder), optim report, uploaded

The workflow's shell steps read matrix values from environment variables, not from
expressions spliced into scripts.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from optim.artifacts import Manifest, RunDir, atomic_path, check_output_file, sha256_file, write_text
from optim.console import info, skipped
from optim.errors import InputError, OutputPathError
from optim.runfolder import RunInfo, RunLayout

DEFAULTS = {"gpu_runner": "h100", "tensorrt_image_tag": "25.10-py3", "tensorrt_major": "10"}
# majors that run on node24 (actionlint flags the node20 ones as deprecated)
CHECKOUT, SETUP_PYTHON = "actions/checkout@v5", "actions/setup-python@v6"
CACHE, UPLOAD, DOWNLOAD = "actions/cache@v5", "actions/upload-artifact@v6", "actions/download-artifact@v7"
PY = "3.11"
LOCK_FILES = ("requirements.txt", "pyproject.toml")


def _input(name: str) -> str:
    """An input of workflow_dispatch, with its default when the workflow was started otherwise."""
    return f"${{{{ inputs.{name} || '{DEFAULTS[name]}' }}}}"


def _repo_root(out: Path) -> Path:
    out = out.resolve()
    if out.parent.name == "workflows" and out.parent.parent.name == ".github":
        return out.parent.parent.parent
    return Path.cwd().resolve()


def _recipes(paths: list[Path], root: Path) -> list[dict[str, Any]]:
    from optim.recipe import load_recipe

    out = []
    for p in paths:
        r = load_recipe(p)
        try:
            rel = Path(p).resolve().relative_to(root).as_posix()
        except ValueError:
            raise InputError(f"recipe {p} is outside the repository {root} the workflow runs in") from None
        if r.name in [o["name"] for o in out]:
            raise InputError(f"two recipes are named '{r.name}': their run folders would collide")
        out.append({"name": r.name, "path": rel, "tags": r.build_tags(), "fused": r.fused_preprocess is not None})
    return out


def _setup_python() -> dict[str, Any]:
    return {"uses": SETUP_PYTHON,
            "with": {"python-version": PY, "cache": "pip", "cache-dependency-path": "requirements.txt"}}


def _cpu_job(recipes: list[dict[str, Any]]) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"uses": CHECKOUT}, _setup_python(),
                                   {"name": "Set up optim (CPU)", "run": "bash scripts/setup.sh"}]
    for r in recipes:
        run_dir = f"artifacts/{r['name']}"
        files = ", ".join(f"'{f}'" for f in (r["path"], *LOCK_FILES))
        steps += [
            {"name": f"Restore the run folder of {r['name']}", "uses": CACHE,
             "with": {"path": run_dir, "key": f"optim-run-{r['name']}-${{{{ hashFiles({files}) }}}}",
                      "restore-keys": f"optim-run-{r['name']}-"}},
            {"name": f"Export, quantize, check and bench {r['name']} on CPU",
             "run": f".venv/bin/optim run {r['path']}"},
            {"name": f"Upload the ONNX files of {r['name']}", "uses": UPLOAD,
             "with": {"name": f"onnx-{r['name']}", "path": f"{run_dir}/", "if-no-files-found": "error"}},
        ]
    return {"name": "export and quantize (CPU)", "runs-on": "ubuntu-24.04", "timeout-minutes": 120, "steps": steps}


def _gpu_job(recipes: list[dict[str, Any]]) -> dict[str, Any]:
    include = [{"model": r["name"], "recipe": r["path"], "precision": t} for r in recipes for t in r["tags"]]
    run_dir = "artifacts/${{ matrix.model }}"
    entry = "${{ matrix.precision }}"
    engine = f"{run_dir}/model.{entry}.*"
    key = ("engines-${{ matrix.model }}-${{ matrix.precision }}-trt${{ steps.gpu.outputs.tensorrt }}"
           "-cc${{ steps.gpu.outputs.cc }}-${{ hashFiles(format('artifacts/{0}/*.onnx', matrix.model), matrix.recipe) }}")
    probe = ("echo \"tensorrt=$(.venv/bin/python -c 'import tensorrt; print(tensorrt.__version__)')\" >> \"$GITHUB_OUTPUT\"\n"
             "echo \"cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d ' ')\" "
             ">> \"$GITHUB_OUTPUT\"\n")
    return {
        "name": "engines ${{ matrix.model }} ${{ matrix.precision }} (GPU)",
        "needs": "cpu",
        "if": "github.event_name == 'workflow_dispatch'",
        "runs-on": ["self-hosted", _input("gpu_runner")],
        "timeout-minutes": 180,
        "container": {"image": f"nvcr.io/nvidia/tensorrt:{_input('tensorrt_image_tag')}", "options": "--gpus all"},
        "strategy": {"fail-fast": False, "matrix": {"include": include}},
        "env": {"MODEL": "${{ matrix.model }}", "RECIPE": "${{ matrix.recipe }}", "ENTRY": entry},
        "steps": [
            {"uses": CHECKOUT},
            _setup_python(),
            *([{"name": "CMake for the TensorRT plugin (fused preprocessing)",
                "run": "command -v cmake || (apt-get update && apt-get install -y --no-install-recommends cmake)\n"}]
              if any(r["fused"] for r in recipes) else []),
            {"name": "Download the ONNX files", "uses": DOWNLOAD,
             "with": {"name": "onnx-${{ matrix.model }}", "path": run_dir}},
            {"name": "Set up optim with TensorRT", "run": 'bash scripts/setup_gpu.sh --tensorrt "$TENSORRT_MAJOR"',
             "env": {"PYTHON": f"python{PY}", "TENSORRT_MAJOR": _input("tensorrt_major")}},
            {"name": "TensorRT version and compute capability", "id": "gpu", "run": probe},
            {"name": "Restore the engine built with this TensorRT on this compute capability", "uses": CACHE,
             "with": {"path": "\n".join([f"{engine}.plan", f"{engine}.plan.json", f"{engine}.layers.json",
                                          f"{run_dir}/{RunLayout.TIMING_CACHE}", f"{run_dir}/{RunLayout.MANIFEST}"]) + "\n",
                      "key": key}},
            {"name": "Build, check and bench the engine", "run": '.venv/bin/optim run "$RECIPE" --precisions "$ENTRY"'},
            {"name": "Upload the engine and its manifest", "if": "${{ !cancelled() }}", "uses": UPLOAD,
             "with": {"name": "engines-${{ matrix.model }}-${{ matrix.precision }}",
                      "path": "\n".join([f"{engine}.plan", f"{engine}.plan.json", f"{engine}.layers.json",
                                         f"{run_dir}/{RunLayout.gpu_dir('*')}/{entry}.json",
                                         f"{run_dir}/{RunLayout.MANIFEST}", f"{run_dir}/{RunLayout.RUN_JSON}"]) + "\n",
                      "if-no-files-found": "warn"}},
        ],
    }


def _report_job(recipes: list[dict[str, Any]], with_gpu: bool) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"uses": CHECKOUT}, _setup_python(),
                                   {"name": "Set up optim (CPU)", "run": "bash scripts/setup.sh"}]
    for r in recipes:
        steps.append({"name": f"Download the run folder of {r['name']}", "uses": DOWNLOAD,
                      "with": {"name": f"onnx-{r['name']}", "path": f"artifacts/{r['name']}"}})
    if with_gpu:
        steps.append({"name": "Download the GPU jobs' engines and results", "if": "needs.gpu.result != 'skipped'",
                      "uses": DOWNLOAD, "with": {"pattern": "engines-*", "path": "gpu-results"}})
    for r in recipes:
        dirs = " ".join(f"gpu-results/engines-{r['name']}-{t}" for t in r["tags"]) if with_gpu else ""
        script = (f"sources=()\nfor d in {dirs}; do [ -d \"$d\" ] && sources+=(\"$d\"); done\n"
                  f"if [ ${{#sources[@]}} -gt 0 ]; then .venv/bin/optim ci merge artifacts/{r['name']} \"${{sources[@]}}\"; fi\n"
                  if dirs else "")
        steps += [
            {"name": f"Merge the results of {r['name']} into one report",
             "run": script + f".venv/bin/optim report artifacts/{r['name']}\n"},
            {"name": f"Upload the report of {r['name']}", "uses": UPLOAD,
             "with": {"name": f"report-{r['name']}",
                      "path": "\n".join(f"artifacts/{r['name']}/{p}" for p in
                                        (RunLayout.report("*"), RunLayout.RUN_JSON, RunLayout.MANIFEST, RunLayout.gpu_dir(""),
                                         "*.plan.json")) + "\n"}},
        ]
    return {"name": "merged report", "needs": ["cpu", "gpu"] if with_gpu else ["cpu"],
            "if": "${{ !cancelled() && needs.cpu.result == 'success' }}", "runs-on": "ubuntu-24.04",
            "timeout-minutes": 60, "steps": steps}


def workflow(recipes: list[dict[str, Any]], workflow_path: str) -> dict[str, Any]:
    with_gpu = any(r["tags"] for r in recipes)
    inputs = {
        "gpu_runner": {"description": "Label of the self-hosted runner with the GPU (an H100, sm_90) and Docker "
                                      "with the NVIDIA container toolkit", "type": "string",
                       "default": DEFAULTS["gpu_runner"]},
        "tensorrt_image_tag": {"description": "Tag of nvcr.io/nvidia/tensorrt the GPU jobs run in (pin one)",
                               "type": "string", "default": DEFAULTS["tensorrt_image_tag"]},
        "tensorrt_major": {"description": "TensorRT major optim installs (scripts/setup_gpu.sh --tensorrt)",
                           "type": "choice", "options": ["10", "11"], "default": DEFAULTS["tensorrt_major"]},
    }
    paths = sorted({*(r["path"] for r in recipes), "optim/**", "csrc/**", "scripts/**", *LOCK_FILES, workflow_path})
    jobs: dict[str, Any] = {"cpu": _cpu_job(recipes)}
    if with_gpu:
        jobs["gpu"] = _gpu_job(recipes)
    jobs["report"] = _report_job(recipes, with_gpu)
    return {"name": "optim " + ", ".join(r["name"] for r in recipes),
            "on": {"workflow_dispatch": {"inputs": inputs}, "push": {"paths": paths}},
            "permissions": {"contents": "read"},
            "concurrency": {"group": "optim-${{ github.ref }}", "cancel-in-progress": True},
            "jobs": jobs}


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, s: str):
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None)


_Dumper.add_representer(str, _str)


def render(recipes: list[Path], out: Path) -> str:
    root = _repo_root(out)
    found = _recipes(recipes, root)
    try:
        wf_rel = Path(out).resolve().relative_to(root).as_posix()
    except ValueError:
        wf_rel = Path(out).name
    head = (f"# Written by `optim ci github {' '.join(r['path'] for r in found)} -o {wf_rel}`: regenerate it rather than\n"
            "# editing it. GPU jobs run on workflow_dispatch only (runner label and TensorRT container tag are inputs).\n")
    return head + yaml.dump(workflow(found, wf_rel), Dumper=_Dumper, sort_keys=False, width=1000)


def write_workflow(recipes: list[Path], out: Path, force: bool = False) -> Path:
    out = check_output_file(Path(out), "-o: workflow file")
    if out.exists() and not force:
        raise OutputPathError(f"-o {out} exists; pass --force to replace it")
    text = render(recipes, out)
    write_text(out, text)
    info(f"wrote {out}")
    return out


# -- merging the GPU jobs' uploads ------------------------------------------------------------------
def _engine_tag(name: str) -> str | None:
    """``fp16`` from ``model.fp16.h100.plan`` (and its .plan.json / .layers.json)."""
    from optim.backends.engine_compat import TARGETS

    for suffix in (".plan.json", ".layers.json", ".plan"):
        if name.startswith("model.") and name.endswith(suffix):
            tag, _, target = name[len("model."):-len(suffix)].rpartition(".")
            return tag if tag and target in TARGETS else None
    return None


def _gpu_files(src: Path) -> dict[str, list[Path]]:
    by_tag: dict[str, list[Path]] = {}
    for p in sorted(src.glob("model.*")):
        tag = _engine_tag(p.name)
        if tag:
            by_tag.setdefault(tag, []).append(p)
    for p in sorted(src.glob(RunLayout.gpu_dir("*") + "/*.json")):
        by_tag.setdefault(p.stem, []).append(p)
    return by_tag


def merge_runs(run_dir: Path, sources: list[Path], wait: bool = True) -> dict[str, str]:
    """Copy each source's engines, engine manifests and gpu/ results into ``run_dir``, with their
    manifest records, and mark those entries as run in run.json; returns {entry: source}."""
    from optim.runlock import RunLock

    dest = Path(run_dir)
    layout = RunLayout(dest)
    if not layout.path(RunLayout.RUN_JSON).is_file():
        raise InputError(f"{dest} is not an optim run folder (no run.json)")
    merged: dict[str, str] = {}
    with RunLock(dest, wait=wait):
        rd = RunDir(dest)
        run = RunInfo.read(layout.path(RunLayout.RUN_JSON))
        notes: list[str] = []
        for src in map(Path, sources):
            if not src.is_dir():
                raise InputError(f"not a folder: {src}")
            theirs = Manifest()
            if (src / RunLayout.MANIFEST).is_file():
                theirs = Manifest.model_validate_json((src / RunLayout.MANIFEST).read_text())
            found = _gpu_files(src)
            if not found:
                skipped(f"merge {src}", "no engines or gpu/ results in it")
            for tag, files in found.items():
                if tag in merged:
                    raise InputError(f"entry {tag} is in both {merged[tag]} and {src}: upload each entry from one job")
                merged[tag] = str(src)
                for p in files:
                    rel = p.relative_to(src).as_posix()
                    with atomic_path(dest / rel) as tmp:
                        shutil.copyfile(p, tmp)
                    rec = next((r for r in theirs.artifacts.values() if r.path == rel), None)
                    if rec is not None and rec.sha256 == sha256_file(dest / rel):
                        rd.manifest.artifacts[rec.name] = rec
                    else:
                        rd.record(rel, rel, "ci-merge", kind="result", tag=tag)
            if (src / RunLayout.RUN_JSON).is_file():
                notes += [n for n in RunInfo.read(src / RunLayout.RUN_JSON).notes
                          if n.startswith("GPU columns:") and n not in notes]
        for tag in merged:
            run.gpu.not_run.pop(tag, None)
        run.gpu.merged_from = {t: Path(s).name for t, s in merged.items()}  # a key of its own (extra)
        run.notes = [n for n in run.notes if not n.startswith("TensorRT build and GPU bench: not run")] + notes
        run.save(layout.path(RunLayout.RUN_JSON))
        rd.record("run", RunLayout.RUN_JSON, "run", kind="result")
    info(f"merged {', '.join(sorted(merged)) or 'nothing'} into {dest}")
    return merged
