"""ONNX Runtime backend on the CPU execution provider (GPU providers: ``optim.backends.ort_gpu``)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from optim.errors import ModelError
from optim.backends.base import Runner

LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def default_threads() -> int:
    return os.cpu_count() or 1


class OrtRunner(Runner):
    name = "onnxruntime-cpu"
    providers: list = ["CPUExecutionProvider"]

    def __init__(self, model: Path | bytes, *, threads: int | None = None,
                 optimization: str = "all", label: str | None = None, custom_ops: bool = False) -> None:
        self.model = model
        self.custom_ops = custom_ops  # optim's ops (csrc/ CPU library via onnxruntime-extensions)
        self.threads = threads or default_threads()
        self.optimization = optimization
        self.session = None
        import onnxruntime as ort

        level = "" if optimization == "all" else f", graph optimization {optimization}"
        self.method = f"onnxruntime {ort.__version__} CPU, {self.threads} threads{level}"
        self.label = label or (str(model) if isinstance(model, (str, Path)) else "in-memory model")

    def activate(self) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[self.optimization])
        so.log_severity_level = 3
        if self.custom_ops:
            from onnxruntime_extensions import get_library_path

            from optim.ops.preprocess_cpu import register

            register()
            so.register_custom_ops_library(get_library_path())
        src = str(self.model) if isinstance(self.model, Path) else self.model
        try:
            self.session = ort.InferenceSession(src, sess_options=so, providers=self.providers)
        except Exception as exc:  # ORT raises its own exception types
            first = str(exc).strip().splitlines()[0][:300]
            raise ModelError(f"ONNX Runtime cannot load {self.label}: {first}") from None

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self._sess().get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self._sess().get_outputs()]

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        sess = self._sess()
        outs = sess.run(None, dict(feeds))
        return {o.name: np.asarray(v) for o, v in zip(sess.get_outputs(), outs)}

    def measure(self, batch: int, warmup: int, iterations: int) -> list[float]:
        """Seconds per ``infer`` of one random batch (host arrays in and out)."""
        inp = self._sess().get_inputs()[0]
        shape = inp.shape[1:]
        if not all(isinstance(d, int) and d > 0 for d in shape):
            raise ModelError(f"{self.label}: input '{inp.name}' has non-fixed sizes {list(shape)} besides batch")
        x = {inp.name: np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)}
        for _ in range(warmup):
            self.infer(x)
        times = []
        for _ in range(iterations):
            t0 = time.perf_counter()
            self.infer(x)
            times.append(time.perf_counter() - t0)
        return times
