"""``optim doctor``: what this machine has, which stages and backends can run here, and how to get
what is missing.

``inventory``, ``stages`` and ``backend_rows`` are plain functions of a ``Machine`` record (tests
build one by hand); ``optim.backends.machine.probe()`` fills it on the real machine. The backends
and tasks are read from their registries (``optim.backends.registry``, ``optim.tasks``): one
registered by a plugin or a test is listed like the built-in ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from optim.backends.engine_compat import (SUPPORTED_MAJORS, TARGETS, TargetGpu, build_blocker, major_implies,
                                         tensorrt_major, tensorrt_unsupported)
from optim.backends.trt_flavour import TENSORRT_RTX
from optim.executor import stage_tools
from optim.install import INSTALL
from optim.backends.machine import Machine, ort_conflict
from optim.backends.registry import backends
from optim.stages import stages as registered_stages, summary
from optim.tasks import task_names


@dataclass
class Item:
    name: str
    value: str
    ok: bool
    fix: str = ""


@dataclass
class StageStatus:
    stage: str
    ok: bool
    why: str = ""


@dataclass
class BackendStatus:
    """One registered backend: its names, what it runs, whether ``optim run`` uses it, and whether it can run here."""

    backend: str
    files: str
    family: bool
    ok: bool
    why: str = ""


def backend_rows(machine: Machine) -> list[BackendStatus]:
    """Every registered backend, in registration order, with why it cannot run here (``Backend.blocker``)."""
    rows = []
    for b in backends():
        why = b.blocker(machine) or ""
        rows.append(BackendStatus(", ".join((b.name, *b.aliases)), b.files, b.family, not why, why))
    return rows


def _pkg(machine: Machine, name: str) -> str | None:
    return machine.packages.get(name)


def inventory(machine: Machine) -> list[Item]:
    conflict = ort_conflict(machine)
    ort = _pkg(machine, "onnxruntime-gpu") or _pkg(machine, "onnxruntime")
    gpus = "; ".join(f"{g.index}: {g.name}, {g.sm}" + (f", {g.memory_mib} MiB" if g.memory_mib else "")
                     for g in machine.gpus)
    if not machine.plugin_sources:
        plugins = Item("plugin libraries", "none needed: this checkout has no csrc/", True)
    elif machine.plugin_libraries:
        plugins = Item("plugin libraries", ", ".join(machine.plugin_libraries), True)
    else:
        plugins = Item("plugin libraries", "csrc/ is here but no library is built (build/plugins/)",
                       False, "bash scripts/build_plugins.sh")
    return [
        Item("python", machine.python, machine.python.startswith("3.11"),
             "" if machine.python.startswith("3.11") else "Python 3.11"),
        Item("torch", f"{_pkg(machine, 'torch')} (built for CUDA {machine.torch_cuda})"
             if _pkg(machine, "torch") else "not installed", bool(_pkg(machine, "torch")), INSTALL["base"]),
        Item("onnx", _pkg(machine, "onnx") or "not installed", bool(_pkg(machine, "onnx")), INSTALL["base"]),
        Item("nvidia-modelopt", _pkg(machine, "nvidia-modelopt") or "not installed",
             bool(_pkg(machine, "nvidia-modelopt")), INSTALL["base"]),
        Item("onnxruntime",
             ("BROKEN: both onnxruntime and onnxruntime-gpu are installed (they share one folder)" if conflict
              else f"{ort} ({'onnxruntime-gpu' if _pkg(machine, 'onnxruntime-gpu') else 'CPU wheel'}), providers: "
                   f"{', '.join(machine.ort_providers) or 'none'}") if ort else "not installed",
             bool(ort) and not conflict, INSTALL["ort-conflict"] if conflict else INSTALL["base"]),
        _tensorrt_item(machine),
        _tensorrt_rtx_item(machine),
        Item("openvino", f"{_pkg(machine, 'openvino')} (CPU backends openvino, openvino-bf16, openvino-f16)"
             if _pkg(machine, "openvino") else f"not installed (optional CPU backend; install: {INSTALL['openvino']})",
             True),
        _cpu_item(machine),
        Item("CUDA GPU", gpus or f"none ({machine.cuda_error or 'not found'})", bool(machine.gpus), INSTALL["gpu"]),
        Item("NVIDIA driver", machine.driver or "not found", machine.driver is not None, INSTALL["gpu"]),
        Item("nvcc", machine.nvcc or "not found", machine.nvcc is not None, INSTALL["nvcc"]),
        plugins,
    ]


def _cpu_item(machine: Machine) -> Item:
    """The CPU, its features that decide reduced-precision speed, what it computes natively, and the
    INT8 format onnxruntime-target files get here (``optim.stages.quantize.scheme``)."""
    if machine.cpu is None:
        return Item("CPU", "not probed", True)
    from optim.stages.quantize.scheme import ort_int8_scheme

    sc = ort_int8_scheme(machine.cpu)
    return Item("CPU", f"{machine.cpu.describe()}; ONNX Runtime INT8 here: {sc.label()} ({sc.reason})", True)


def _tensorrt_item(machine: Machine) -> Item:
    """The version, its major and what that means for a build (TensorRT 10 and 11 differ on weak typing)."""
    if machine.tensorrt is None:
        return Item("TensorRT", f"not importable ({machine.tensorrt_error or 'not installed'})", False,
                    INSTALL["tensorrt"])
    if tensorrt_unsupported(machine):
        supported = " and ".join(map(str, SUPPORTED_MAJORS))
        return Item("TensorRT", f"{machine.tensorrt}: NOT SUPPORTED (optim builds with TensorRT {supported})", False,
                    INSTALL["tensorrt"])
    return Item("TensorRT", f"{machine.tensorrt} ({major_implies(tensorrt_major(machine.tensorrt))})", True)


def _tensorrt_rtx_item(machine: Machine) -> Item:
    """TensorRT-RTX: builds engines here without a GPU; they run only on its GPUs."""
    if machine.tensorrt_rtx is None:
        return Item("TensorRT-RTX", f"not importable ({machine.tensorrt_rtx_error or 'not installed'})", False,
                    INSTALL["tensorrt_rtx"])
    return Item("TensorRT-RTX", f"{machine.tensorrt_rtx}: builds engines on this machine without a GPU; they run only "
                f"on {TENSORRT_RTX.runs_on}", True)


def tensorrt_info(machine: Machine) -> dict:
    major = None
    if machine.tensorrt is not None and not tensorrt_unsupported(machine):
        major = tensorrt_major(machine.tensorrt)
    return {"version": machine.tensorrt, "major": major, "implies": major_implies(major) if major else None,
            "supported_majors": list(SUPPORTED_MAJORS),
            "rtx": {"version": machine.tensorrt_rtx, "builds_without_gpu": True, "targets": TENSORRT_RTX.sms,
                    "runs_on": TENSORRT_RTX.runs_on}}


def stages(machine: Machine, t: TargetGpu, hardware_compatibility: str = "none") -> list[StageStatus]:
    """Every registered stage (``optim.stages``), in the order a run takes them: each one's own answer
    (``doctor``), or whether its ``TOOLS`` are installed."""
    rows = []
    for stage in registered_stages():
        ask = getattr(stage, "doctor", None)
        found = ask(machine, t, hardware_compatibility) if ask else [(summary(stage), _tools_missing(machine, stage))]
        rows += [StageStatus(f"{stage.NAME}: {what}", not why, why or "") for what, why in found]
    return rows


def tools_to_probe() -> tuple[str, ...]:
    """The packages every registered stage names in its ``TOOLS`` (what ``probe`` looks up for doctor)."""
    return tuple(dict.fromkeys(t for stage in registered_stages() for t in stage_tools(stage)))


def probe() -> Machine:
    """This machine, with the version of every stage's tools."""
    from optim.backends.machine import probe as probe_machine

    return probe_machine(tools_to_probe())


