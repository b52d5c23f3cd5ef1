"""Which INT8 format an ``onnxruntime``-target file gets, decided by this CPU's integer instructions.

ONNX Runtime's x86 kernels for uint8 activations x int8 weights (U8S8, the fast format) multiply
with ``vpmaddubsw`` where the CPU has no VNNI: it adds each pair of uint8 x int8 products into a
signed 16-bit lane and saturates there (255 x 127 x 2 = 64,770 > 32,767). With VNNI
(AVX512_VNNI, AVX-VNNI) or AMX-INT8 the products are summed in 32 bits and U8S8 is exact. ONNX
Runtime's quantization docs give the remedy: 7-bit weights (``reduce_range``: |w| <= 64, so a
pair sum stays within 255 x 64 x 2 = 32,640) or another format. Measured on an AVX2-only EPYC
(bundled Fashion-MNIST model, FP32 92.58% top-1): U8S8 89.51%, U8S8 with 7-bit weights 92.41%.

``auto`` therefore gives:

==========================  ===============  ==================================================
CPU class                   format           why
==========================  ===============  ==================================================
x86 with VNNI or AMX-INT8   u8s8             32-bit sums: exact, and the fastest integer path
x86 without VNNI            u8s8_7bit        the same fast kernel, pair sums kept in 16 bits
x86, features unknown       u8s8_7bit        exact whichever x86 CPU runs it
not x86 (Arm)               u8s8             no 16-bit pair sums there
==========================  ===============  ==================================================

The class (not the CPU model) is part of the quantize settings and so of the file's cache key:
a run folder moved to another class gets a new file; between two CPUs of one class it is reused.
A recipe's ``quantize.ort_int8`` names a format instead (for a deployment CPU other than this one).
"""

from __future__ import annotations

from optim.hostcpu import NATIVE, CpuInfo, cpu_info
from optim.settings import Int8Scheme

#: the CPU classes ``cpu_class`` returns
VNNI, NO_VNNI, UNKNOWN, NOT_X86 = "x86-int8-vnni", "x86-no-vnni", "x86-features-unknown", "not-x86"


def cpu_class(cpu: CpuInfo) -> str:
    if not cpu.x86:
        return NOT_X86
    if not cpu.features_known:
        return UNKNOWN
    return VNNI if cpu.features & set(NATIVE["int8-vnni"]) else NO_VNNI


def ort_int8_scheme(cpu: CpuInfo | None = None, choice: str = "auto") -> Int8Scheme:
    """The INT8 format for ONNX Runtime on ``cpu`` (default: this machine's), and why."""
    cpu = cpu or cpu_info()
    klass = cpu_class(cpu)
    if choice != "auto":
        return Int8Scheme(format=choice, cpu_class="asked for",
                          reason=f"{choice} asked for (quantize.ort_int8 / --ort-int8), not chosen for this CPU")
    if klass == VNNI:
        return Int8Scheme(format="u8s8", cpu_class=klass,
                          reason=f"{cpu.int8_label()} sums uint8 x int8 products in 32 bits: "
                                 "8-bit U8S8 is exact and the fastest integer path")
    if klass == NO_VNNI:
        return Int8Scheme(format="u8s8_7bit", cpu_class=klass,
                          reason=f"{cpu.int8_label()}: ONNX Runtime's U8S8 kernel adds product pairs in 16 bits "
                                 "and saturates; 7-bit weights (reduce_range) keep every pair sum exact")
    if klass == UNKNOWN:
        return Int8Scheme(format="u8s8_7bit", cpu_class=klass,
                          reason="CPU features unknown: 7-bit weights are exact on every x86 CPU")
    return Int8Scheme(format="u8s8", cpu_class=klass,
                      reason=f"{cpu.arch}: ONNX Runtime's integer kernels here have no 16-bit pair sums")


def resolve(qs):
    """``QuantizeSettings`` with ``int8_scheme`` set for an onnxruntime-target INT8 entry (else unchanged)."""
    if qs.precision != "int8" or qs.target != "onnxruntime":  # the option does not apply: keep it out of the key
        return qs.model_copy(update={"ort_int8": "auto", "int8_scheme": None})
    return qs.model_copy(update={"int8_scheme": ort_int8_scheme(choice=qs.ort_int8)})
