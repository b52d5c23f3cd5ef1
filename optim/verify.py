"""A run folder is untrusted on read: every file optim reads back is checked against the manifest.

* ``optim.artifacts.confined(root, rel)``: a manifest path is relative, has no ``..``, and (links
  resolved) stays inside the run folder; anything else is refused, whatever its hash
  (``record_problem`` adds the hash; the executor checks the same before it reuses a file).
* ``Trust``: the manifest of a run folder and lazy checks of the files named in it;
  ``optim report`` reads results through it (``read_result``), so a file that does not
  match the manifest is never shown as if it did.
* ``problems(root)``: what ``optim verify RUN`` prints, one line per problem (every hash,
  confinement, stray files); CI runs it after restoring a cached run folder.
"""

from __future__ import annotations

import contextvars
import json
import os
from pathlib import Path
from typing import Any

from optim.artifacts import MANIFEST, confined, load_manifest, record_problem
from optim.errors import InputError
from optim.runlock import LOCK_NAME

#: files of a run folder that the manifest does not (and cannot) list
UNRECORDED = frozenset({MANIFEST, LOCK_NAME})


class Trust:
    """What of a run folder is verified: files are hashed once, when first asked about."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.manifest = load_manifest(self.root)
        self.by_path = {} if self.manifest is None else {
            r.path: r for r in self.manifest.artifacts.values() if confined(self.root, r.path) is None}
        self._seen: dict[str, str | None] = {}
        #: files read (or asked about) that did not verify: path relative to the run folder -> why
        self.untrusted: dict[str, str] = {}

    @property
    def checked(self) -> bool:
        """Whether there is a manifest to check against (a hand-made folder has none)."""
        return self.manifest is not None

    def rel(self, path: Path) -> str:
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def problem(self, path: Path) -> str | None:
        """Why the file at ``path`` cannot be trusted; None when it matches the manifest (or there is none)."""
        if self.manifest is None:
            return None
        rel = self.rel(path)
        if rel not in self._seen:
            rec = self.by_path.get(rel)
            why = record_problem(self.root, rec) if rec is not None else f"{rel} is not in the manifest"
            self._seen[rel] = why
            if why:
                self.untrusted[rel] = why
        return self._seen[rel]


_TRUST: contextvars.ContextVar[Trust | None] = contextvars.ContextVar("optim_trust", default=None)


def current_trust() -> Trust | None:
    """The Trust ``read_result`` checks against now (None: outside ``reading``)."""
    return _TRUST.get()


def reading(trust: Trust | None):
    """``with reading(Trust(root)):`` makes ``read_result`` check what it reads against that manifest."""
    import contextlib

    @contextlib.contextmanager
    def cm():
        token = _TRUST.set(trust)
        try:
            yield trust
        finally:
            _TRUST.reset(token)

    return cm()


def read_result(path: Path) -> Any | None:
    """A result JSON of the run folder being read; None (noted in the Trust) when it does not verify.

    An unreadable file is an InputError naming it."""
    trust = _TRUST.get()
    if trust is not None and trust.problem(path):
        return None
    try:
        return json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise InputError(f"cannot read result file {path}: {type(exc).__name__}: {exc}; "
                         "rerun the stage that wrote it (or `optim run RECIPE`)") from None


def mark_unverified(trust: Trust, run_dir: Path, rows: list) -> None:
    """Mark each report row (``optim.stages.report.stage.Row``) whose model or result files did not match
    the manifest (``Row.unverified``, one line naming the file): it then gets no ★ and no "passed"."""
    from optim.runfolder import Entry, RunLayout

    if not trust.checked:
        return
    sizes = sorted({label for r in rows for label in r.sizes})
    layout = RunLayout(run_dir)
    for r in rows:
        rels = [r.file, *layout.row_files(Entry.parse(r.tag).replace(backend=r.backend), sizes, r.primary)]
        if r.file:
            trust.problem(Path(run_dir) / r.file)  # the model itself: missing, truncated, replaced
        bad = [trust.untrusted[rel] for rel in rels if rel in trust.untrusted]  # results: noted when read
        if bad:
            r.unverified = bad[0] + (f" (+{len(bad) - 1} more)" if len(bad) > 1 else "")


def _strays(root: Path, recorded: set[str]) -> list[str]:
    out = []
    for folder, dirs, files in os.walk(root):  # links are not followed
        here = Path(folder)
        for d in list(dirs):
            if (here / d).is_symlink():
                dirs.remove(d)
                out.append(f"{(here / d).relative_to(root).as_posix()} is a symbolic link (not in the manifest)")
        for f in files:
            rel = (here / f).relative_to(root).as_posix()
            if rel in UNRECORDED or rel in recorded:
                continue
            if ".partial-" in f:
                out.append(f"{rel} is a half-written file of an interrupted run")
            else:
                out.append(f"{rel} is not in the manifest (a stray file)")
    return out


def problems(root: Path) -> list[str]:
    """Every problem of a run folder, one line each; empty when it verifies."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"run folder not found: {root}")
    try:
        manifest = load_manifest(root)
    except InputError as exc:
        return [str(exc)]
    if manifest is None:
        return [f"{root} has no {MANIFEST}: nothing in it can be verified (`optim run RECIPE` writes one)"]
    out = [why for rec in manifest.artifacts.values() if (why := record_problem(root, rec))]
    recorded = {r.path for r in manifest.artifacts.values() if confined(root, r.path) is None}
    return out + _strays(root, recorded)


def read_run_info(root: Path):
    """The run.json of run folder ``root`` as a ``RunInfo``, read through the run's manifest
    (``read_result``: None when it does not match); a folder without run.json gets the defaults."""
    from optim.runfolder import RunInfo
    from optim.runfolder.layout import RUN_JSON

    p = Path(root) / RUN_JSON
    if not (p.is_file() or p.is_symlink()):
        return RunInfo()
    data = read_result(p)
    return None if data is None else RunInfo.from_data(data, p)
