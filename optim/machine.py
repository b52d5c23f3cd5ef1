"""What this machine has for optim: packages, TensorRT, CUDA, GPUs, driver, nvcc, plugin libraries.

``probe()`` looks (it imports TensorRT and asks torch/NVML about GPUs, so it takes a
second or two); everything that decides from what it found is plain code over the
``Machine`` record, so tests build that record by hand. Nothing here installs anything:
``INSTALL`` holds the commands a user runs for each missing piece.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from optim.artifacts import tool_versions
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


#: the CPU features that decide how fast a reduced precision runs on a CPU (Linux /proc/cpuinfo names)
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "amx_fp16",
                "avx512_fp16")
#: a precision the CPU computes natively -> the features that give it (any one is enough)
NATIVE = {
    "int8-vnni": ("amx_int8", "avx512_vnni", "avx_vnni"),
    "bf16": ("amx_bf16", "avx512_bf16"),
    "f16": ("amx_fp16", "avx512_fp16"),
}
#: how the features are written for people
FEATURE_LABELS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX512_VNNI", "avx_vnni": "AVX-VNNI",
                  "avx512_bf16": "AVX512_BF16", "amx_int8": "AMX-INT8", "amx_bf16": "AMX-BF16",
                  "amx_fp16": "AMX-FP16", "avx512_fp16": "AVX512_FP16"}


@dataclass(frozen=True)
class CpuInfo:
    """The CPU: model name, logical CPUs, and which of ``CPU_FEATURES`` it has (empty where the
    flags cannot be read: not Linux; ``features_known`` is then False)."""

    model: str
    logical_cpus: int
    features: frozenset[str] = frozenset()
    features_known: bool = True

    def has(self, feature: str) -> bool:
        return feature in self.features

    def feature_list(self) -> list[str]:
        """The features it has, in ``CPU_FEATURES`` order."""
        return [f for f in CPU_FEATURES if f in self.features]

    def native(self) -> tuple[str, ...]:
        return native_precisions(self.features)

    def describe(self) -> str:
        """One line: "AMD EPYC, 2 logical CPUs; AVX2 AVX-512 AVX512_VNNI AVX512_BF16; native int8-vnni, bf16"."""
        head = f"{self.model}, {self.logical_cpus} logical CPUs"
        if not self.features_known:
            return f"{head}; features unknown (no /proc/cpuinfo flags here)"
        feats = " ".join(FEATURE_LABELS[f] for f in self.feature_list()) or "none of " + " ".join(
            FEATURE_LABELS[f] for f in CPU_FEATURES)
        native = ", ".join(self.native()) or "none (no VNNI, BF16 or FP16 instructions)"
        return f"{head}; {feats}; native: {native}"

    def as_dict(self) -> dict:
        return {"model": self.model, "logical_cpus": self.logical_cpus,
                "features": self.feature_list() if self.features_known else None, "native": list(self.native())}


def native_precisions(features) -> tuple[str, ...]:
    """Which of "int8-vnni", "bf16", "f16" a CPU with ``features`` computes natively."""
    have = set(features)
    return tuple(p for p, needs in NATIVE.items() if have & set(needs))


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str] | None]:
    """(model name, the ``CPU_FEATURES`` among the flags) from the text of /proc/cpuinfo (x86 Linux);
    the features are None where the text has no flags line (not x86)."""
    model, flags = "", None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and flags is None:
            flags = set(value.split())
    return model, None if flags is None else frozenset(f for f in CPU_FEATURES if f in flags)


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """This machine's CPU: model name, logical CPUs and features (from /proc/cpuinfo on Linux;
    elsewhere the platform's processor name and an empty feature set)."""
    model, features = "", None
    try:
        model, features = parse_cpuinfo(Path(cpuinfo).read_text(errors="replace"))
    except OSError:
        pass
    return CpuInfo(model or platform.processor() or platform.machine() or "unknown CPU", os.cpu_count() or 1,
                   features or frozenset(), features is not None)


@dataclass
class Machine:
    python: str = ""
    packages: dict[str, str] = field(default_factory=dict)  # installed distributions only
    ort_providers: list[str] = field(default_factory=list)
    tensorrt: str | None = None  # version when `import tensorrt` works
    tensorrt_error: str = ""
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


#: optional packages doctor reports besides ``tool_versions``
_OPTIONAL = ("openvino",)


def _packages() -> dict[str, str]:
    from importlib import metadata

    found = {k: v for k, v in tool_versions().items() if k not in ("optim", "python")}
    for name in _OPTIONAL:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def _tensorrt() -> tuple[str | None, str]:
    from optim.backends.tensorrt_api import installed_version  # the one module that touches tensorrt

    return installed_version()


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
    m = re.search(r"release ([\d.]+)", out)
    return f"{m.group(1) if m else '?'} ({exe})"


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


def probe() -> Machine:
    trt_version, trt_error = _tensorrt()
    torch_cuda, gpus, cuda_error = cuda_gpus()
    return Machine(
        python=platform.python_version(), packages=_packages(), ort_providers=onnxruntime_providers(),
        tensorrt=trt_version, tensorrt_error=trt_error, torch_cuda=torch_cuda, cuda_error=cuda_error,
        gpus=gpus, driver=driver_version(), nvcc=_nvcc(), plugin_sources=(REPO / "csrc").is_dir(),
        plugin_libraries=find_plugin_libraries(), cpu=cpu_info(),
    )


def ort_conflict(m: Machine) -> bool:
    """onnxruntime and onnxruntime-gpu share one folder: both installed means a broken install."""
    return "onnxruntime" in m.packages and "onnxruntime-gpu" in m.packages


def tensorrt_missing(m: Machine) -> str | None:
    if m.tensorrt is not None:
        return None
    why = m.tensorrt_error or "not installed"
    return f"TensorRT is not importable here ({why}); install: {INSTALL['tensorrt']}"


def gpu_missing(m: Machine) -> str | None:
    if m.gpus:
        return None
    return f"no CUDA GPU is visible here ({m.cuda_error or 'none found'}); needs {INSTALL['gpu']}"
