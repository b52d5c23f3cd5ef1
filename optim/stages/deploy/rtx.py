"""``optim deploy rtx RUN_DIR -o OUT``: the run's TensorRT-RTX engines, each with its build manifest.

Triton's TensorRT backend links TensorRT itself, which cannot load a TensorRT-RTX plan, so these
engines never go into a Triton repository; they get a plain folder::

    OUT/<engine>.plan            every engine built without a GPU (entries, NMS deployables, sizes/<size>/...)
    OUT/<engine>.plan.json       its build manifest (flavour, version, compute capabilities, profile, ONNX hash)
    OUT/README.md                which GPUs each engine runs on, and how to load it
    OUT/deploy.json              every file, its sha256 and where in the run it came from

Each engine is checked against the run's manifest and against its own build manifest before it
is copied. OUT is built beside itself and renamed into place whole, like the Triton repository.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from optim.artifacts import atomic_path, sha256_file, write_json, write_text
from optim.backends.engine_compat import read_manifest
from optim.backends.trt_flavour import FLAVOURS, flavour_of, sms
from optim.stages.deploy.publish import building, check_out
from optim.stages.deploy.triton import Run
from optim.errors import InputError
from optim.runfolder import RunLayout

INDEX = "deploy.json"


def engines(run: Run) -> list[tuple[str, dict]]:
    """(path in the run folder, build manifest) of every engine a GPU-less flavour built."""
    out = []
    for rec in sorted(run.manifest.artifacts.values(), key=lambda r: r.path):
        if rec.kind != "engine":
            continue
        manifest = read_manifest(run.root / rec.path)
        if flavour_of(manifest).builds_without_gpu:
            run.file(rec.path, rec.name)  # the engine is the file the run recorded
            if manifest.get("engine_sha256") != run.sha(run.root / rec.path):
                raise InputError(f"{rec.path} does not match its build manifest "
                                 f"({Path(RunLayout.engine_manifest(rec.path)).name}); rerun optim run")
            out.append((rec.path, manifest))
    return out


def readme(recipe: str, found: list[tuple[str, dict]], command: str, created: str) -> str:
    flavour = next((FLAVOURS[manifest["flavour"]] for _, manifest in found), None)
    lines = [f"# TensorRT-RTX engines: {recipe}", "",
             f"Written by `{command}` on {created}. Built ahead of time, without a GPU, by "
             f"{flavour.label if flavour else 'TensorRT-RTX'}; each engine runs only on the GPUs its row names "
             f"({flavour.runs_on if flavour else ''}), with the TensorRT-RTX runtime of the same version. "
             "They do not run on an H100 and Triton's TensorRT backend cannot load them: load one with "
             "`tensorrt_rtx.Runtime` (`deserialize_cuda_engine`) in your application.", "",
             "| engine | entry | precision | runs on | profile (batch min/opt/max) | size | built by | from ONNX |",
             "|---|---|---|---|---|---|---|---|"]
    for rel, manifest in found:
        prof = manifest.get("profile") or (manifest.get("plan") or {}).get("profile") or {}
        batch = "/".join(str(prof[k][0]) for k in ("min", "opt", "max")) if prof else "?"
        shape = "x".join(map(str, prof.get("opt", [])[1:])) if prof else "?"
        lines.append(f"| `{Path(rel).name}` ({Path(rel).parent.as_posix() if '/' in rel else 'recipe size'}) | "
                     f"{Path(manifest.get('onnx', '')).name} | {(manifest.get('plan') or {}).get('precision', '?')} | "
                     f"{sms(manifest.get('compute_capabilities') or [])} | {batch} of {shape} | "
                     f"{manifest.get('bytes', 0) / 1e6:.1f} MB | "
                     f"{FLAVOURS[manifest['flavour']].label} {manifest.get('tensorrt')} | "
                     f"sha256 {str(manifest.get('onnx_sha256'))[:12]}... |")
    return "\n".join(lines) + "\n"


def deploy_rtx(run_dir: Path, out: Path, *, force: bool = False) -> dict:
    """Copy every TensorRT-RTX engine of ``run_dir`` (with its manifest) to ``out``, whole or not at all."""
    run_dir, out = Path(run_dir), Path(out)
    if not run_dir.is_dir():
        raise InputError(f"run folder not found: {run_dir}")
    check_out(run_dir, out, force)
    run = Run(run_dir)
    found = engines(run)
    if not found:
        raise InputError(f"{run_dir} has no TensorRT-RTX engines: install tensorrt-rtx (bash scripts/setup.sh) and "
                         "rerun optim run (build.extra_targets: [rtx])")
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    command = f"optim deploy rtx {run_dir} -o {out}"
    files = []
    with building(out) as tmp:
        for rel, manifest in found:
            for src in (rel, RunLayout.engine_manifest(rel)):
                with atomic_path(tmp / src) as part:
                    shutil.copyfile(run_dir / src, part)
                files.append({"path": src, "sha256": sha256_file(tmp / src), "from": src})
            if files[-2]["sha256"] != manifest["engine_sha256"]:
                raise InputError(f"{run_dir / rel} changed while it was copied; run the deploy again")
        write_text(tmp / "README.md", readme(run.recipe, found, command, created))
        index = {"recipe": run.recipe, "run_dir": str(run_dir.resolve()), "command": command, "created": created,
                 "engines": [{"path": rel, "runs_on": manifest.get("compute_capabilities"),
                              "flavour": manifest["flavour"], "version": manifest.get("tensorrt")}
                             for rel, manifest in found], "files": files}
        write_json(tmp / INDEX, index)
    return index
