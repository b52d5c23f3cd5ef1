"""Artifacts on disk: hashing, atomic writes, the run manifest and the stage cache.

Every file a stage produces is written to a hidden ``.NAME.partial-PID`` file in the
same folder and renamed into place only when complete, so an interrupted run never
leaves a file that looks finished. The manifest records, per artifact, its sha256,
the stage and settings that made it, its parents, and a cache key; a stage whose
cache key matches a recorded artifact whose file still hashes the same is reused.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, Field

from optim.version import __version__
from optim.errors import InputError, OutputPathError, WriteError

MANIFEST = "manifest.json"
_TOOLS = (
    "torch", "torchvision", "onnx", "onnxruntime", "onnxruntime-gpu", "nvidia-modelopt",
    "onnxslim", "numpy", "tensorrt",
)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_array(x: Any) -> str:
    """Content hash of a NumPy array (shape, dtype and bytes); "none" for None. Box labels
    (per-image ``boxes`` and ``classes``) hash as their flat arrays."""
    if x is None:
        return "none"
    import numpy as np

    if hasattr(x, "boxes") and hasattr(x, "classes"):
        return sha256_json(["boxes", [sha256_array(np.asarray(b)) for b in x.boxes],
                            [sha256_array(np.asarray(c)) for c in x.classes]])

    h = hashlib.sha256(str((x.shape, x.dtype.str)).encode())
    h.update(np.ascontiguousarray(x).data)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _exists(path: Path) -> bool:
    try:
        return os.path.lexists(path)
    except (OSError, ValueError):
        return False


def output_problem(path: Path, want: str = "file") -> str | None:
    """What keeps ``path`` from being written as a ``want`` ("file" or "folder"), or None.

    Looks, without writing anything, at ``path`` itself and at its nearest existing
    ancestor: a directory where a file is wanted, a regular file where a folder is
    wanted (or in the way of one), a device or pipe (optim replaces files whole, so it
    would replace the device), a folder it may not write in."""
    path = Path(path)
    if _exists(path):
        if want == "file" and path.is_dir():
            return "is a directory, not a file: give a file name"
        if want == "file" and not path.is_file():
            return ("is not a regular file (a device, pipe or broken link); optim replaces the file "
                    "whole, so give the path of a regular file")
        if want == "folder" and not path.is_dir():
            return "is a file, not a folder: give a folder"
    start = path if want == "folder" else path.parent
    for anc in (start.absolute(), *start.absolute().parents):
        if not _exists(anc):
            continue
        if not anc.is_dir():
            return f"{anc} is a file, not a folder, so nothing can be written under it"
        if not os.access(anc, os.W_OK | os.X_OK):
            return f"cannot write in {anc} (no permission, or a read-only file system)"
        return None
    return None


def check_output_file(path: Path, what: str = "output") -> Path:
    """``path`` if a file can be written there; else OutputPathError naming it and the problem.

    Commands call it on every output location before doing any work."""
    problem = output_problem(path, "file")
    if problem:
        raise OutputPathError(f"{what} {path} {problem}" if problem.startswith("is ") else f"{what} {path}: {problem}")
    return Path(path)


def check_output_dir(path: Path, what: str = "output folder") -> Path:
    """``path`` if a folder can be made (or written in) there; else OutputPathError."""
    problem = output_problem(path, "folder")
    if problem:
        raise OutputPathError(f"{what} {path} {problem}" if problem.startswith("is ") else f"{what} {path}: {problem}")
    return Path(path)


#: errors of a write that name no file (ENOSPC on write(), ...): treated as the write failing
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                 errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG}
_WRITE_HINTS = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space (disk quota) or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EACCES: "no permission: write elsewhere or fix the permissions",
    errno.EPERM: "no permission: write elsewhere or fix the permissions",
    errno.EIO: "an I/O error: check the disk, or write elsewhere",
}


def _is_write_failure(exc: OSError, paths: tuple[Path, ...]) -> bool:
    """Whether ``exc``, raised while writing ``paths``, is that write failing (and not, say,
    the body of ``atomic_path`` failing to read one of its inputs, or writing nothing)."""
    if exc.errno not in _WRITE_ERRNOS:
        return False
    names = [n for n in (exc.filename, exc.filename2) if isinstance(n, (str, bytes, os.PathLike))]
    if names:
        ours = {os.path.abspath(p) for p in paths}
        return any(os.path.abspath(os.fsdecode(n)) in ours for n in names)
    return True


def write_failed(final: Path, exc: OSError) -> WriteError:
    """The WriteError for a failed write of ``final``: names the path and what went wrong."""
    code = errno.errorcode.get(exc.errno or -1, "")
    problem = output_problem(final, "file") if exc.errno in (errno.EISDIR, errno.ENOTDIR, errno.EEXIST) else None
    why = problem or (exc.strerror or type(exc).__name__).rstrip(".")
    hint = _WRITE_HINTS.get(exc.errno or -1, "")
    err = WriteError(f"cannot write {final}: {why}" + (f" [{code}]" if code else "") + (f"; {hint}" if hint else ""))
    err.path = Path(final)  # type: ignore[attr-defined]
    return err


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` on success only.

    A failed write (disk full, I/O error, read-only file system, no permission, a folder
    in the way), in the body or the rename, becomes a WriteError naming ``final``; the
    temporary file is removed whatever happens, so nothing half-written is left."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failed(final, exc) from exc
    tmp = final.with_name(f".{final.name}.partial-{os.getpid()}")
    try:
        if _exists(tmp) and not tmp.is_dir():  # a planted link would have the write land at its target
            tmp.unlink()
        yield tmp
        os.replace(tmp, final)
    except OSError as exc:
        if not _is_write_failure(exc, (tmp, final)):
            raise
        raise write_failed(final, exc) from exc
    finally:
        try:
            if _exists(tmp) and not tmp.is_dir():
                tmp.unlink()
        except OSError:
            pass


@contextmanager
def stage_writes(stage: str, name: str = "") -> Iterator[None]:
    """Name the stage (and its output's name) in a WriteError raised inside; the innermost
    stage wins, so the message names it once."""
    try:
        yield
    except WriteError as exc:
        if getattr(exc, "stage", ""):
            raise
        label = f"{stage} stage" + (f" ({name})" if name and name != stage else "")
        err = WriteError(f"{label}: {exc}", detail=exc.detail)
        err.stage = stage  # type: ignore[attr-defined]
        if hasattr(exc, "path"):
            err.path = exc.path  # type: ignore[attr-defined]
        raise err from exc


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def installed_versions(names) -> dict[str, str]:
    """name -> version of the distributions among ``names`` that are installed."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def tool_versions() -> dict[str, str]:
    return {"optim": __version__, "python": platform.python_version(), **installed_versions(_TOOLS)}


def host_info() -> dict[str, Any]:
    """The machine numbers were measured on: host, OS, CPU model, logical CPUs, and the CPU features that
    decide reduced-precision speed (``optim.hostcpu.CPU_FEATURES`` it has; None where not readable)
    with the precisions it computes natively."""
    from optim.hostcpu import cpu_info

    cpu = cpu_info()
    return {"hostname": platform.node(), "os": platform.platform(), "cpu": cpu.model,
            "cpu_count": os.cpu_count(), "cpu_features": cpu.feature_list() if cpu.features_known else None,
            "cpu_native": list(cpu.native())}


@dataclass(frozen=True)
class Artifact:
    """What a stage takes and returns: a file (or, for ``kind="data"``, arrays in memory).

    ``name`` is its key in the run's manifest, ``sha256`` its content hash (of the file,
    or of the arrays), ``tag`` the precision entry it belongs to, ``parents`` the names
    of the artifacts it was made from."""

    name: str
    path: Path | None
    sha256: str
    kind: str = "file"  # onnx | engine | result | data | weights | plugin | report
    tag: str = ""
    parents: tuple[str, ...] = ()

    @classmethod
    def of_file(cls, path: Path, name: str = "", kind: str = "file", tag: str = "") -> Artifact:
        path = Path(path)
        if path.is_dir():
            raise InputError(f"{path} is a directory, not a file: give the {kind} file itself")
        if not path.is_file():
            raise InputError(f"file not found: {path}")
        return cls(name or path.name, path, sha256_file(path), kind, tag)


@dataclass(frozen=True)
class Data(Artifact):
    """Model inputs held in memory: ``x`` (what the FP32 model takes), ``labels`` (or None),
    ``frames`` (raw uint8 frames for models with fused preprocessing, else None) and a
    description of where they came from. Hashed over all three arrays."""

    x: Any = None
    labels: Any = None
    frames: Any = None
    description: str = ""

    @classmethod
    def of(cls, name: str, x: Any, labels: Any = None, frames: Any = None, description: str = "") -> Data:
        sha = sha256_json([sha256_array(x), sha256_array(labels), sha256_array(frames)])
        return cls(name, None, sha, "data", x=x, labels=labels, frames=frames, description=description)

    def head(self, n: int | None) -> Data:
        if n is None or n >= len(self.x):
            return self
        cut = lambda a: None if a is None else a[:n]  # noqa: E731
        return Data.of(self.name, self.x[:n], cut(self.labels), cut(self.frames), self.description)


class ArtifactRecord(BaseModel):
    """One file of a run, as the manifest records it."""

    name: str
    path: str  # relative to the run folder
    stage: str
    sha256: str
    bytes: int
    parents: list[str] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)
    cache_key: str = ""
    kind: str = ""
    tag: str = ""
    created: str = ""
    seconds: float = 0.0


