"""The runner interface: activate, infer, measure, deactivate (usable as a context manager)."""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from optim.console import progress

#: ``Runner.timing_method`` unless a backend times differently
WALL_TIME = "wall time around each run, host arrays in and out"


@dataclass(frozen=True)
class TensorSpec:
    """A model input as a runner takes it from the host: name, one sample's shape (no batch axis), dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    def random(self, batch: int, seed: int = 0) -> np.ndarray:
        """A random batch: uint8 (frames, fused preprocessing) 0..255, other integers 0..min(255, max),
        floats standard normal (drawn in float32)."""
        rng = np.random.default_rng(seed)
        shape = (batch, *self.shape)
        dt = np.dtype(self.dtype)
        if dt == np.bool_:
            return rng.integers(0, 2, shape).astype(np.bool_)
        if np.issubdtype(dt, np.integer):
            return rng.integers(0, min(256, int(np.iinfo(dt).max) + 1), shape, dtype=dt)
        return rng.standard_normal(shape).astype(np.float32).astype(dt, copy=False)


class Runner(abc.ABC):
    """Runs one model on one backend.

    ``method`` is a short human description of how the model runs, e.g.
    "onnxruntime 1.24.4 CPU, 2 threads"; ``timing_method`` says how ``measure`` times it.
    Both go into every bench row.
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

    @abc.abstractmethod
    def input_spec(self) -> TensorSpec:
        """The model's one input (while active): name, per-sample shape, host dtype.

        Raises ``ModelError`` for models ``measure`` cannot feed (several inputs, sizes
        other than the batch that are not fixed)."""

    def random_feeds(self, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
        spec = self.input_spec()
        return {spec.name: spec.random(batch, seed)}

    @property
    def timing_method(self) -> str:
        """How ``measure`` times a run (goes into the bench row after ``method``)."""
        return WALL_TIME

    def measure(self, batch: int, warmup: int, iterations: int, *,
                on_run: Callable[[], None] | None = None) -> list[float]:
        """Seconds per run of one random batch of ``batch`` samples: ``warmup`` untimed runs, then
        ``iterations`` timed ones. ``on_run`` (a progress bar) is called after every run, warmup included.

        Default: wall time around ``infer`` with host arrays in and out."""
        feeds = self.random_feeds(batch)
        tick = on_run or (lambda: None)
        for _ in range(warmup):
            self.infer(feeds)
            tick()
        times = []
        for _ in range(iterations):
            t0 = time.perf_counter()
            self.infer(feeds)
            times.append(time.perf_counter() - t0)
            tick()
        return times


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
