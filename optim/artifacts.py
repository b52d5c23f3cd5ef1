"""Artifacts on disk: hashing, atomic writes, the run manifest and the stage cache.

Every file a stage produces is written to a hidden ``.NAME.partial-PID`` file in the
same folder and renamed into place only when complete, so an interrupted run never
leaves a file that looks finished. The manifest records, per artifact, its sha256,
the stage and settings that made it, its parents, and a cache key; a stage whose
cache key matches a recorded artifact whose file still hashes the same is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from optim import __version__
from optim.errors import InputError

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
    """Content hash of a NumPy array (shape, dtype and bytes); "none" for None."""
    if x is None:
        return "none"
    import numpy as np

    h = hashlib.sha256(str((x.shape, x.dtype.str)).encode())
    h.update(np.ascontiguousarray(x).data)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` on success only."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.partial-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def tool_versions() -> dict[str, str]:
    versions = {"optim": __version__, "python": platform.python_version()}
    for name in _TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def host_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"hostname": platform.node(), "os": platform.platform(), "cpu": cpu,
            "cpu_count": os.cpu_count()}


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


class RunDir:
    """A run's output folder and its manifest."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.manifest_path = self.root / MANIFEST
        self.manifest = Manifest()
        if self.manifest_path.exists():
            try:
                self.manifest = Manifest.model_validate_json(self.manifest_path.read_text())
            except ValueError as exc:
                raise InputError(
                    f"{self.manifest_path} is not a valid optim manifest ({exc.__class__.__name__}); "
                    "delete it or run with --force"
                ) from None

    def path(self, rel: str) -> Path:
        return self.root / rel

    def cached(self, name: str, key: str) -> ArtifactRecord | None:
        """The recorded artifact if its cache key matches and its file is intact."""
        rec = self.manifest.artifacts.get(name)
        if rec is None or rec.cache_key != key:
            return None
        p = self.path(rec.path)
        if not p.is_file() or sha256_file(p) != rec.sha256:
            return None
        return rec

    def record(self, name: str, rel: str, stage: str, *, parents: list[str] | None = None,
               settings: dict[str, Any] | None = None, key: str = "",
               seconds: float = 0.0, kind: str = "", tag: str = "") -> ArtifactRecord:
        p = self.path(rel)
        rec = ArtifactRecord(
            name=name, path=rel, stage=stage, sha256=sha256_file(p), bytes=p.stat().st_size,
            parents=parents or [], settings=settings or {}, cache_key=key, kind=kind, tag=tag,
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), seconds=round(seconds, 3),
        )
        self.manifest.artifacts[name] = rec
        self.save()
        return rec

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
