"""This machine's CPU: model, logical CPUs, and the features that decide reduced-precision speed.

Read from /proc/cpuinfo on Linux (elsewhere the features are unknown, and said so). Every
speed number optim writes names these (``optim.artifacts.host_info``). ``OPTIM_CPU_FEATURES``
(comma- or space-separated Linux flag names, e.g. ``avx2`` for an AVX2-only CPU) replaces the
flags read, for tests, for an emulated CPU (``qemu-x86_64 -cpu Haswell`` passes the host's
/proc/cpuinfo through) and for quantizing for another CPU class; the model name then says so.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

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
    arch: str = "x86_64"  # platform.machine()

    @property
    def x86(self) -> bool:
        return self.arch.lower() in ("x86_64", "amd64", "i386", "i686")

    def has(self, feature: str) -> bool:
        return feature in self.features

    def feature_list(self) -> list[str]:
        """The features it has, in ``CPU_FEATURES`` order."""
        return [f for f in CPU_FEATURES if f in self.features]

    def vnni_label(self) -> str:
        """The instructions that sum INT8 products in 32 bits here ("AMX-INT8/AVX512_VNNI"; "" for none)."""
        return "/".join(FEATURE_LABELS[f] for f in NATIVE["int8-vnni"] if f in self.features)

    def int8_label(self) -> str:
        """What computes INT8 here: "AVX512_VNNI", "AMX-INT8/AVX512_VNNI", "AVX2 without VNNI", ..."""
        if not self.features_known:
            return "a CPU of unknown features"
        vnni = self.vnni_label()
        if vnni:
            return vnni
        return ("AVX-512" if "avx512f" in self.features else "AVX2" if "avx2" in self.features else "no AVX2") + \
            " without VNNI"

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
        return {"model": self.model, "logical_cpus": self.logical_cpus, "arch": self.arch,
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


FEATURES_ENV = "OPTIM_CPU_FEATURES"


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """This machine's CPU: model name, logical CPUs and features (from /proc/cpuinfo on Linux;
    elsewhere the platform's processor name and an empty feature set; ``OPTIM_CPU_FEATURES``
    replaces the features read)."""
    model, features = "", None
    try:
        model, features = parse_cpuinfo(Path(cpuinfo).read_text(errors="replace"))
    except OSError:
        pass
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    forced = os.environ.get(FEATURES_ENV)
    if forced is not None:
        flags = set(forced.replace(",", " ").split())
        features = frozenset(f for f in CPU_FEATURES if f in flags)
        model += f" (features set by {FEATURES_ENV}={forced.strip()!r})"
    return CpuInfo(model, os.cpu_count() or 1, features or frozenset(), features is not None,
                   platform.machine() or "unknown")
