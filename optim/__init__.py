"""optim: export, quantize, check, benchmark and report vision models for deployment.

The Python API (``optim/api/``): ``optim.run``, ``optim.export``, ``optim.quantize``, ``optim.check``,
``optim.bench``, ``optim.build`` and ``optim.RunResult``, loaded on first use, so that ``import optim``
imports no torch, ONNX Runtime or stage module.
"""

from optim.version import __version__

_API = ("run", "export", "quantize", "check", "bench", "build", "RunResult")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from optim import api

        value = getattr(api, name)
        globals()[name] = value  # found directly from now on
        return value
    raise AttributeError(f"module 'optim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
