"""Choose how a model file runs here."""

from __future__ import annotations

from pathlib import Path

from optim.errors import InputError
from optim.onnx_tools import has_bfloat16, has_float8, load_onnx
from optim.ops.preprocess import has_op
from optim.backends.base import Runner

BACKENDS = ("auto", "cpu", "tensorrt", "ort-cuda", "ort-tensorrt")
ENGINE_SUFFIXES = (".plan", ".engine")


def open_runner(path: Path, *, threads: int | None = None, backend: str = "auto",
                cuda_graph: bool = False) -> Runner:
    """An un-activated runner for an ONNX file or a TensorRT engine (use it as a context manager).

    ``auto``: engines (``.plan``) run in TensorRT, ONNX files in ONNX Runtime on the CPU;
    ``ort-cuda`` / ``ort-tensorrt`` run an ONNX file on ONNX Runtime's GPU providers.
    """
    from optim.backends.bf16 import Bf16EmulationRunner
    from optim.backends.onnxruntime import OrtRunner

    path = Path(path)
    if backend not in BACKENDS:
        raise InputError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    if path.suffix in ENGINE_SUFFIXES:
        if backend not in ("auto", "tensorrt"):
            raise InputError(f"{path.name} is a TensorRT engine; it runs on backend tensorrt, not {backend}")
        from optim.backends.tensorrt import EngineRunner

        return EngineRunner(path, cuda_graph=cuda_graph)
    if backend == "tensorrt":
        raise InputError(f"backend tensorrt runs engines (.plan); build one first: optim build {path} --target h100")
    if backend in ("ort-cuda", "ort-tensorrt"):
        from optim.backends.ort_gpu import OrtGpuRunner

        return OrtGpuRunner(path, backend, threads=threads)
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
