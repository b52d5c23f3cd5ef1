"""Choose how a model file runs here."""

from __future__ import annotations

from pathlib import Path

from optim.onnx_tools import has_bfloat16, has_float8, load_onnx
from optim.runners.base import Runner


def open_runner(path: Path, *, threads: int | None = None) -> Runner:
    """An un-activated runner for an ONNX file (use it as a context manager)."""
    from optim.runners.bf16 import Bf16EmulationRunner
    from optim.runners.onnxrt import OrtRunner

    path = Path(path)
    model = load_onnx(path, check=False)
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
