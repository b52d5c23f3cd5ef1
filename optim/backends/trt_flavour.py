"""The TensorRT flavours optim builds engines with, as data: what each one can and cannot do.

Two builders share the parser, the network API and the Q/DQ rules, and differ in a handful of
facts that the build stage reads from here instead of testing a version in scattered ``if``s:

===========================  ===============================  ===================================
                             TensorRT 10 / 11 (``tensorrt``)  TensorRT-RTX (``tensorrt_rtx``)
===========================  ===============================  ===================================
builds without a GPU         no: builds on the target GPU     yes: ahead of time, on any x86 CPU
engines run on               the GPU it was built on (H100)   the compute capabilities it was
                                                              built for (RTX / workstation GPUs)
weak typing (FP16/BF16 flag) TensorRT 10 only                 never: every network strongly typed
timing cache                 yes                              no (no timing on a CPU build)
compute-capability targets   no (the build GPU decides)       ``IBuilderConfig.set_compute_capability``
install                      scripts/setup_gpu.sh (NVIDIA's   PyPI ``tensorrt-rtx-cu12`` (pinned in
                             own index; PyPI's are stubs)     requirements.txt)
===========================  ===============================  ===================================

TensorRT-RTX engines do not run on Hopper (its support matrix lists compute capability 7.5, 8.0,
8.6, 8.9 and 12.0), so an H100 engine always comes from TensorRT 10/11. optim targets 8.6, 8.9 and
12.0; FP8 engines only 8.9 and 12.0 (Ampere has no FP8: the builder refuses sm86 for an FP8 graph).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Flavour:
    key: str  # the Python module name, and the name in manifests and run folders
    label: str  # how a sentence names it
    short: str  # the report's engine cell: "built (RTX, ...)"
    pip: str  # the distribution whose version the cache key records
    builds_without_gpu: bool
    #: the major from which every network is strongly typed and the FP16/BF16 builder flags are gone
    #: (0: always so)
    strong_typing_only_from: int
    supported_majors: tuple[int, ...]
    timing_cache: bool
    #: ``ComputeCapability`` member names the builder is told to target (empty: the build GPU's own)
    compute_capabilities: tuple[str, ...] = ()
    #: precision -> the lowest ComputeCapability that has its hardware type (FP8: Ada, sm89)
    min_capability: dict[str, str] = field(default_factory=dict)
    runs_on: str = ""

    def strong_typing_only(self, major: int) -> bool:
        return major >= self.strong_typing_only_from

    def targets_for(self, precision: str) -> tuple[str, ...]:
        """The compute-capability targets an engine of ``precision`` is built for: those that have its
        types (TensorRT-RTX refuses FP8 for sm86: "the model contains HW-specific datatypes")."""
        low = _sm(self.min_capability.get(precision, "SM0"))
        return tuple(c for c in self.compute_capabilities if _sm(c) >= low)

    @property
    def sms(self) -> str:
        """``sm86/89/120`` from the compute-capability targets ("" when the build GPU decides)."""
        return sms(self.compute_capabilities)


def _sm(name: str) -> int:
    return int(name.removeprefix("SM"))


def sms(names: tuple[str, ...] | list[str]) -> str:
    """``sm86/89/120`` from ComputeCapability names (SM86, ...) or "8.6"-style strings."""
    nums = [n.removeprefix("SM").replace(".", "") for n in names]
    return ("sm" + "/".join(nums)) if nums else ""


TENSORRT = Flavour(
    key="tensorrt", label="TensorRT", short="TensorRT", pip="tensorrt-cu13", builds_without_gpu=False,
    strong_typing_only_from=11, supported_majors=(10, 11), timing_cache=True,
    runs_on="the GPU architecture it was built on (or Ampere and newer with build.hardware_compatibility: "
            "ampere_plus)")
TENSORRT_RTX = Flavour(
    key="tensorrt_rtx", label="TensorRT-RTX", short="RTX", pip="tensorrt-rtx-cu12", builds_without_gpu=True,
    strong_typing_only_from=0, supported_majors=(1,), timing_cache=False,
    compute_capabilities=("SM86", "SM89", "SM120"), min_capability={"fp8": "SM89"},
    runs_on="RTX and workstation GPUs of compute capability 8.6, 8.9 and 12.0 (Ampere, Ada, Blackwell); "
            "not Hopper (H100)")
FLAVOURS = {f.key: f for f in (TENSORRT, TENSORRT_RTX)}


def flavour_of(manifest: dict) -> Flavour:
    """The flavour an engine's build manifest names; TensorRT for manifests written before flavours
    (and for a name optim does not know)."""
    return FLAVOURS.get(str(manifest.get("flavour") or TENSORRT.key), TENSORRT)
