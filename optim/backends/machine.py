"""What this machine has for optim: packages, TensorRT, CUDA, GPUs, driver, nvcc, plugin libraries.

``probe()`` looks (it imports TensorRT and asks torch/NVML about GPUs, so it takes a
second or two); everything that decides from what it found is plain code over the
``Machine`` record, so tests build that record by hand. Nothing here installs anything:
``INSTALL`` holds the commands a user runs for each missing piece.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from optim.artifacts import installed_versions, tool_versions
from optim.hostcpu import (  # noqa: F401  (re-exported: the CPU is part of what this machine has)
    CPU_FEATURES, FEATURE_LABELS, NATIVE, CpuInfo, cpu_info, native_precisions, parse_cpuinfo,
)
from optim.errors import first_line
from optim.install import INSTALL

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    compute_capability: tuple[int, int]
    memory_mib: int | None = None

    @property
    def sm(self) -> str:
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"


@dataclass
class Machine:
    python: str = ""
    packages: dict[str, str] = field(default_factory=dict)  # installed distributions only
    ort_providers: list[str] = field(default_factory=list)
    tensorrt: str | None = None  # version when `import tensorrt` works
    tensorrt_error: str = ""
    tensorrt_rtx: str | None = None  # version when `import tensorrt_rtx` works (builds without a GPU)
    tensorrt_rtx_error: str = ""
    torch_cuda: str | None = None  # the CUDA version torch was built with
    cuda_error: str = ""
    gpus: list[Gpu] = field(default_factory=list)
    driver: str | None = None
    nvcc: str | None = None
    plugin_sources: bool = False  # csrc/ present in this checkout
    plugin_libraries: list[str] = field(default_factory=list)
    cpu: CpuInfo | None = None

    @property
    def gpu(self) -> Gpu | None:
        return self.gpus[0] if self.gpus else None

    def as_dict(self) -> dict:
        d = asdict(self)
        d["cpu"] = self.cpu.as_dict() if self.cpu is not None else None
        return d


def _packages(more: tuple[str, ...] = ()) -> dict[str, str]:
    """``tool_versions``, the package of every registered backend (``optim.backends.registry``) and ``more``."""
    from optim.backends.registry import backend_packages

    found = {k: v for k, v in tool_versions().items() if k not in ("optim", "python")}
    return {**found, **installed_versions((*backend_packages(), *more))}


def _tensorrt(flavour: str = "tensorrt") -> tuple[str | None, str]:
    from optim.backends.tensorrt_api import installed_version  # the one module that touches tensorrt

    return installed_version(flavour)


def cuda_gpus() -> tuple[str | None, list[Gpu], str]:
    try:
        import torch
    except Exception as exc:
        return None, [], f"torch does not import: {first_line(exc, 200)}"
    built = torch.version.cuda
    if not torch.cuda.is_available():
        return built, [], "torch sees no CUDA device"
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        gpus.append(Gpu(i, props.name, (props.major, props.minor), props.total_memory // (1 << 20)))
    return built, gpus, ""


def driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            v = pynvml.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else str(v)
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    return None


def _nvcc() -> str | None:
    exe = shutil.which("nvcc")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return f"found at {exe}, version unknown"
    release = re.search(r"release ([\d.]+)", out)
    return f"{release.group(1) if release else '?'} ({exe})"


def find_plugin_libraries() -> list[str]:
    """Libraries built from csrc/ that optim knows (``optim.ops.plugins``), as 'kind: path'."""
    from optim.ops.plugins import LIBRARIES, find

    return [f"{kind}: {p}" for kind in LIBRARIES if (p := find(kind)) is not None]


def onnxruntime_providers() -> list[str]:
    try:
        import onnxruntime as ort

        return list(ort.get_available_providers())
    except Exception:
        return []


def probe(packages: tuple[str, ...] = ()) -> Machine:
    """This machine; ``packages``: more distributions to look up (the stages' tools, for ``optim doctor``)."""
    trt_version, trt_error = _tensorrt()
    rtx_version, rtx_error = _tensorrt("tensorrt_rtx")
    torch_cuda, gpus, cuda_error = cuda_gpus()
    return Machine(
        python=platform.python_version(), packages=_packages(packages), ort_providers=onnxruntime_providers(),
        tensorrt=trt_version, tensorrt_error=trt_error, tensorrt_rtx=rtx_version, tensorrt_rtx_error=rtx_error,
        torch_cuda=torch_cuda, cuda_error=cuda_error,
        gpus=gpus, driver=driver_version(), nvcc=_nvcc(), plugin_sources=(REPO / "csrc").is_dir(),
        plugin_libraries=find_plugin_libraries(), cpu=cpu_info(),
    )


def ort_conflict(machine: Machine) -> bool:
    """onnxruntime and onnxruntime-gpu share one folder: both installed means a broken install."""
    return "onnxruntime" in machine.packages and "onnxruntime-gpu" in machine.packages


def tensorrt_missing(machine: Machine) -> str | None:
    if machine.tensorrt is not None:
        return None
    why = machine.tensorrt_error or "not installed"
    return f"TensorRT is not importable here ({why}); install: {INSTALL['tensorrt']}"


def gpu_missing(machine: Machine) -> str | None:
    if machine.gpus:
        return None
    return f"no CUDA GPU is visible here ({machine.cuda_error or 'none found'}); needs {INSTALL['gpu']}"
