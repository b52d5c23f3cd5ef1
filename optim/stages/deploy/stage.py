"""Stage: a run folder -> a Triton model repository (``optim deploy triton RUN_DIR -o REPO``).

Layout of REPO::

    <recipe>-<tag>/config.pbtxt          one model per deployable entry (run.json tags, no -nobudget)
    <recipe>-<tag>/1/model.plan          its TensorRT engine (+ model.plan.json, the build manifest), or
    <recipe>-<tag>/1/model.sm90.plan     one per compute capability (cc_model_filenames), or
    <recipe>-<tag>/1/model.onnx          its ONNX file (backend onnxruntime)
    <recipe>-<tag>/plugins/LIB.so        plugin libraries the engine needs (not a version folder)
    README.md                            how to serve and measure it
    deploy.json                          every file, its sha256 and where it came from

What goes in is decided by ``optim.stages.deploy.triton`` (plain code, no writing); this module
writes it. Every config is Triton's ModelConfig message printed with text_format and
parsed back against Triton's schema before anything is renamed into place. The whole
repository is built in a hidden ``.REPO.partial-PID`` folder beside REPO and renamed to
REPO when complete, so REPO is either the previous repository or the new one, whole.
When REPO is inside the run folder, its deploy.json is recorded in the run's manifest
(parents: the files the models were made from); elsewhere the run is only read.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path, PurePosixPath

from optim.artifacts import Artifact, atomic_path, sha256_file, stage_writes, write_json, write_text
from rich.markup import escape

from optim.console import info, skipped
from optim.stages.deploy import schema
from optim.stages.deploy.publish import building, check_out
from optim.stages.deploy.readme import readme
from optim.stages.deploy.triton import Options, RepoPlan, config_text, model_config, plan_repository
from optim.errors import InputError, OutputPathError
from optim.executor import Executor, StageContext, StageOutput
from optim.settings import Strict

NAME = "deploy"
TOOLS = ("onnx", "tritonclient")
SUMMARY = "a Triton model repository (optim deploy triton), the RTX engines (optim deploy rtx)"
INDEX = "deploy.json"


class Settings(Strict):
    """The repository to write (decided by ``plan_repository``) and the command that asked for it."""

    plan: RepoPlan
    command: str = "optim deploy triton"


def write_repository(plan: RepoPlan, repo: Path, command: str) -> dict:
    """Build the repository beside ``repo`` and rename it into place; returns the index (deploy.json)."""
    repo = Path(repo)
    run_dir = Path(plan.run_dir)
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    models = []
    with building(repo) as tmp:
        for model in plan.models:
            files = []
            for spec in model.files:
                dest = tmp / model.name / spec.dest
                with atomic_path(dest) as part:
                    shutil.copyfile(spec.src, part)
                if sha256_file(dest) != spec.sha256:
                    raise InputError(f"{spec.src} changed while it was copied; run the deploy again")
                src = Path(spec.src)
                origin = str(src.relative_to(run_dir)) if run_dir in src.parents else str(src)
                files.append({"path": f"{model.name}/{spec.dest}", "sha256": spec.sha256, "from": origin,
                              "artifact": spec.artifact})
            text = config_text(model)
            if schema.parse(text, f"{model.name}/config.pbtxt") != model_config(model):
                raise AssertionError(f"{model.name}/config.pbtxt does not read back as the message it was printed from")
            write_text(tmp / model.name / "config.pbtxt", text)
            models.append({**model.model_dump(mode="json", exclude={"files"}), "files": files,
                           "config_sha256": sha256_file(tmp / model.name / "config.pbtxt")})
        write_text(tmp / "README.md", readme(plan, command, created))
        index = {"recipe": plan.recipe, "run_dir": plan.run_dir, "command": command, "created": created,
                 "validated_with": schema.describe(), "models": models,
                 "skipped": {tag: why for tag, why in plan.skipped}}
        write_json(tmp / INDEX, index)
    return index


def run(inputs: list[Artifact], settings: Settings, ctx: StageContext) -> StageOutput:
    """``inputs``: the files the models are made from (hashed into the key, recorded as parents).

    Writes the repository whose index is ``ctx.out`` (REPO/deploy.json)."""
    index = write_repository(settings.plan, ctx.out.parent, settings.command)
    return StageOutput({"models": [model["name"] for model in index["models"]], "skipped": index["skipped"],
                        "validated_with": index["validated_with"]}, index)


# -- the command --------------------------------------------------------------------------------
def _inputs(plan: RepoPlan) -> list[Artifact]:
    """One artifact per source file, named as the run's manifest names it."""
    run_dir, seen, out = Path(plan.run_dir), set(), []
    for model in plan.models:
        for spec in model.files:
            if spec.src in seen:
                continue
            seen.add(spec.src)
            src = Path(spec.src)
            name = spec.artifact or (f"plugin:{src.name}" if run_dir not in src.parents else src.name)
            out.append(Artifact(name, src, spec.sha256, "plugin" if name.startswith("plugin:") else "file"))
    return out


