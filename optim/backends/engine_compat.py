"""Which GPU an engine is for, and whether an engine may run here: plain decisions, no TensorRT.

A TensorRT engine is tied to the TensorRT version that built it (unless built
version-compatible, which later versions can load) and to the GPU architecture it
was built on (unless built with a hardware-compatibility level). Each engine optim
builds has a manifest beside it (``ENGINE.json``) that records both; the engine
runner refuses an engine whose manifest does not fit this machine, with one line
that says what to do, instead of letting deserialization crash or run wrongly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optim.errors import InputError
from optim.machine import Gpu, Machine, gpu_missing, tensorrt_missing


@dataclass(frozen=True)
class TargetGpu:
    key: str
    name: str
    compute_capability: tuple[int, int]

    @property
    def sm(self) -> str:
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"


TARGETS = {"h100": TargetGpu("h100", "H100", (9, 0))}
AMPERE = (8, 0)


def target(key: str) -> TargetGpu:
    if key not in TARGETS:
        raise InputError(f"unknown target GPU '{key}'; known: {', '.join(TARGETS)}")
    return TARGETS[key]


def target_problem(t: TargetGpu, gpu: Gpu, hardware_compatibility: str) -> str | None:
    """Why ``gpu`` cannot build an engine that runs on ``t`` (None when it can)."""
    here = f"this GPU is {gpu.name} ({gpu.sm})"
    if hardware_compatibility == "ampere_plus":
        if gpu.compute_capability < AMPERE:
            return f"{here}; Ampere-and-newer engines must be built on sm_80 or newer"
        return None
    if gpu.compute_capability != t.compute_capability:
        return (f"{here}; an engine for {t.name} ({t.sm}) must be built on an {t.sm} GPU, "
                "or with build.hardware_compatibility: ampere_plus on an Ampere or newer GPU")
    return None


def build_blocker(m: Machine, t: TargetGpu, hardware_compatibility: str = "none") -> str | None:
    """The one reason engines for ``t`` cannot be built here, or None."""
    return (tensorrt_missing(m) or gpu_missing(m)
            or target_problem(t, m.gpu, hardware_compatibility))  # type: ignore[arg-type]


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".") if p.isdigit())


def engine_problem(manifest: dict[str, Any], tensorrt_here: str, gpu: Gpu) -> str | None:
    """Why an engine with this manifest must not run with this TensorRT on this GPU (None: it may)."""
    plan = manifest.get("plan", {})
    built = str(manifest.get("tensorrt", "?"))
    rebuild = f"rebuild it here: optim build {manifest.get('onnx', 'MODEL.onnx')} --target {manifest.get('target', '?')}"
    if plan.get("version_compatible"):
        if _version(tensorrt_here) < _version(built):
            return (f"engine was built version-compatible with TensorRT {built}; this TensorRT {tensorrt_here} "
                    f"is older and cannot load it: {rebuild}")
    elif built != tensorrt_here:
        return (f"engine was built with TensorRT {built}, this machine has TensorRT {tensorrt_here}; "
                f"engines only load in the version that built them: {rebuild} (or build with "
                "build.version_compatible: true)")
    bg = manifest.get("gpu", {})
    cc = tuple(int(p) for p in str(bg.get("compute_capability", "0.0")).split("."))
    built_on = f"{bg.get('name', '?')} (sm_{''.join(map(str, cc))})"
    level = plan.get("hardware_compatibility", "NONE")
    if level == "AMPERE_PLUS":
        if gpu.compute_capability < AMPERE:
            return f"engine is for Ampere or newer GPUs; this GPU is {gpu.name} ({gpu.sm})"
        return None
    if gpu.compute_capability != cc:
        return (f"engine was built on {built_on}, this GPU is {gpu.name} ({gpu.sm}); engines only run on the "
                f"architecture that built them: {rebuild} (or build with build.hardware_compatibility: ampere_plus)")
    return None


def manifest_path(engine: Path) -> Path:
    return Path(engine).with_name(Path(engine).name + ".json")


def read_manifest(engine: Path) -> dict[str, Any]:
    p = manifest_path(engine)
    if not p.is_file():
        raise InputError(f"{engine} has no build manifest beside it ({p.name}); optim runs only engines whose "
                         "TensorRT version and GPU it can check: rebuild with optim build")
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{p} is not a readable engine manifest ({type(exc).__name__}); rebuild the engine") from None
    if not isinstance(data, dict) or "tensorrt" not in data or "gpu" not in data:
        raise InputError(f"{p} lacks the tensorrt/gpu fields of an optim engine manifest; rebuild the engine")
    return data
