"""Backends that run a model: one small interface, one module per backend.

``open_runner(path)`` picks how an ONNX file can honestly run on this machine and
says so in ``runner.method`` (that string goes into every report row).
"""

from optim.backends.base import Runner, run_batched
from optim.backends.select import open_runner

__all__ = ["Runner", "open_runner", "run_batched"]
