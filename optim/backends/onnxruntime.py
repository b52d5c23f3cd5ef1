"""ONNX Runtime backend on the CPU execution provider (GPU providers: ``optim.backends.ort_gpu``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from optim.errors import ModelError, first_line
from optim.backends.base import Runner, TensorSpec
from optim.onnx_tools import single_input

#: ONNX Runtime's input type names -> host dtypes
ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(uint16)": "uint16", "tensor(int16)": "int16",
              "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(bool)": "bool"}
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
            raise ModelError(f"ONNX Runtime cannot load {self.label}: {first_line(exc)}") from None

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

    def input_spec(self) -> TensorSpec:
        ins = self._sess().get_inputs()
        _, _, shape = single_input(ins, self.label)
        inp = ins[0]
        if inp.type not in ORT_DTYPES:
            raise ModelError(f"{self.label}: input '{inp.name}' has type {inp.type}, which has no host equivalent")
        return TensorSpec(inp.name, shape, np.dtype(ORT_DTYPES[inp.type]))
