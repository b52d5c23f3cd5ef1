"""The runner interface: activate, infer, deactivate (usable as a context manager)."""

from __future__ import annotations

import abc
from collections.abc import Mapping

import numpy as np

from optim.console import progress


class Runner(abc.ABC):
    """Runs one model on one backend.

    ``method`` is a short human description of how the numbers were obtained,
    e.g. "onnxruntime 1.24.4 CPU, 2 threads".
    """

    name: str = "runner"
    method: str = ""
    #: False where timings would not describe the precision's real speed (emulation).
    timing_meaningful: bool = True
    timing_note: str = ""

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    @abc.abstractmethod
    def activate(self) -> None: ...

    @abc.abstractmethod
    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    #: the backend's loaded model while active (an ORT session, a TensorRT engine session)
    session = None

    def deactivate(self) -> None:
        self.session = None

    def _sess(self):
        if self.session is None:
            raise RuntimeError("runner used outside activate()/deactivate()")
        return self.session

    @property
    @abc.abstractmethod
    def input_names(self) -> list[str]: ...

    @property
    @abc.abstractmethod
    def output_names(self) -> list[str]: ...


def run_batched(runner: Runner, x: np.ndarray, batch_size: int,
                description: str | None = "infer") -> dict[str, np.ndarray]:
    """Run ``x`` through the model's first input in batches; concatenate each output.

    ``description=None``: no progress bar of its own (inside another bar's loop)."""
    name = runner.input_names[0]
    parts: dict[str, list[np.ndarray]] = {}
    n = len(x)
    with progress(disable=description is None) as bar:
        task = bar.add_task(description or "", total=n)
        for i in range(0, n, batch_size):
            out = runner.infer({name: x[i : i + batch_size]})
            for k, v in out.items():
                parts.setdefault(k, []).append(v)
            bar.advance(task, min(batch_size, n - i))
    return {k: np.concatenate(v) for k, v in parts.items()}