class Manifest(BaseModel):
    recipe: str = ""
    recipe_sha256: str = ""
    target_gpu: str = ""
    tools: dict[str, str] = Field(default_factory=dict)
    host: dict[str, Any] = Field(default_factory=dict)
    updated: str = ""
    artifacts: dict[str, ArtifactRecord] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


# -- a run folder's files against its manifest (optim.verify reads a whole folder with these) ----
def confined(root: Path, rel: str) -> str | None:
    """Why ``rel`` (a manifest path) is not a file inside ``root``; None when it is."""
    p = PurePosixPath(str(rel).replace("\\", "/"))
    if not str(rel) or p.is_absolute() or ".." in p.parts or Path(str(rel)).is_absolute():
        return f"names {rel!r}, which is not a path inside the run folder"
    root = Path(root)
    try:
        inside = (root / rel).resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a link loop
        inside = False
    return None if inside else f"{rel} leads outside the run folder (a symbolic link)"


def record_problem(root: Path, rec: ArtifactRecord) -> str | None:
    """One line when the file of ``rec`` is outside the run folder, missing or not what was recorded."""
    why = confined(root, rec.path)
    if why:
        return f"manifest entry {rec.name} {why}"
    p = Path(root) / rec.path
    if p.is_symlink() or not p.is_file():
        return f"{rec.path} is missing" if not os.path.lexists(p) else f"{rec.path} is not a regular file"
    if p.stat().st_size != rec.bytes or sha256_file(p) != rec.sha256:
        return f"{rec.path} does not match the manifest"
    return None


