"""Why the GPU suite cannot run here (None when it can): TensorRT, a CUDA GPU, an sm_90 GPU for h100."""

from __future__ import annotations

from optim.backends.engine_compat import TARGETS, target_problem
from optim.machine import gpu_missing, probe, tensorrt_missing


def _reason() -> str | None:
    m = probe()
    why = tensorrt_missing(m) or gpu_missing(m) or target_problem(TARGETS["h100"], m.gpu, "none")
    return f"GPU suite skipped: {why}" if why else None


REASON = _reason()
