"""Stage: ONNX -> TensorRT engine (``.plan``) for a target GPU, with a manifest and per-layer JSON.

``plan_engine`` decides, in plain code and for the TensorRT major it will run with, how
a model is built: INT8/FP8 Q/DQ and FP16/BF16 AutoCast models become strongly typed
networks (their types are the precision; no precision flag is set), an FP32 model is
strongly typed FP32 (TF32 on or off). FP16/BF16 from an FP32 model use the FP16/BF16
builder flag (weakly typed) on TensorRT 10; TensorRT 11 has no such flags, so there the
plan refuses, in one line, and names the AutoCast route. On 10 the network is created
with the STRONGLY_TYPED flag; on 11 every network is strongly typed and no flag is set.
One optimization profile spans the recipe's batch min/opt/max.
``engine_from_onnx`` carries the plan out through ``optim.backends.tensorrt_api`` and writes,
beside the engine::

    ENGINE.plan.json      the manifest: TensorRT version and major (and what it implies), GPU,
                          compute capability, CUDA, driver, every build setting, the plan,
                          plugin and ONNX hashes
    ENGINE.layers.json    the engine inspector's per-layer JSON (names, formats, tactics)

and updates the timing cache file, so the next build on the same GPU and TensorRT
reuses its timings.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx

from optim.version import __version__
from optim.artifacts import atomic_path, sha256_file, write_json, write_text
from optim.backends.engine_compat import (major_implies, manifest_path, target, target_problem, tensorrt_major,
                                         unsupported_hint)
from optim.backends.trt_flavour import FLAVOURS, TENSORRT, flavour_of, sms
from optim.errors import BackendUnavailable, InputError
from optim.backends.machine import Gpu, Machine, cuda_gpus, driver_version, gpu_missing
from optim.onnx_tools import TensorInfo, graph_inputs, has_float8, load_onnx, single_input, tensor_types
from optim.executor import StageOutput
from optim.runfolder import RunLayout
from optim.settings import BatchRange, BuildSettings, Strict

HW_LEVELS = {"none": "NONE", "ampere_plus": "AMPERE_PLUS"}


@dataclass(frozen=True)
class Profile:
    input: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]
    note: str = ""


@dataclass(frozen=True)
class EnginePlan:
    """Everything that decides what TensorRT builds (the manifest records it whole)."""

    precision: str
    strongly_typed: bool  # the network's types are the precision (always so on TensorRT 11)
    flags_on: tuple[str, ...]
    flags_off: tuple[str, ...]
    optimization_level: int
    workspace_bytes: int | None
    hardware_compatibility: str  # HardwareCompatibilityLevel member name
    version_compatible: bool
    profile: Profile
    plugins: tuple[str, ...] = ()
    tensorrt_major: int = TENSORRT.supported_majors[0]
    flavour: str = TENSORRT.key  # optim.backends.trt_flavour: tensorrt or tensorrt_rtx
    #: ComputeCapability names the builder targets (TensorRT-RTX); empty: the GPU it builds on
    compute_capabilities: tuple[str, ...] = ()

    @property
    def network_flags(self) -> tuple[str, ...]:
        """NetworkDefinitionCreationFlag names: STRONGLY_TYPED only where the flavour and major need it
        (TensorRT 10; TensorRT 11 and TensorRT-RTX networks are always strongly typed)."""
        needs_flag = self.strongly_typed and not FLAVOURS[self.flavour].strong_typing_only(self.tensorrt_major)
        return ("STRONGLY_TYPED",) if needs_flag else ()

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "network_flags": list(self.network_flags)}


def onnx_precision(model: onnx.ModelProto) -> str:
    """What a model computes in, read from its graph: fp8/int8 Q/DQ, bf16/fp16 types, else fp32."""
    if has_float8(model):
        return "fp8"
    if {"QuantizeLinear", "DequantizeLinear"} & {n.op_type for n in model.graph.node}:
        return "int8"
    types = tensor_types(model)
    if onnx.TensorProto.BFLOAT16 in types:
        return "bf16"
    if onnx.TensorProto.FLOAT16 in types:
        return "fp16"
    return "fp32"


def profile_for(inputs: list[TensorInfo], batch: BatchRange, sample_shape: tuple[int, ...] | None = None,
                where: str = "model") -> Profile:
    """min/opt/max shapes of the single input from a batch range (a fixed ONNX batch wins)."""
    name, first, rest = single_input(inputs, where)
    if sample_shape is not None and tuple(sample_shape) != rest:
        raise InputError(f"{where}: input '{name}' is {list(rest)} per sample, the recipe says "
                         f"{list(sample_shape)}")
    note = ""
    if isinstance(first, int) and first > 0:
        sizes = (first, first, first)
        if (batch.min, batch.opt, batch.max) != sizes:
            note = f"the ONNX input has a fixed batch of {first}, so the profile is {first}/{first}/{first}"
    else:
        sizes = (batch.min, batch.opt, batch.max)
    min_shape, opt_shape, max_shape = ((b, *rest) for b in sizes)
    return Profile(name, min_shape, opt_shape, max_shape, note)


def plan_engine(model_precision: str, requested: str | None, settings: BuildSettings, profile: Profile,
                tensorrt: str | int, flavour: str = TENSORRT.key) -> EnginePlan:
    """How to build a model whose graph computes in ``model_precision`` as a ``requested`` engine,
    with ``flavour`` (tensorrt, tensorrt_rtx) version ``tensorrt`` (a version string such as
    "11.1.0.8", or the major)."""
    fl = FLAVOURS[flavour]
    major = tensorrt_major(tensorrt)
    if major not in fl.supported_majors:
        if fl is TENSORRT:
            raise BackendUnavailable(f"TensorRT {tensorrt} is not supported; optim supports TensorRT "
                                     f"{unsupported_hint()}")
        raise BackendUnavailable(f"{fl.label} {tensorrt} is not supported; optim supports {fl.label} "
                                 f"{'/'.join(map(str, fl.supported_majors))}.x ({fl.pip} in requirements.txt)")
    want = requested or model_precision
    on: list[str] = []
    if model_precision != "fp32":
        if want != model_precision:
            raise InputError(f"the model already computes in {model_precision} (from its graph); "
                             f"--precision {want} applies to FP32 models only")
        typed = True
    elif want == "fp32":
        typed = True
    elif want in ("fp16", "bf16"):
        if fl.strong_typing_only(major):
            who = f"TensorRT {major} removed the" if fl is TENSORRT else f"{fl.label} has no"
            raise InputError(f"{who} {want.upper()} builder flag (weak typing), so "
                             f"--precision {want} / build.fp16_bf16: builder_flags cannot build this FP32 model: "
                             f"build the {want.upper()} AutoCast model instead (optim quantize MODEL --precision "
                             f"{want}, then optim build that; in a recipe, build.fp16_bf16: strongly_typed)")
        typed, on = False, [want.upper()]  # weakly typed: TensorRT picks per layer
    else:
        raise InputError(f"{want} engines are built from Q/DQ models: run `optim quantize --precision {want}` "
                         "first (TensorRT deprecated implicit INT8 calibration)")
    off: list[str] = []
    (on if settings.tf32 else off).append("TF32")  # TF32 is on by default in TensorRT
    if settings.version_compatible:
        on.append("VERSION_COMPATIBLE")
    return EnginePlan(
        precision=want, strongly_typed=typed, flags_on=tuple(on), flags_off=tuple(off),
        optimization_level=settings.optimization_level,
        workspace_bytes=settings.workspace_mib * (1 << 20) if settings.workspace_mib else None,
        hardware_compatibility=HW_LEVELS[settings.hardware_compatibility],
        version_compatible=settings.version_compatible,
        profile=profile, plugins=tuple(str(p) for p in settings.plugins), tensorrt_major=major, flavour=fl.key,
        compute_capabilities=fl.targets_for(want),
    )


_SKIP_LAYERS = {"Reformat", "NoOp", "Shuffle", "Constant", "Identity"}


def _precision_of(fmt: str) -> str:
    f = fmt.lower()
    for tokens, name in ((("int8",), "INT8"), (("fp8", "e4m3"), "FP8"), (("bf16", "bfloat"), "BF16"),
                         (("fp16", "half"), "FP16"), (("fp32", "float"), "FP32")):
        if any(t in f for t in tokens):
            return name
    return "other"


def layer_summary(info: str) -> dict[str, Any]:
    """Count compute layers by the precision of their first input (Reformat/NoOp/... left out)."""
    try:
        data = json.loads(info)
    except ValueError:
        return {"compute_layers": None, "note": "the inspector output is not JSON"}
    counts: Counter[str] = Counter()
    for layer in data.get("Layers", []) if isinstance(data, dict) else []:
        if not isinstance(layer, dict):  # names only: built without DETAILED verbosity
            counts["unknown"] += 1
            continue
        if layer.get("LayerType") in _SKIP_LAYERS:
            continue
        ins = layer.get("Inputs") or [{}]
        counts[_precision_of(str(ins[0].get("Format/Datatype", "")) if isinstance(ins[0], dict) else "")] += 1
    return {"compute_layers": sum(counts.values()), "by_input_precision": dict(sorted(counts.items())),
            "how": "first input's Format/Datatype of each layer in the inspector JSON; "
                   "Reformat/NoOp/Shuffle/Constant/Identity layers left out"}


@dataclass
class BuildReport:
    engine: str
    manifest: dict[str, Any]
    seconds: float
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def engine_from_onnx(onnx_path: Path, out: Path, settings: BuildSettings, target_key: str = "h100", *,
                     batch: BatchRange = BatchRange(), sample_shape: tuple[int, ...] | None = None,
                     precision: str | None = None, timing_cache: Path | None = None,
                     api: Any = None, gpu: Gpu | None = None) -> BuildReport:
    """Build ``onnx_path`` into the engine ``out`` (plus ``out``.json and the layer JSON beside it)
    with the target's flavour: TensorRT on the target GPU, or TensorRT-RTX on any machine."""
    t0 = time.perf_counter()
    onnx_path, out = Path(onnx_path), Path(out)
    model = load_onnx(onnx_path, check=False)
    model_precision = onnx_precision(model)
    profile = profile_for(graph_inputs(model), batch, sample_shape, where=str(onnx_path))
    tgt = target(target_key)
    fl = FLAVOURS[tgt.flavour]
    if api is None:
        from optim.backends.tensorrt_api import TensorRT

        api = TensorRT.load(fl.key)
    plan = plan_engine(model_precision, precision, settings, profile, api.version, fl.key)
    torch_cuda, found, cuda_error = cuda_gpus()
    gpus = [gpu] if gpu else found
    if not fl.builds_without_gpu:
        if not gpus:
            raise BackendUnavailable(f"cannot build: {gpu_missing(Machine(cuda_error=cuda_error))}")
        problem = target_problem(tgt, gpus[0], settings.hardware_compatibility)
        if problem:
            raise BackendUnavailable(f"cannot build for {tgt.name}: {problem}")
    keep_cache = bool(timing_cache and settings.timing_cache and fl.timing_cache)
    cache_in = timing_cache.read_bytes() if keep_cache and timing_cache.is_file() else b""
    t_build = time.perf_counter()
    data, cache_out, reused = api.build(onnx_path, plan, cache_in)
    build_seconds = round(time.perf_counter() - t_build, 3)
    layers_path = out.with_name(RunLayout.engine_layers(out.name))
    if fl.builds_without_gpu:  # loading the engine needs one of the GPUs it is for: no inspector here
        layers = None
        summary: dict[str, Any] = {"compute_layers": None, "note": f"not read: the inspector needs the engine "
                                   f"loaded on one of its GPUs ({sms(plan.compute_capabilities)})"}
    else:
        session = api.session(api.deserialize(data, host_code=plan.version_compatible, what=str(out)))
        session.set_input_shape(profile.input, profile.opt)
        layers = session.layer_information()
        summary = layer_summary(layers)
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    if layers is not None:
        write_text(layers_path, layers if layers.endswith("\n") else layers + "\n")
    if keep_cache:
        with atomic_path(timing_cache) as tmp:
            tmp.write_bytes(cache_out)
    built_on = gpus[0] if gpus and not fl.builds_without_gpu else None
    built_cc = f"{built_on.compute_capability[0]}.{built_on.compute_capability[1]}" if built_on else None
    manifest = {
        "engine": out.name, "engine_sha256": _sha256(data), "bytes": len(data),
        "onnx": str(onnx_path), "onnx_sha256": sha256_file(onnx_path), "model_precision": model_precision,
        "target": tgt.key, "flavour": fl.key, "tensorrt": api.version, "tensorrt_major": plan.tensorrt_major,
        "tensorrt_major_implies": major_implies(plan.tensorrt_major, fl.key),
        "runs_on": fl.runs_on,
        "compute_capabilities": [f"{c[2:-1]}.{c[-1]}" for c in plan.compute_capabilities]
        or ([built_cc] if built_on else []),
        "gpu": {"name": built_on.name, "compute_capability": built_cc} if built_on else None,
        "cuda": torch_cuda, "driver": driver_version(),
        "settings": settings.model_dump(mode="json"), "plan": plan.as_dict(),
        "profile": {"input": profile.input, "min": list(profile.min), "opt": list(profile.opt),
                    "max": list(profile.max)},
        "build_seconds": build_seconds,
        "plugins": [{"path": p, "sha256": sha256_file(Path(p))} for p in plan.plugins],
        "timing_cache": ({"path": timing_cache.name, "reused": reused} if keep_cache else None),
        "layers": layers_path.name if layers is not None else None, "layer_summary": summary,
        "warnings": api.warnings()[:20], "optim": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(manifest_path(out), manifest)
    notes = [profile.note] if profile.note else []
    return BuildReport(str(out), manifest, round(time.perf_counter() - t0, 3), notes)


NAME = "build"
TOOLS = ("tensorrt",)
SUMMARY = "TensorRT engines for the target GPU, TensorRT-RTX engines without a GPU"


def doctor(machine: Machine, target_gpu, hardware_compatibility: str = "none") -> list[tuple[str, str | None]]:
    """The target's engines (TensorRT and, for the H100, its GPU) and TensorRT-RTX's (no GPU needed)."""
    from optim.backends.engine_compat import TARGETS, build_blocker

    rtx = TARGETS["rtx"]
    return [(f"TensorRT engines for {target_gpu.name} ({target_gpu.sm})",
             build_blocker(machine, target_gpu, hardware_compatibility)),
            (f"TensorRT-RTX engines for {rtx.sm} (no GPU needed)", build_blocker(machine, rtx))]


def environment() -> dict[str, Any]:
    """The GPU an engine is built on and the version of each flavour that may build it (an engine is
    tied to both; the wheels are ``tensorrt-cu13`` / ``tensorrt-rtx-cu12``, which the ``tensorrt``
    tool version does not see). The settings' target names the flavour."""
    from optim.backends.tensorrt_api import installed_version

    _, gpus, _ = cuda_gpus()
    return {"gpu": [gpus[0].name, gpus[0].sm] if gpus else None,
            **{key: installed_version(key)[0] for key in FLAVOURS}}


class Settings(Strict):
    """One engine: the recipe's build settings, the requested precision, profile and target."""

    build: BuildSettings
    precision: str | None = None  # fp16/bf16 by builder flag from an FP32 model (TensorRT 10); else the graph's
    batch: BatchRange = BatchRange()
    target: str = "h100"
    sample_shape: tuple[int, ...] | None = None


def run(inputs: list, settings: Settings, ctx) -> StageOutput:
    """``inputs``: the ONNX model (then the plugin libraries, hashed into the key only).

    Writes the engine to ``ctx.out``, its manifest and layer JSON beside it, the build
    report to ``gpu/build/<tag>.json`` (``engines/<target>/<name>.json`` for a target built without
    a GPU), and updates ``timing.cache`` in the run folder (TensorRT only)."""
    from rich.markup import escape

    from optim.console import console, info

    src = inputs[0]
    name = ctx.name
    with console.status(f"build {name} engine ..."):
        report = engine_from_onnx(src.path, ctx.out, settings.build, settings.target, batch=settings.batch,
                                  sample_shape=settings.sample_shape, precision=settings.precision,
                                  timing_cache=ctx.path(RunLayout.TIMING_CACHE))
    manifest = report.manifest
    info(escape(f"  {name}: {engine_cell(manifest)}"))
    engine = ctx.out.relative_to(ctx.root).as_posix()  # [sizes/SIZE/]model.TAG.TARGET.plan
    ctx.side(f"{name}.manifest", RunLayout.engine_manifest(engine))
    if manifest.get("layers"):
        ctx.side(f"{name}.layers", RunLayout.engine_layers(engine))
    tag = src.tag or name
    fl = FLAVOURS[target(settings.target).flavour]
    # a GPU-less target's record is kept per engine; a GPU build's fills the entry's GPU columns
    rec = RunLayout.engine_record(settings.target, name) if fl.builds_without_gpu else RunLayout.gpu_build(tag)
    write_json(ctx.side(RunLayout.record_name(rec), rec), {**report.as_dict(), "engine": ctx.out.name})
    if fl.timing_cache and ctx.path(RunLayout.TIMING_CACHE).is_file():
        ctx.side(RunLayout.TIMING_CACHE, RunLayout.TIMING_CACHE, "cache")
    return StageOutput({"plan": manifest["plan"], "flavour": manifest.get("flavour"),
                        "tensorrt": manifest["tensorrt"], "gpu": manifest["gpu"]}, report)


def engine_cell(manifest: dict[str, Any]) -> str:
    """One line for an engine manifest: "built (RTX, sm86/89/120, 1.2 MB, 0.9 s)"; a TensorRT one names
    its version, GPU and layer precisions."""
    fl = flavour_of(manifest)
    size = f"{(manifest.get('bytes') or 0) / 1e6:.1f} MB"
    secs = manifest.get("build_seconds")
    took = f", {secs:.1f} s" if isinstance(secs, (int, float)) else ""
    if fl.builds_without_gpu:
        ccs = sms(manifest.get("compute_capabilities") or [])
        return f"built ({fl.short} {manifest.get('tensorrt')}, {ccs}, {size}{took})"
    gpu = (manifest.get("gpu") or {}).get("name", "?")
    layers = (manifest.get("layer_summary") or {}).get("by_input_precision")
    return f"built (TensorRT {manifest.get('tensorrt')} on {gpu}, {size}{took}; layers by input precision {layers})"
