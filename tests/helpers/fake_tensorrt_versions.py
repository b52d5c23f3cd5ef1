"""The recording fake of ``tensorrt`` (tests/helpers/fake_tensorrt.py), made to mimic one TensorRT version.

``strict(fake)`` wraps a ``FakeTensorRT`` so that every attribute optim takes from the module,
and from the objects it returns (classes from ``tests.helpers.tensorrt_bindings.RETURNS``), must
exist in the real Python API of the version the fake claims (``fake_tensorrt(11)`` claims
11.1.0), read from that version's binding sources; setting an attribute needs a settable
property there. Anything else raises AttributeError, as the real module would. The
recording fake underneath still records every call.

Where the binding sources are absent (``tests.helpers.tensorrt_bindings.missing_reason``), the
wrapper knows only what TensorRT 11 removed that optim could ask for (``REMOVED``) and lets
everything else through; tests/test_tensorrt_api_check.py checks ``REMOVED`` against the
sources where they are present.
"""

from __future__ import annotations

from typing import Any, Callable

from tests.helpers.fake_tensorrt import FakeTensorRT
from tests.helpers.tensorrt_bindings import RETURNS, VERSIONS, Api, bindings

#: the fake's full version string per major (10 keeps the one the older tests use)
FULL = {10: "10.16.1.11", 11: "11.1.0.106"}
#: what each major lacks that an older one had and optim's plans could name (no sources: the fallback)
REMOVED = {11: {"BuilderFlag": {"FP16", "BF16", "INT8", "FP8"}}}


def fake_tensorrt(major: int = 10, **kw: Any) -> FakeTensorRT:
    """A recording fake that says it is TensorRT ``major`` (``VERSIONS[major]``)."""
    fake = FakeTensorRT(**kw)
    fake.__version__ = FULL[major]
    return fake


class _Checker:
    def __init__(self, major: int, api: Api | None = None) -> None:
        self.major, self.api = major, api or bindings(major)
        self.version = api.version if api else VERSIONS[major]
        self.classes: dict[str, type] = {}

    def kind(self, cls: str, name: str) -> str | None:
        """The name's kind in the API ("unknown" without sources); raises AttributeError when absent."""
        if self.api is not None:
            kind = self.api.kind(cls, name)
        else:
            kind = None if name in REMOVED.get(self.major, {}).get(cls, ()) else "unknown"
        if kind is None:
            raise AttributeError(f"TensorRT {self.version} has no {cls or 'tensorrt'}.{name} "
                                 "(the recording fake refuses what the real module lacks)")
        return kind


def _unwrap(value: Any) -> Any:
    return object.__getattribute__(value, "_target") if isinstance(value, _Strict) else value


class _Strict:
    """One TensorRT object (or the module, cls "") of the version ``checker`` mimics."""

    def __init__(self, target: Any, cls: str, checker: _Checker) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_cls", cls)
        object.__setattr__(self, "_checker", checker)

    def __getattr__(self, name: str) -> Any:
        target, cls, checker = (object.__getattribute__(self, k) for k in ("_target", "_cls", "_checker"))
        if cls == "" and name == "__version__":  # the Python package sets it, not the bindings
            return target.__version__
        if name.startswith("__"):
            raise AttributeError(name)
        kind = checker.kind(cls, name)
        value = getattr(target, name)
        if cls == "" and name == "ILogger":  # subclassed by optim: a class, checked on class attributes
            if name not in checker.classes:
                checker.classes[name] = _strict_class(value, name, checker)
            return checker.classes[name]
        if cls == "" and (kind == "enum" or (kind == "unknown" and not callable(value))):
            return _Strict(value, name, checker)
        if callable(value):
            return _wrap_call(value, RETURNS.get((cls, name)), checker)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        cls, checker = object.__getattribute__(self, "_cls"), object.__getattribute__(self, "_checker")
        kind = checker.kind(cls, name)
        if kind not in ("property", "unknown"):
            raise AttributeError(f"TensorRT {checker.version}: {cls}.{name} is a {kind}, not a settable property")
        setattr(object.__getattribute__(self, "_target"), name, _unwrap(value))


def _wrap_call(fn: Callable, returns: str | None, checker: _Checker) -> Callable:
    def call(*args: Any) -> Any:
        out = fn(*[_unwrap(a) for a in args])
        return _Strict(out, returns, checker) if returns and out is not None else out
    return call


def _strict_class(base: type, cls: str, checker: _Checker) -> type:
    """``base`` (a class optim subclasses, e.g. ILogger) whose class attributes are checked too."""

    class Meta(type):
        def __getattribute__(k, name: str) -> Any:
            if name.startswith("_") and name != "__init__":
                return type.__getattribute__(k, name)
            subclasses = [c for c in type.__getattribute__(k, "__mro__")
                          if c is not strict_cls and c is not base and issubclass(c, base)]
            if not any(name in type.__getattribute__(c, "__dict__") for c in subclasses):  # optim's own: allowed
                checker.kind(cls, name)
            return type.__getattribute__(k, name)

    strict_cls = Meta(cls, (base,), {})
    return strict_cls


def strict(fake: FakeTensorRT, api: Api | None = None) -> Any:
    """``fake`` as the ``tensorrt`` module of the version it claims, refusing what that version lacks
    (``api``: check against these bindings instead of the version's own)."""
    major = int(str(fake.__version__).split(".")[0])
    return _Strict(fake, "", _Checker(major, api))


def api_of(fake_module: Any) -> Api | None:
    """The bindings a strict fake checks against (None: the sources are absent, fallback rules)."""
    return object.__getattribute__(fake_module, "_checker").api
