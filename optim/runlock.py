"""One writer per run folder: an advisory lock with the holder's PID, command and start time.

``optim run`` and ``optim report`` take the lock of the run folder before they read its
manifest and give it back when they finish. A second writer waits (saying for whom), or
with ``--no-wait`` stops at once with one line naming the holder. The lock is an
``flock`` on ``RUN/.optim.lock``: the kernel drops it when the holder dies, however it
dies, so a killed run never leaves a lock that blocks the next one. The file's contents
say who holds it; a finished run empties it, so finding it non-empty on taking the lock
means the previous writer did not finish (that is said once, then the cache does the
rest: complete files are reused, the others redone).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import sys
import time
from pathlib import Path

from optim.console import info
from optim.errors import OutputPathError, RunFolderBusy
from optim.process import owner_gone

LOCK_NAME = ".optim.lock"


def _describe(holder: dict) -> str:
    if not holder:
        return "another optim process"
    return (f"optim pid {holder.get('pid', '?')} on {holder.get('host', '?')} "
            f"({holder.get('command', '?')}), started {holder.get('started', '?')}")


def _remove_orphan_partials(root: Path) -> None:
    """Half-written files (``.NAME.partial-PID``) of writers that died: never reused, so removed."""
    for p in root.rglob(".*.partial-*"):
        if p.is_file() and owner_gone(p.name.rsplit("-", 1)[-1]):
            p.unlink(missing_ok=True)


class RunLock:
    """``with RunLock(folder, wait=True) as lock:``; ``lock.note`` says if the last writer died."""

    def __init__(self, root: Path, *, wait: bool = True) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self.wait = wait
        self.note = ""
        self._fd: int | None = None

    def _read(self) -> dict:
        try:
            os.lseek(self._fd, 0, os.SEEK_SET)
            text = os.read(self._fd, 4096).decode(errors="replace").strip()
            return json.loads(text) if text else {}
        except (OSError, ValueError):
            return {"pid": "?"}  # being written this instant, or not ours: someone holds it

    def _open(self) -> int:
        """The lock file, never through a link (a planted link would have optim rewrite its target)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP or os.path.islink(self.path):
                raise OutputPathError(f"{self.path} is a symbolic link; optim follows no links in a run folder: "
                                      "delete the link and rerun") from None
            if exc.errno in (errno.ENOTDIR, errno.EEXIST, errno.EACCES, errno.EPERM, errno.EISDIR):
                raise OutputPathError(f"cannot use {self.root} as a run folder: {exc.strerror or exc}") from None
            raise self._write_failed(exc) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OutputPathError(f"{self.path} is not a regular file (a device or pipe): delete it and rerun")
        return fd

    def _write_failed(self, exc: OSError):
        from optim.artifacts import write_failed

        err = write_failed(self.path, exc)
        return type(err)(f"taking the lock of run folder {self.root}: {err}")

    def acquire(self) -> RunLock:
        self._fd = self._open()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(self._read())
            if not self.wait:
                self._close()
                raise RunFolderBusy(f"{self.root} is in use by {holder}; wait for it to finish, "
                                    "or drop --no-wait to wait for it") from None
            info(f"waiting for {self.root}: in use by {holder}")
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        last = self._read()
        if last:
            self.note = (f"the previous run in {self.root} ({_describe(last)}) did not finish; "
                         "its complete files are reused, the rest is redone")
        _remove_orphan_partials(self.root)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": " ".join(["optim", *sys.argv[1:]])[:200]}
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, json.dumps(me).encode(), 0)
        except OSError as exc:  # a full or read-only disk: say which, and drop the lock
            self._close()
            raise self._write_failed(exc) from None
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # finished: nobody holds it
        except OSError:
            pass
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
