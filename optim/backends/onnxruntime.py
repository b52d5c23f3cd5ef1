"""ONNX Runtime backend on the CPU execution provider (GPU providers: ``optim.backends.ort_gpu``).

Every ONNX Runtime session optim makes is built by ``open_session``: it first builds the session
in a child process (``optim.backends._ort_probe``), so that a crash in ORT's native code becomes a
one-line ``ModelError`` naming the file, and an ORT graph-optimisation crash becomes a retry at a
lower level (extended, then basic) that the console and ``runner.method`` mention.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optim.backends._ort_probe import LEVELS, TEST_CRASH_ENV, Verdict, probe
from optim.backends.base import Runner, TensorSpec
from optim.errors import ModelError, first_line
from optim.onnx_tools import single_input
from optim.process import killed_by

#: ONNX Runtime's input type names -> host dtypes
ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(uint16)": "uint16", "tensor(int16)": "int16",
              "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(bool)": "bool"}
#: graph optimisation levels ``open_session`` falls back through after a crash, highest first
FALLBACK = ("all", "extended", "basic")


def default_threads() -> int:
    return os.cpu_count() or 1


@dataclass
class OrtSession:
    """What ``open_session`` built: the session, the graph optimisation level it was built at and,
    where that is lower than asked, one line saying why (else empty)."""

    session: object
    optimization: str
    note: str = ""


#: probe verdicts of this process, by (model key, level, probe providers, custom ops, test hook)
_verdicts: dict[tuple, Verdict] = {}


def _model_key(model: Path | bytes, label: str) -> tuple:
    """A file: its path, size and mtime (no hashing of large files); bytes: their sha256."""
    if isinstance(model, (bytes, bytearray)):
        return ("sha256", hashlib.sha256(model).hexdigest())
    try:
        st = Path(model).stat()
    except OSError as exc:
        raise ModelError(f"ONNX Runtime cannot load {label}: {exc.strerror or first_line(exc)}") from None
    return ("file", str(Path(model).resolve()), st.st_size, st.st_mtime_ns)


def _probe_down(model: Path | bytes, levels: tuple[str, ...], providers: tuple[str, ...],
                custom_ops: bool, label: str) -> tuple[list[Verdict], bool]:
    """Probe ``levels`` in order until one does not crash; verdicts are remembered per process.
    Returns the verdicts of the levels tried and whether any of them was probed just now."""
    key = (_model_key(model, label), providers, custom_ops, os.environ.get(TEST_CRASH_ENV, ""))
    tried: list[Verdict] = []
    fresh = False
    tmp: tempfile.TemporaryDirectory | None = None
    path: Path | None = None if isinstance(model, (bytes, bytearray)) else Path(model)
    try:
        for level in levels:
            v = _verdicts.get((*key, level))
            if v is None:
                if path is None:  # in-memory model: the child gets a file, never pickled data
                    tmp = tempfile.TemporaryDirectory(prefix="optim-ort-probe-")
                    path = Path(tmp.name) / "model.onnx"
                    path.write_bytes(model)
                v = _verdicts[(*key, level)] = probe(path, level, providers=providers, custom_ops=custom_ops)
                fresh = True
            tried.append(v)
            if not v.crashed:
                break
    finally:
        if tmp is not None:
            tmp.cleanup()
    return tried, fresh


def open_session(model: Path | bytes, *, optimization: str = "all", threads: int | None = None,
                 providers: tuple[str, ...] | list[str] = ("CPUExecutionProvider",), custom_ops: bool = False,
                 label: str | None = None) -> OrtSession:
    """Build an ONNX Runtime session for ``model`` (a file or serialized bytes); the one place optim does.

    The session is first built in a child process at ``optimization`` (once per file and options per
    process). If ORT crashes there in native code, the next lower level is tried (all -> extended ->
    basic), and the session is built in this process at the first level that did not crash, with
    ``note`` (also printed once) saying so. A crash at every level, or the probe killed by another
    signal, is a one-line ``ModelError`` naming the file; ORT's ordinary load errors are
    ``ModelError`` "ONNX Runtime cannot load ...". The probe uses the session's providers without
    TensorRT's (it would build a TensorRT engine twice), and one thread.
    """
    import onnxruntime as ort

    label = label or (str(model) if isinstance(model, (str, Path)) else "in-memory model")
    if optimization not in LEVELS:
        raise ValueError(f"unknown graph optimization level {optimization!r} (one of {', '.join(LEVELS)})")
    if custom_ops:  # here first: a missing library fails with its build hint, not in the probe
        from optim.ops.preprocess_cpu import register

        register()
    providers = tuple(providers)
    probe_providers = tuple(p for p in providers if p != "TensorrtExecutionProvider") or ("CPUExecutionProvider",)
    levels = FALLBACK[FALLBACK.index(optimization):]
    tried, fresh = _probe_down(model, levels, probe_providers, custom_ops, label)
    last = tried[-1]
    crashes = [v for v in tried if v.crashed]
    version = ort.__version__
    if last.crashed:
        raise ModelError(f"ONNX Runtime {version} crashed ({last.signal}) building the session for {label} at "
                         f"every graph optimization level tried ({', '.join(levels)}); a probe process took the "
                         "crash, so this file cannot run in ONNX Runtime here", detail=last.detail)
    if last.signal:  # killed from outside (out of memory, a kill), not a crash of ORT's
        raise ModelError(f"the probe building an ONNX Runtime session for {label} (graph optimization "
                         f"{last.level}) was {killed_by(last.signal)}", detail=last.detail)
    if last.error:
        raise ModelError(f"ONNX Runtime cannot load {label}: {last.error}", detail=last.detail)
    # built in the probe, or the probe itself could not run (then built here, unprobed)
    note = ""
    if crashes:
        note = (f"graph optimization {last.level}: ONNX Runtime crashed ({crashes[0].signal}) "
                f"building the session at {', '.join(v.level for v in crashes)}")
        if fresh:
            from rich.markup import escape

            from optim.console import info

            info(escape(f"{label}: ONNX Runtime {version} crashed ({crashes[0].signal}) building its session at "
                        f"graph optimization {', '.join(v.level for v in crashes)}; using {last.level} instead"))
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or default_threads()
    so.inter_op_num_threads = 1
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[last.level])
    so.log_severity_level = 3
    if custom_ops:
        from onnxruntime_extensions import get_library_path

        so.register_custom_ops_library(get_library_path())
    src = str(model) if isinstance(model, (str, Path)) else bytes(model)
    try:
        session = ort.InferenceSession(src, sess_options=so, providers=list(providers))
    except Exception as exc:  # ORT raises its own exception types
        raise ModelError(f"ONNX Runtime cannot load {label}: {first_line(exc)}") from None
    return OrtSession(session, last.level, note)


class OrtRunner(Runner):
    name = "onnxruntime-cpu"
    providers: list = ["CPUExecutionProvider"]

    def __init__(self, model: Path | bytes, *, threads: int | None = None,
                 optimization: str = "all", label: str | None = None, custom_ops: bool = False) -> None:
        self.model = model
        self.custom_ops = custom_ops  # optim's ops (csrc/ CPU library via onnxruntime-extensions)
        self.threads = threads or default_threads()
        self.optimization = optimization
        #: the level the session was built at (lower than ``optimization`` after an ORT crash)
        self.optimization_used = optimization
        self.session = None
        import onnxruntime as ort

        level = "" if optimization == "all" else f", graph optimization {optimization}"
        self.method = f"onnxruntime {ort.__version__} CPU, {self.threads} threads{level}"
        self.label = label or (str(model) if isinstance(model, (str, Path)) else "in-memory model")

    def activate(self) -> None:
        opened = open_session(self.model, optimization=self.optimization, threads=self.threads,
                              providers=self.providers, custom_ops=self.custom_ops, label=self.label)
        self.session = opened.session
        self.optimization_used = opened.optimization
        if opened.note and opened.note not in self.method:
            self.method += f"; {opened.note}"

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
