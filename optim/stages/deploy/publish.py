"""Publishing an output folder whole: built in a hidden folder beside its place, then swapped in.

``building(out)`` gives ``.OUT.partial-PID`` to write into; when the block ends without an error
the finished folder replaces ``out`` (a previous ``out`` is moved aside to ``.OUT.old-PID`` first,
then removed), so ``out`` is always either the previous folder or the new one. Leftovers of
writers that died are removed before the next build.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from optim.artifacts import check_output_dir, write_failed
from optim.errors import OutputPathError
from optim.process import owner_gone


def check_out(run_dir: Path, out: Path, force: bool) -> bool:
    """Refuse an output that would replace the run or its results; True when ``out`` is inside the run."""
    check_output_dir(out, "-o: output folder")
    r_run, r_out = run_dir.resolve(), out.resolve()
    if r_out == r_run or r_out in r_run.parents:
        raise OutputPathError(f"-o {out} would replace the run folder {run_dir}; give a new folder, beside it or inside it")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputPathError(f"-o {out} exists and is not empty; pass --force to replace it")
    return r_run in r_out.parents


def remove_dead_partials(out: Path) -> None:
    """Half-built folders of writers that died (``.OUT.partial-PID``, ``.OUT.old-PID``)."""
    for p in out.parent.glob(f".{out.name}.*-*"):
        kind, _, pid = p.name[len(out.name) + 2:].rpartition("-")
        if kind in ("partial", "old") and owner_gone(pid):
            shutil.rmtree(p, ignore_errors=True)


def swap(tmp: Path, out: Path) -> None:
    """Put the finished ``tmp`` at ``out``; an existing ``out`` is moved aside first, then removed."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    try:
        if out.exists():
            os.rename(out, old)
        try:
            os.rename(tmp, out)
        except OSError:
            if old.exists():
                os.rename(old, out)
            raise
    except OSError as exc:
        raise write_failed(out, exc) from exc
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def building(out: Path) -> Iterator[Path]:
    """The hidden folder to build ``out`` in; swapped into place when the block ends without an error."""
    remove_dead_partials(out)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
        swap(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
