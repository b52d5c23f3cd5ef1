"""Backends by name: each one opens a runner for a model file.

``open_runner(path, backend=...)`` looks the name up here. The built-in backends
(``optim.backends.select``) register themselves when ``optim.backends`` is imported;
``register_backend`` adds another (a plugin, a test's toy backend), ``unregister_backend``
takes it away again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from optim.backends.base import Runner
from optim.errors import InputError

#: ``opener(path, *, threads, cuda_graph) -> Runner`` (an un-activated runner)
Opener = Callable[..., Runner]

AUTO = "auto"
#: where ``auto`` sends a file whose suffix no backend claims (ONNX Runtime)
DEFAULT_BACKEND = "onnxruntime"


@dataclass(frozen=True)
class Backend:
    name: str
    opener: Opener
    #: file suffixes this backend runs (lower case, with the dot); ``auto`` picks the first
    #: registered backend that claims a file's suffix
    handles: tuple[str, ...]
    #: what it runs, for messages, e.g. "TensorRT engines (.plan, .engine)"
    files: str = ""
    #: appended when it is asked to run a file another backend claims ({path} is filled in)
    hint: str = ""
    aliases: tuple[str, ...] = ()


_BACKENDS: dict[str, Backend] = {}
_ALIASES: dict[str, str] = {}


def register_backend(name: str, opener: Opener, *, handles: tuple[str, ...] | str = (".onnx",),
                     files: str = "", hint: str = "",
                     aliases: tuple[str, ...] = (), replace: bool = False) -> Backend:
    """Make ``open_runner(path, backend=name)`` call ``opener(path, threads=..., cuda_graph=...)``.

    ``handles``: the file suffixes the backend runs; ``auto`` sends a file to the first
    registered backend claiming its suffix. ``replace``: replace a backend of the same name (else ``ValueError``)."""
    if isinstance(handles, str):
        handles = (handles,)
    handles = tuple(h.lower() if h.startswith(".") else f".{h.lower()}" for h in handles)
    if name in _BACKENDS and not replace:
        raise ValueError(f"backend '{name}' is already registered (replace=True to replace it)")
    own = {name, *_BACKENDS[name].aliases} if name in _BACKENDS else set()
    for n in (name, *aliases):
        if n == AUTO or (n not in own and (n in _BACKENDS or n in _ALIASES)):
            raise ValueError(f"backend name '{n}' is already taken")
    unregister_backend(name)
    b = Backend(name, opener, handles, files or f"{', '.join(handles)} files", hint, tuple(aliases))
    _BACKENDS[name] = b
    for a in aliases:
        _ALIASES[a] = name
    return b


def unregister_backend(name: str) -> None:
    """Forget a registered backend and its aliases (a name that is not registered: nothing happens)."""
    b = _BACKENDS.pop(name, None)
    if b is not None:
        for a in b.aliases:
            _ALIASES.pop(a, None)


def backend_names() -> tuple[str, ...]:
    """Every name ``open_runner`` takes: ``auto``, then each backend followed by its aliases."""
    return (AUTO, *(n for b in _BACKENDS.values() for n in (b.name, *b.aliases)))


def get_backend(name: str) -> Backend:
    """The backend a name (or alias) stands for; ``InputError`` for an unknown name."""
    b = _BACKENDS.get(_ALIASES.get(name, name))
    if b is None:
        raise InputError(f"unknown backend '{name}'; choose one of {', '.join(backend_names())}")
    return b


def backend_for(path: Path, backend: str = AUTO) -> Backend:
    """The backend that would open ``path``: ``InputError`` if the name is unknown, or names a
    backend that does not run this kind of file (a file another backend claims)."""
    path = Path(path)
    suffix = path.suffix.lower()
    owners = [b for b in _BACKENDS.values() if suffix in b.handles]
    if backend == AUTO:
        return owners[0] if owners else get_backend(DEFAULT_BACKEND)
    b = get_backend(backend)
    if owners and b not in owners:
        names = [o.name for o in owners]
        who = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        msg = f"{path.name} runs on backend {who}, not {backend} ({b.name} runs {b.files})"
        if b.hint:
            msg += "; " + b.hint.format(path=path)
        raise InputError(msg)
    return b


def open_runner(path: Path, *, backend: str = AUTO, threads: int | None = None,
                cuda_graph: bool = False) -> Runner:
    """An un-activated runner for a model file (use it as a context manager).

    ``auto``: the first backend registered for the file's suffix (engines ``.plan``/``.engine``:
    tensorrt; ONNX: onnxruntime on the CPU). ``threads``: CPU threads (ONNX Runtime);
    ``cuda_graph``: engines replay a captured CUDA graph in ``measure``.
    """
    path = Path(path)
    return backend_for(path, backend).opener(path, threads=threads, cuda_graph=cuda_graph)