#: a tool that another distribution provides too (the GPU wheel of ONNX Runtime is ONNX Runtime)
_PROVIDED_BY = {"onnxruntime": "onnxruntime-gpu"}


def _tools_missing(machine: Machine, stage) -> str | None:
    missing = [t for t in stage_tools(stage) if not (_pkg(machine, t) or _pkg(machine, _PROVIDED_BY.get(t, t)))]
    return f"{', '.join(missing)} missing: {INSTALL['base']}" if missing else None


def render(machine: Machine, t: TargetGpu, hardware_compatibility: str = "none") -> str:
    items, rows = inventory(machine), stages(machine, t, hardware_compatibility)
    w = max(len(i.name) for i in items) + 2
    out = ["optim doctor: what this machine has", ""]
    for i in items:
        out.append(f"  {i.name:<{w}}{i.value}")
        if not i.ok and i.fix:
            out.append(f"  {'':<{w}}-> {i.fix}")
    out += ["", f"Stages (target GPU: {t.name}, {t.sm}):", ""]
    w = max(len(r.stage) for r in rows) + 2
    for r in rows:
        out.append(f"  {r.stage:<{w}}{'yes' if r.ok else 'NO: ' + r.why}")
    brows = backend_rows(machine)
    out += ["", "Backends (optim check/bench --backend NAME; * optim run checks and times every entry on it):", ""]
    w = max(len(r.backend) for r in brows) + 4
    for r in brows:
        name = f"{'*' if r.family else ' '} {r.backend}"
        out.append(f"  {name:<{w}}{r.files}: {'yes' if r.ok else 'NO: ' + r.why}")
    out += ["", f"Tasks (a recipe's task:): {', '.join(task_names())}"]
    blocker = build_blocker(machine, t, hardware_compatibility)
    rtx = "" if build_blocker(machine, TARGETS["rtx"]) else f"; TensorRT-RTX engines for {TARGETS['rtx'].sm} are built"
    out += ["", "optim run here: " + ("every stage, including TensorRT engines and GPU bench" if blocker is None
                                       else f"CPU stages only{rtx}; {t.name} build and GPU bench are skipped "
                                            f"({blocker})")]
    return "\n".join(out) + "\n"


def as_dict(machine: Machine, t: TargetGpu, hardware_compatibility: str = "none") -> dict:
    return {"machine": machine.as_dict(), "items": [asdict(i) for i in inventory(machine)],
            "tensorrt": tensorrt_info(machine),
            "stages": [asdict(r) for r in stages(machine, t, hardware_compatibility)],
            "backends": [asdict(r) for r in backend_rows(machine)], "tasks": task_names(), "target": t.key}