def deploy_triton(run_dir: Path, out: Path, opts: Options, *, force: bool = False, wait: bool = True) -> dict:
    """Write the Triton repository of ``run_dir`` to ``out`` (whole or not at all); returns its index."""
    run_dir, out = Path(run_dir), Path(out)
    if not run_dir.is_dir():
        raise InputError(f"run folder not found: {run_dir}")
    inside = check_out(run_dir, out, force)
    schema.pb2()  # the schema is needed to write anything: fail before the work if it cannot load
    command = " ".join(["optim", *sys.argv[1:]])[:300] if sys.argv[1:2] == ["deploy"] else "optim deploy triton"
    from optim.runlock import RunLock

    # a writable run folder is locked: it is read whole while no optim run changes it
    with RunLock(run_dir, wait=wait) if os.access(run_dir, os.W_OK) else nullcontext():
        if inside:
            executor = Executor(run_dir)
            rel = (out.resolve() / INDEX).relative_to(run_dir.resolve()).as_posix()
            theirs = [rec.path for rec in executor.rd.manifest.artifacts.values()
                      if rec.stage != NAME and PurePosixPath(rec.path).is_relative_to(PurePosixPath(rel).parent)]
            if theirs:
                raise OutputPathError(f"-o {out} holds results of the run ({theirs[0]}); give a new folder")
        plan = plan_repository(run_dir, opts, exclude=out)
        for model in plan.models:
            what = "TensorRT plan" if model.backend == "tensorrt" else f"ONNX Runtime on {model.instance_kind[5:]}"
            frames = ", takes uint8 frames" if model.frames else ""
            info(escape(f"deploy {model.name}: {what} from {model.source}, "
                        f"max batch {model.max_batch_size or 'fixed'}{frames}"))
            for note in model.notes:
                info(escape(f"  note: {note}"))
            for lib in model.missing_plugins:
                info("  [yellow]missing[/] " + escape(f"plugin library {lib}: not found here, so not copied (see the README)"))
        for tag, why in plan.skipped:
            skipped(f"deploy {tag}", escape(why))
        settings = Settings(plan=plan, command=command)
        inputs = _inputs(plan)
        if inside:
            written = executor.step(sys.modules[__name__], f"deploy/{PurePosixPath(rel).parent}", rel, inputs,
                                    settings, kind="deploy", cache=False)
            index = json.loads(written.path.read_text())
        else:
            with stage_writes(NAME):
                index = run(inputs, settings, StageContext(run_dir, out / INDEX, "deploy")).result
    info(escape(f"wrote {out} ({len(index['models'])} model{'s' if len(index['models']) != 1 else ''}, every config parsed "
         f"by {schema.describe()}); how to serve it: {out / 'README.md'}"))
    return index
