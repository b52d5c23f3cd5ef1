"""A backend that is not one (``ToyRunner``, .toy files), for the registry and bench tests."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import numpy as np

from optim.backends import Runner, TensorSpec, register_backend, unregister_backend


class ToyRunner(Runner):
    """A backend that is not one: output = row sums; ``measure`` reports 1 ms per sample."""

    name = "toy"
    timing_method = "toy clock: 1 ms per sample, no running at all"
    spec = TensorSpec("x", (4,), np.dtype(np.float32))
    opened: ClassVar[list[dict]] = []  # the opener's arguments, newest last
    measured: ClassVar[list[tuple[int, int, int]]] = []

    def __init__(self, path: Path, *, threads: int | None = None, cuda_graph: bool = False) -> None:
        self.path = path
        self.method = f"toy backend on {path.name}"
        ToyRunner.opened.append({"path": path, "threads": threads, "cuda_graph": cuda_graph})

    def activate(self) -> None:
        self.session = "active"

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._sess()
        x = feeds[self.spec.name]
        return {"y": x.astype(np.float32).reshape(len(x), -1).sum(axis=1, keepdims=True)}

    @property
    def input_names(self) -> list[str]:
        return [self.spec.name]

    @property
    def output_names(self) -> list[str]:
        return ["y"]

    def input_spec(self) -> TensorSpec:
        return self.spec

    def measure(self, batch, warmup, iterations, *, on_run=None) -> list[float]:
        self._sess()
        ToyRunner.measured.append((batch, warmup, iterations))
        for _ in range(warmup + iterations):
            if on_run:
                on_run()
        return [batch * 1e-3] * iterations


class FramesRunner(ToyRunner):
    """Times with the interface's default ``measure``; takes uint8 frames, records what it was fed."""

    spec = TensorSpec("frames", (5, 6, 3), np.dtype(np.uint8))
    measure = Runner.measure
    timing_method = Runner.timing_method

    def infer(self, feeds):
        self.fed = [*getattr(self, "fed", []), feeds[self.spec.name]]
        return super().infer(feeds)


@contextmanager
def toy_backend_registered() -> Iterator[str]:
    """Backend "toy" (runs .toy files) while inside; the body of the ``toy_backend`` fixture."""
    ToyRunner.opened.clear()
    ToyRunner.measured.clear()
    register_backend("toy", ToyRunner, handles=(".toy",), files="toy models (.toy)")
    try:
        yield "toy"
    finally:
        unregister_backend("toy")
