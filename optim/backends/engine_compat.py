"""Which GPU an engine is for, and whether an engine may run here: plain decisions, no TensorRT.

A TensorRT engine is tied to the TensorRT version that built it (unless built
version-compatible, which later versions can load) and to the GPU architecture it
was built on (unless built with a hardware-compatibility level). Each engine optim
builds has a manifest beside it (``ENGINE.json``) that records both; the engine
runner refuses an engine whose manifest does not fit this machine, with one line
that says what to do, instead of letting deserialization crash or run wrongly.

Also here: which TensorRT majors optim supports (10 and 11) and what each implies for a
build (``SUPPORTED_MAJORS``, ``tensorrt_major``, ``major_implies``). TensorRT 11 removed the
weak-typing builder flags (BuilderFlag FP16/BF16/INT8/FP8) and makes every network strongly
typed (``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` is deprecated there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optim.backends.trt_flavour import FLAVOURS, TENSORRT, TENSORRT_RTX
from optim.errors import InputError
from optim.install import INSTALL
from optim.backends.machine import Gpu, Machine, gpu_missing, tensorrt_missing
from optim.runfolder.layout import RunLayout


@dataclass(frozen=True)
class TargetGpu:
    key: str
    name: str
    compute_capability: tuple[int, int]  # the (first) compute capability its engines run on
    flavour: str = TENSORRT.key  # which builder makes its engines (optim.backends.trt_flavour)

    @property
    def sm(self) -> str:
        fl = FLAVOURS[self.flavour]
        return fl.sms or f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"


TARGETS = {"h100": TargetGpu("h100", "H100", (9, 0)),
           "rtx": TargetGpu("rtx", "RTX / workstation GPUs", (8, 6), TENSORRT_RTX.key)}
AMPERE = (8, 0)

# -- TensorRT majors -------------------------------------------------------------------------
SUPPORTED_MAJORS = (10, 11)
#: the first major without weak typing: no FP16/BF16/INT8/FP8 builder flags, every network strongly typed
STRONG_TYPING_ONLY = 11
_IMPLIES = {
    10: "TensorRT 10: strongly typed networks by the STRONGLY_TYPED creation flag; FP16/BF16 from an FP32 "
        "model may also use the FP16/BF16 builder flags (weakly typed, deprecated since 10.12)",
    11: "TensorRT 11: every network is strongly typed (no creation flag needed); the precision comes from the "
        "ONNX types (Q/DQ, AutoCast), and the FP16/BF16/INT8/FP8 builder flags no longer exist (--precision "
        "fp16|bf16 on an FP32 model is refused: build the AutoCast model)",
}


def tensorrt_major(version: str | int) -> int:
    """10 from "10.16.1.11" (or from 10)."""
    if isinstance(version, int):
        return version
    head = str(version).strip().split(".", 1)[0]
    if not head.isdigit():
        raise InputError(f"cannot read a TensorRT major version from '{version}'")
    return int(head)


def major_implies(major: int, flavour: str = TENSORRT.key) -> str:
    """One line: what building with this TensorRT major (of ``flavour``) means for optim."""
    if flavour == TENSORRT_RTX.key:
        return (f"{TENSORRT_RTX.label} {major}: every network strongly typed (precision from the ONNX types), "
                f"built ahead of time without a GPU for {TENSORRT_RTX.sms}; its engines run on "
                f"{TENSORRT_RTX.runs_on}")
    if major in _IMPLIES:
        return _IMPLIES[major]
    return f"TensorRT {major}: not supported by optim (it supports {unsupported_hint()})"


def unsupported_hint() -> str:
    return (" and ".join(str(major) for major in SUPPORTED_MAJORS)
            + "; install one with bash scripts/setup_gpu.sh --tensorrt " + "|".join(map(str, SUPPORTED_MAJORS)))


def tensorrt_unsupported(machine: Machine) -> str | None:
    """Why the importable TensorRT is not one optim builds with (None when it is, or none is importable)."""
    if machine.tensorrt is None:
        return None
    try:
        major = tensorrt_major(machine.tensorrt)
    except InputError as exc:
        return str(exc)
    if major in SUPPORTED_MAJORS:
        return None
    return f"TensorRT {machine.tensorrt} is installed; optim supports TensorRT {unsupported_hint()}"


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


def build_blocker(machine: Machine, t: TargetGpu, hardware_compatibility: str = "none") -> str | None:
    """The one reason engines for ``t`` cannot be built here, or None."""
    if t.flavour == TENSORRT_RTX.key:  # builds on any machine where it imports
        if machine.tensorrt_rtx is None:
            why = machine.tensorrt_rtx_error or "not installed"
            return f"{TENSORRT_RTX.label} is not importable here ({why}); install: {INSTALL['tensorrt_rtx']}"
        return None
    return (tensorrt_missing(machine) or tensorrt_unsupported(machine) or gpu_missing(machine)
            or target_problem(t, machine.gpu, hardware_compatibility))  # type: ignore[arg-type]


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".") if p.isdigit())


def engine_problem(manifest: dict[str, Any], tensorrt_here: str, gpu: Gpu) -> str | None:
    """Why an engine with this manifest must not run with this TensorRT on this GPU (None: it may)."""
    flavour = manifest.get("flavour", TENSORRT.key)
    if flavour != TENSORRT.key:
        fl = FLAVOURS.get(flavour)
        return (f"engine was built by {fl.label if fl else flavour} for {fl.sms if fl else '?'}; it runs with that "
                f"runtime on {fl.runs_on if fl else 'its GPUs'}, not with TensorRT {tensorrt_here}")
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
    """The build manifest beside an engine (``RunLayout.engine_manifest``)."""
    return Path(RunLayout.engine_manifest(str(engine)))


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
