"""Backends by name: each one opens a runner for a model file, and says what it needs.

``open_runner(path, backend=...)`` looks the name up here. The built-in backends
(``optim.backends.select``) register themselves when ``optim.backends`` is imported;
``register_backend`` adds another (a plugin, a test's toy backend), ``unregister_backend``
takes it away again. Everything that lists backends reads this registry:

- ``optim run`` checks and times every entry on each backend registered as a CPU ``family``
  whose ``package`` is installed (``optim.backends.cpu``), and the report gets its rows;
- ``optim doctor`` lists every backend, and whether it can run here (``needs``);
- the check and bench stages record the versions of every backend's ``package`` in their cache keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optim.backends.base import Runner
from optim.errors import InputError
from optim.runfolder.entry import is_size

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
    #: a CPU backend family: ``optim run`` checks and times every entry on it (a recipe's ``backends:``
    #: names it; its results are ``TAG@name``, the first family's plain ``TAG``)
    family: bool = False
    #: the Python distribution it needs: its version goes into check and bench cache keys, and a
    #: family whose package is not installed is not offered (empty: nothing beyond optim's own)
    package: str = ""
    #: entries of these precisions run as the FP32 file on the named backend instead, the precision
    #: set as the runtime's inference hint (OpenVINO's bf16/f16); others run their own file
    precision_hints: Mapping[str, str] = field(default_factory=dict, hash=False)
    #: why it cannot run on a machine (an ``optim.backends.machine.Machine``; ``optim doctor``), None
    #: when it can; default: whether its package is installed there
    needs: Callable[[Any], str | None] | None = None
    #: the command that installs what it needs
    install: str = ""

    def blocker(self, machine: Any) -> str | None:
        """Why this backend cannot run on ``machine``; None when it can."""
        if self.needs is not None:
            return self.needs(machine)
        if self.package and not machine.packages.get(self.package):
            return f"{self.package} is not installed" + (f" ({self.install})" if self.install else "")
        return None


_BACKENDS: dict[str, Backend] = {}
_ALIASES: dict[str, str] = {}


def register_backend(name: str, opener: Opener, *, handles: tuple[str, ...] | str = (".onnx",),
                     files: str = "", hint: str = "", aliases: tuple[str, ...] = (), family: bool = False,
                     package: str = "", precision_hints: Mapping[str, str] | None = None,
                     needs: Callable[[Any], str | None] | None = None, install: str = "",
                     replace: bool = False) -> Backend:
    """Make ``open_runner(path, backend=name)`` call ``opener(path, threads=..., cuda_graph=...)``.

    ``handles``: the file suffixes the backend runs; ``auto`` sends a file to the first
    registered backend claiming its suffix. ``family``, ``package``, ``precision_hints``, ``needs``,
    ``install``: its part in ``optim run`` and ``optim doctor`` (the ``Backend`` fields).
    ``replace``: replace a backend of the same name (else ``ValueError``)."""
    if family and ("@" in name or is_size(name)):
        raise ValueError(f"backend family '{name}': a family name has no '@' and is not a size")
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
    b = Backend(name, opener, handles, files or f"{', '.join(handles)} files", hint, tuple(aliases), family,
                package, dict(precision_hints or {}), needs, install)
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


def backends() -> tuple[Backend, ...]:
    """Every registered backend, in registration order."""
    return tuple(_BACKENDS.values())


def families() -> tuple[str, ...]:
    """The CPU backend families (``Backend.family``), in registration order: the report's order."""
    return tuple(b.name for b in _BACKENDS.values() if b.family)


def backend_packages() -> tuple[str, ...]:
    """The packages of every registered backend, once each: the tools of the check and bench stages."""
    return tuple(dict.fromkeys(b.package for b in _BACKENDS.values() if b.package))


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
