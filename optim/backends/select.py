"""The built-in backends, and how an ONNX file can honestly run on this machine's CPU.

Registered when ``optim.backends`` is imported (order matters: ``auto`` takes the first
backend claiming a suffix):

- ``onnxruntime`` (alias ``cpu``): ONNX Runtime on the CPU, with BF16 emulation, basic graph
  optimisation for FP8 Q/DQ and optim's OptimPreprocess custom op where the model needs them;
- ``tensorrt``: TensorRT engines (``.plan`` / ``.engine``, built by ``optim build``);
- ``ort-cuda`` / ``ort-tensorrt``: ONNX Runtime's GPU providers (``onnxruntime-gpu``);
- ``openvino`` / ``openvino-bf16`` / ``openvino-f16``: OpenVINO's CPU plugin on an ONNX file, at the
  file's own types with f32 inference precision, or with the bf16 / f16 inference precision hint
  (``method`` says what precision really ran and whether this CPU has instructions for it).

Backends import their libraries when they open a runner, not here.
"""

from __future__ import annotations

from pathlib import Path

from optim.backends.base import Runner
from optim.backends.machine import Machine, gpu_missing, ort_conflict, tensorrt_missing
from optim.backends.registry import register_backend
from optim.install import INSTALL
from optim.onnx_tools import has_bfloat16, has_float8, load_onnx
from optim.ops.preprocess import has_op

ENGINE_SUFFIXES = (".plan", ".engine")
ONNX_SUFFIXES = (".onnx",)


def open_onnxruntime_cpu(path: Path, *, threads: int | None = None, cuda_graph: bool = False) -> Runner:
    """ONNX Runtime on the CPU, as this model can honestly run there."""
    from optim.backends.bf16 import Bf16EmulationRunner
    from optim.backends.onnxruntime import OrtRunner

    model = load_onnx(path, check=False)
    if has_op(model):
        runner = OrtRunner(path, threads=threads, custom_ops=True,
                           optimization="basic" if has_float8(model) else "all")
        runner.method += "; OptimPreprocess by the csrc/ CPU library"
        return runner
    if has_bfloat16(model):
        return Bf16EmulationRunner(model, threads=threads, label=str(path))
    if has_float8(model):
        # FP8 Q/DQ with FP32 elsewhere fails ORT's full optimisation (float8 into
        # MaxPool); the basic level loads it. ORT has no FP8 kernels on CPU: the
        # Q/DQ pairs are evaluated in FP32.
        runner = OrtRunner(path, threads=threads, optimization="basic")
        runner.method += "; FP8 Q/DQ evaluated in FP32 (no FP8 kernels on CPU)"
        runner.timing_note = "ORT CPU has no FP8 kernels: FP8 Q/DQ runs as FP32 arithmetic"
        return runner
    return OrtRunner(path, threads=threads)


def open_engine(path: Path, *, threads: int | None = None, cuda_graph: bool = False) -> Runner:
    from optim.backends.tensorrt import EngineRunner

    return EngineRunner(path, cuda_graph=cuda_graph)


def _ort_gpu(backend: str):
    def open_ort_gpu(path: Path, *, threads: int | None = None, cuda_graph: bool = False) -> Runner:
        from optim.backends.ort_gpu import OrtGpuRunner

        return OrtGpuRunner(path, backend, threads=threads)

    return open_ort_gpu


#: OpenVINO backend names -> the inference precision hint each sets (None: f32, the file's own types)
OPENVINO_BACKENDS = {"openvino": None, "openvino-bf16": "bf16", "openvino-f16": "f16"}
#: on the openvino family, FP16/BF16 entries run the FP32 file with OpenVINO's inference precision set
#: (how OpenVINO runs a model in reduced precision on a CPU: the AutoCast file is for TensorRT)
OPENVINO_HINTS = {"bf16": "openvino-bf16", "fp16": "openvino-f16"}


def _openvino(precision: str | None):
    def open_openvino(path: Path, *, threads: int | None = None, cuda_graph: bool = False) -> Runner:
        from optim.backends.openvino import OpenVinoRunner  # imports openvino (BackendUnavailable without it)

        return OpenVinoRunner(path, threads=threads, precision=precision)

    return open_openvino


# -- what each built-in backend needs on a machine (``optim doctor``) ----------------------------
def _onnxruntime_needs(machine: Machine) -> str | None:
    if ort_conflict(machine):
        return "both onnxruntime and onnxruntime-gpu are installed: " + INSTALL["ort-conflict"]
    if "CPUExecutionProvider" not in machine.ort_providers:
        return f"onnxruntime is not installed or has no CPU provider: {INSTALL['base']}"
    return None


def _engine_needs(machine: Machine) -> str | None:
    return tensorrt_missing(machine) or gpu_missing(machine)


def _ort_gpu_needs(provider: str):
    def needs(machine: Machine) -> str | None:
        why = gpu_missing(machine) or (None if provider in machine.ort_providers else
                                       f"ONNX Runtime has no {provider}: {INSTALL['onnxruntime-gpu']}")
        if not why and provider == "TensorrtExecutionProvider":
            why = tensorrt_missing(machine)
        return why

    return needs


_ORT_GPU = {"ort-cuda": "CUDAExecutionProvider", "ort-tensorrt": "TensorrtExecutionProvider"}


def register_builtin_backends() -> None:
    onnx = dict(handles=ONNX_SUFFIXES, files="ONNX models (.onnx)", replace=True)
    register_backend("onnxruntime", open_onnxruntime_cpu, aliases=("cpu",), family=True, package="onnxruntime",
                     needs=_onnxruntime_needs, install=INSTALL["base"], **onnx)
    register_backend("tensorrt", open_engine, handles=ENGINE_SUFFIXES, files="TensorRT engines (.plan, .engine)",
                     hint="build one first: optim build {path} --target h100", package="tensorrt",
                     needs=_engine_needs, install=INSTALL["tensorrt"], replace=True)
    for name, provider in _ORT_GPU.items():  # ONNX Runtime's GPU providers (onnxruntime-gpu)
        register_backend(name, _ort_gpu(name), package="onnxruntime-gpu", needs=_ort_gpu_needs(provider),
                         install=INSTALL["onnxruntime-gpu"], **onnx)
    for name, precision in OPENVINO_BACKENDS.items():  # after onnxruntime: auto keeps ONNX on ORT
        register_backend(name, _openvino(precision), family=name == "openvino", package="openvino",
                         precision_hints=OPENVINO_HINTS if name == "openvino" else None,
                         install=INSTALL["openvino"], **onnx)
