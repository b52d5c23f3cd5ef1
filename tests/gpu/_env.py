"""Why (parts of) the GPU suite cannot run here: None where they can, else "GPU suite skipped: ...".

- ``REASON`` (TensorRT engines): a TensorRT optim supports (10 or 11), a CUDA GPU, and an
  sm_90 GPU for the h100 target;
- ``EXPORT_REASON``: ``REASON``, or what exporting a model needs (torch, onnx, onnxslim, the
  ONNX Runtime CPU provider the export is verified in);
- ``RUN_REASON`` (``optim run`` of the bundled recipe, tests/gpu/test_engines.py):
  ``EXPORT_REASON``, or nvidia-modelopt (quantize);
- ``KERNEL_REASON`` (the CUDA kernel against the CPU library): a CUDA GPU only, no TensorRT.

``reasons`` is plain code over a ``Machine`` record, so tests/test_gpu_suite_skips.py checks
it on machines built by hand (a GPU machine without TensorRT or modelopt among them).
"""

from __future__ import annotations

from optim.backends.engine_compat import TARGETS, build_blocker
from optim.install import INSTALL
from optim.backends.machine import Machine, gpu_missing, probe

#: the engines of the bundled default recipe that the session fixture gpu_run (tests/gpu/conftest.py) builds
ENGINE_TAGS = ["fp32", "fp16", "bf16", "int8-tensorrt", "fp8-tensorrt"]
EXPORT_PACKAGES = ("torch", "onnx", "onnxslim")
RUN_PACKAGES = ("nvidia-modelopt",)


def reasons(m: Machine) -> dict[str, str | None]:
    def missing(names: tuple[str, ...]) -> str | None:
        gone = [n for n in names if n not in m.packages]
        return f"{', '.join(gone)} not installed ({INSTALL['base']})" if gone else None

    engines = build_blocker(m, TARGETS["h100"], "none")
    ort = None if "CPUExecutionProvider" in m.ort_providers else \
        f"ONNX Runtime has no CPUExecutionProvider (exports are verified in it; {INSTALL['base']})"
    export = engines or missing(EXPORT_PACKAGES) or ort
    run = export or missing(RUN_PACKAGES)
    why = {"engines": engines, "export": export, "run": run, "kernels": gpu_missing(m)}
    return {k: f"GPU suite skipped: {v}" if v else None for k, v in why.items()}


_REASONS = reasons(probe())
REASON, EXPORT_REASON, RUN_REASON, KERNEL_REASON = (_REASONS[k] for k in ("engines", "export", "run", "kernels"))
