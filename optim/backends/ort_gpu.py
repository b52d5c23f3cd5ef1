"""ONNX Runtime on the GPU: the CUDA and TensorRT execution providers (``onnxruntime-gpu`` only).

ONNX Runtime silently falls back to the CPU when a GPU provider cannot load its
libraries; this runner checks which provider the session really got and refuses
the fallback, so a number labelled CUDA was measured on CUDA.
"""

from __future__ import annotations

from pathlib import Path

from optim.errors import BackendUnavailable
from optim.install import INSTALL
from optim.backends.machine import onnxruntime_providers
from optim.backends.onnxruntime import OrtRunner

PROVIDERS = {
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


class OrtGpuRunner(OrtRunner):
    def __init__(self, model: Path, backend: str, *, threads: int | None = None) -> None:
        super().__init__(model, threads=threads)
        self.name = backend
        self.providers = PROVIDERS[backend]
        available = onnxruntime_providers()
        if self.providers[0] not in available:
            raise BackendUnavailable(f"ONNX Runtime here has no {self.providers[0]} (it has {', '.join(available)}); "
                                     f"install onnxruntime-gpu: {INSTALL['onnxruntime-gpu']}")
        self.method = self.method.replace(" CPU,", f" {self.providers[0]} (GPU),") + \
            "; timings include host<->device copies"

    def activate(self) -> None:
        super().activate()
        got = self.session.get_providers()[0]
        if got != self.providers[0]:
            self.session = None
            raise BackendUnavailable(f"ONNX Runtime fell back to {got}: {self.providers[0]} did not load here "
                                     "(missing CUDA/cuDNN/TensorRT libraries?); run optim doctor")