def load_manifest(root: Path) -> Manifest | None:
    """The run folder's manifest; None when it has none; InputError (saying what works) when it is broken."""
    path = Path(root) / MANIFEST
    if not os.path.lexists(path):
        return None
    try:
        if path.is_symlink() or not path.is_file():
            raise ValueError("not a regular file")
        return Manifest.model_validate_json(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise InputError(broken_manifest(path, exc)) from None


def broken_manifest(path: Path, exc: BaseException) -> str:
    return (f"{path} is not a valid optim manifest ({exc.__class__.__name__}): `optim run RECIPE --force` redoes "
            "every stage and writes a new one")


class RunDir:
    """A run's output folder and its manifest."""

    def __init__(self, root: Path, *, reset: bool = False) -> None:
        """``reset`` (``--force``): a broken manifest is replaced by a new one instead of refused."""
        self.root = Path(root)
        self.manifest_path = self.root / MANIFEST
        self.manifest = Manifest()
        try:
            self.manifest = load_manifest(self.root) or Manifest()
        except InputError:
            if not reset:
                raise
            from optim.console import info

            info(f"{self.manifest_path} is not a valid optim manifest: starting a new one (--force)")
            if self.manifest_path.is_symlink() or self.manifest_path.is_dir():
                raise InputError(f"{self.manifest_path} is not a regular file: delete it and rerun") from None

    def path(self, rel: str) -> Path:
        return self.root / rel

    def stale(self, name: str, key: str) -> str | None:
        """Why the recorded ``name`` with this cache key cannot be reused (None: it can, or it is not recorded
        with this key, which is no surprise): its path leaves the run folder, or its file changed."""
        rec = self.manifest.artifacts.get(name)
        if rec is None or rec.cache_key != key:
            return None
        sides = [r for r in self.manifest.artifacts.values()  # its side outputs (quantize/TAG.json, ...)
                 if r.parents == [name] and r.stage == rec.stage and not r.cache_key]
        return next((why for r in (rec, *sides) if (why := record_problem(self.root, r))), None)

    def cached(self, name: str, key: str) -> ArtifactRecord | None:
        """The recorded artifact if its cache key matches and its file is intact and inside the run folder."""
        rec = self.manifest.artifacts.get(name)
        if rec is None or rec.cache_key != key or self.stale(name, key):
            return None
        return rec

    def record(self, name: str, rel: str, stage: str, *, parents: list[str] | None = None,
               settings: dict[str, Any] | None = None, key: str = "",
               seconds: float = 0.0, kind: str = "", tag: str = "") -> ArtifactRecord:
        p = self.path(rel)
        why = confined(self.root, rel) or (f"{rel} is a symbolic link" if p.is_symlink() else None)
        if why:
            raise OutputPathError(f"{self.root}: {why}; optim writes only inside the run folder: remove the link")
        rec = ArtifactRecord(
            name=name, path=rel, stage=stage, sha256=sha256_file(p), bytes=p.stat().st_size,
            parents=parents or [], settings=settings or {}, cache_key=key, kind=kind, tag=tag,
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), seconds=round(seconds, 3),
        )
        old = self.manifest.artifacts.get(name)
        self.manifest.artifacts[name] = rec
        try:
            self.save()
        except WriteError:
            self._unrecord(name, old, p)
            raise
        return rec

    def _unrecord(self, name: str, old: ArtifactRecord | None, p: Path) -> None:
        """After a failed manifest write: remove the file it could not record (which frees its space)
        and write the manifest without it, so that the manifest stays true to the folder."""
        self.manifest.artifacts.pop(name, None)
        if old is not None and old.path != p.relative_to(self.root).as_posix():
            self.manifest.artifacts[name] = old  # its own file is still there
        try:
            p.unlink(missing_ok=True)
            self.save()
        except (OSError, WriteError):
            pass  # the disk is still full: the next run finds the file unrecorded and redoes it

    def save(self) -> None:
        self.manifest.tools = tool_versions()
        self.manifest.host = host_info()
        self.manifest.updated = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        write_text(self.manifest_path, self.manifest.model_dump_json(indent=2) + "\n")

    def verify(self) -> list[str]:
        """Names of recorded artifacts whose file is missing or whose hash differs."""
        bad = []
        for name, rec in self.manifest.artifacts.items():
            p = self.path(rec.path)
            if not p.is_file() or sha256_file(p) != rec.sha256:
                bad.append(name)
        return bad
