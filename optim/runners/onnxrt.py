"""ONNX Runtime backend (CPU execution provider; GPU providers arrive with the GPU work)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from optim.errors import ModelError
from optim.runners.base import Runner

LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def default_threads() -> int:
    return os.cpu_count() or 1


class OrtRunner(Runner):
    name = "onnxruntime-cpu"

    def __init__(self, model: Path | bytes, *, threads: int | None = None,
                 optimization: str = "all", label: str | None = None) -> None:
        self.model = model
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
        src = str(self.model) if isinstance(self.model, Path) else self.model
        try:
            self.session = ort.InferenceSession(src, sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types
            first = str(exc).strip().splitlines()[0][:300]
            raise ModelError(f"ONNX Runtime cannot load {self.label}: {first}") from None

    def deactivate(self) -> None:
        self.session = None

    def _sess(self):
        if self.session is None:
            raise RuntimeError("runner used outside activate()/deactivate()")
        return self.session

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
