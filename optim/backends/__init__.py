"""Backends that run a model: one small interface, one module per backend, a registry by name.

``open_runner(path, backend="auto")`` picks how a model file can honestly run on this
machine and says so in ``runner.method``; ``runner.measure(batch, warmup, iterations)``
times it and ``runner.timing_method`` says how (both go into every bench row).
Backends: ``backends()``; add one with ``register_backend`` (a CPU ``family`` joins ``optim run``).
"""

from optim.backends.base import WALL_TIME, Runner, TensorSpec, run_batched
from optim.backends.registry import (Backend, backend_for, backend_names, backend_packages, backends, families,
                                     get_backend, open_runner, register_backend, unregister_backend)
from optim.backends.select import ENGINE_SUFFIXES, register_builtin_backends

register_builtin_backends()

__all__ = ["ENGINE_SUFFIXES", "WALL_TIME", "Backend", "Runner", "TensorSpec", "backend_for", "backend_names",
           "backend_packages", "backends", "families", "get_backend", "open_runner", "register_backend", "run_batched",
           "unregister_backend"]
