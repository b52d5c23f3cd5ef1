"""This optim process: what it is doing now, its signals, and its private temporary folder.

* ``doing("quantize int8-tensorrt")`` names the work in progress; an interrupt or a
  failed write in a tool's temporary files is reported as happening there.
* ``signals()`` turns SIGINT and SIGTERM into ``Interrupted`` (a ``BaseException`` that
  typer does not swallow), so every ``finally`` runs: temporary files are removed, the
  quantize worker is killed and its job folder deleted, the run folder's lock released.
* ``private_tmp()`` gives the process its own ``TMPDIR/optim-proc-PID-XXXX`` (for itself
  and the tools and workers it starts), removed when it ends; ``sweep`` removes those of
  optim processes that died without cleaning up (``kill -9``), and ``owner_gone`` tells any
  leftover that names its writer's PID whether that writer is gone.
* ``run_child`` runs a child that reports on its last line of output (the native-crash probes)
  and says how it ended; ``signal_name`` and ``killed_by`` say how a child died of a signal (a
  native crash, out of memory); ``CRASH_SIGNALS`` are those of a crash.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

#: a temporary folder that names the optim process owning it: optim-<what>-PID-<random>
_OWNED = re.compile(r"^optim-[a-z-]+?-(\d+)-")
PROC_PREFIX = "optim-proc-"

_activity: list[str] = []
#: the innermost activity that ended with an exception (what a failure or an interrupt happened in)
_failed: list[str] = []


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


@contextmanager
def doing(label: str) -> Iterator[None]:
    """Name the work in progress (stage and output, e.g. "quantize int8-tensorrt")."""
    if not _activity:
        _failed.clear()  # a new piece of work: an earlier failure is history
    _activity.append(label)
    try:
        yield
    except BaseException:
        if not _failed:
            _failed.append(label)
        raise
    finally:
        _activity.pop()


def forget() -> None:
    """A new command starts: what failed before is history."""
    _failed.clear()


def current() -> str:
    """What was being done when the last failure happened, else what is being done now ("" if nothing)."""
    return _failed[0] if _failed else (_activity[-1] if _activity else "")


_owner: list[int] = []  # the process that installed the handlers (a forked child must not raise)
_raised: list[int] = []


def _raise(signum: int, frame) -> None:
    if not _owner or os.getpid() != _owner[-1]:  # a child forked by a library: die as it would have
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if _raised:  # already unwinding: let the cleanup finish
        return
    _raised.append(signum)
    raise Interrupted(signum)


@contextmanager
def signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``Interrupted`` inside (once); the old handlers come back after."""
    _owner.append(os.getpid())
    _raised.clear()
    old = {s: signal.signal(s, _raise) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _owner.pop()


#: signals that mean a child process crashed in native code (not killed from outside, not interrupted)
CRASH_SIGNALS = frozenset({"SIGSEGV", "SIGABRT", "SIGBUS", "SIGILL", "SIGFPE", "SIGTRAP", "SIGSYS"})


def signal_name(number: int) -> str:
    """A signal's name (``SIGSEGV`` for 11), or ``signal N`` for a number without one."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def killed_by(sig: str) -> str:
    """How a child process died of the signal named ``sig``, with the likely cause:
    ``killed by SIGKILL (out of memory?)``, ``killed by SIGSEGV (a crash in native code)``."""
    why = "out of memory?" if sig == "SIGKILL" else "a crash in native code" if sig in CRASH_SIGNALS else ""
    return f"killed by {sig}" + (f" ({why})" if why else "")


@dataclass(frozen=True)
class ChildEnd:
    """How a child process ended (``run_child``). ``started`` False: it could not start (``detail`` says
    why). ``signal``: the signal it died of, by name ("" when it exited with ``code``). ``said``: its last
    line of output as a JSON object ({} when that is none). ``detail``: the tail of its stderr."""

    started: bool
    code: int = 0
    signal: str = ""
    said: dict = field(default_factory=dict)
    detail: str = ""


def run_child(cmd: list[str]) -> ChildEnd:
    """Run ``cmd`` to its end with no input and its output captured; how it ended. Raises
    ``KeyboardInterrupt`` when the child died of SIGINT (Ctrl-C reaches both)."""
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace")
    except OSError as exc:
        return ChildEnd(False, detail=str(exc))
    detail = proc.stderr[-4000:]
    if proc.returncode < 0:
        sig = signal_name(-proc.returncode)
        if sig == "SIGINT":
            raise KeyboardInterrupt
        return ChildEnd(True, proc.returncode, sig, detail=detail)
    try:
        said = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        said = {}
    return ChildEnd(True, proc.returncode, said=said if isinstance(said, dict) else {}, detail=detail)


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (on this host)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_gone(pid: str | int) -> bool:
    """Whether the writer whose PID a leftover names (a number, or digits cut from a file name) is
    gone: it is not this process and no process has that PID. Anything but digits: not known gone."""
    text = str(pid)
    return text.isdigit() and int(text) != os.getpid() and not pid_alive(int(text))


def sweep(base: Path | None = None) -> list[Path]:
    """Remove ``optim-*-PID-*`` temporary folders of optim processes that are gone; returns them."""
    gone = []
    base = Path(base or tempfile.gettempdir())
    try:
        entries = list(base.iterdir())
    except OSError:
        return gone
    for d in entries:
        owned = _OWNED.match(d.name)
        if not owned or not owner_gone(owned.group(1)):
            continue
        if d.is_dir() and not d.is_symlink():
            shutil.rmtree(d, ignore_errors=True)
            gone.append(d)
    return gone


#: the temporary folder optim was given (TMPDIR), before ``private_tmp`` moved it
base_tmp: list[str] = []


def tmp_base() -> str:
    return base_tmp[0] if base_tmp else tempfile.gettempdir()


@contextmanager
def private_tmp() -> Iterator[Path | None]:
    """A temporary folder of this process's own, for it and everything it starts; removed at the end.

    Where none can be made (TMPDIR missing or full), the usual one is used as it is."""
    base = tempfile.gettempdir()
    sweep(Path(base))
    try:
        mine = Path(tempfile.mkdtemp(prefix=f"{PROC_PREFIX}{os.getpid()}-", dir=base))
    except OSError:
        yield None
        return
    old_env, old_dir = os.environ.get("TMPDIR"), tempfile.tempdir
    base_tmp.append(base)
    os.environ["TMPDIR"], tempfile.tempdir = str(mine), str(mine)
    try:
        yield mine
    finally:
        tempfile.tempdir = old_dir
        if old_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old_env
        base_tmp.remove(base)
        shutil.rmtree(mine, ignore_errors=True)
