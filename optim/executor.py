"""Runs stages and caches their outputs: the one place that derives cache keys.

A stage is a module with ``NAME``, ``TOOLS`` (the packages whose versions change its
output, or a function giving them: check and bench take every registered backend's), an
optional ``environment()`` (what else of this machine changes it: the CPU for a benchmark,
the GPU and TensorRT for an engine) and
``run(inputs, settings, ctx) -> StageOutput``. Stages know nothing of caching:
``Executor.step`` derives the key from the stage's name, the sha256 of every input
artifact, ``settings.model_dump()``, the tool versions and the environment; reuses the
recorded output when the manifest holds an intact file with that key; otherwise runs
the stage and records its output (and side outputs) with their parents. Every step
says on the console whether it was done, cached or skipped, and keeps that in
``events`` (what tests and callers read).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel

from optim.artifacts import Artifact, RunDir, installed_versions, sha256_json, tool_versions
from optim.console import info, skipped
from optim.process import doing
from rich.markup import escape


@dataclass
class StageOutput:
    """What a stage returns: ``record`` goes into the manifest as the output's settings;
    ``result`` is the stage's typed result for callers that ran it directly."""

    record: dict[str, Any] = field(default_factory=dict)
    result: Any = None


@dataclass
class StageContext:
    """Where a stage writes: ``out`` (its main output) and side files named through ``side``."""

    root: Path
    out: Path
    name: str = ""  # the output's name in the manifest
    memo: dict[str, Any] = field(default_factory=dict)  # shared by the stages of one run
    sides: dict[str, tuple[str, str]] = field(default_factory=dict)

    def side(self, name: str, rel: str, kind: str = "result") -> Path:
        """The path of a side output (recorded in the manifest with the main output as parent)."""
        self.sides[name] = (rel, kind)
        return self.root / rel

    def path(self, rel: str) -> Path:
        return self.root / rel


@dataclass(frozen=True)
class Event:
    stage: str
    name: str
    status: str  # done | cached | skipped
    seconds: float = 0.0
    why: str = ""


def settings_dump(settings: BaseModel | dict | None) -> Any:
    if settings is None:
        return None
    return settings.model_dump(mode="json") if isinstance(settings, BaseModel) else settings


def stage_tools(stage: ModuleType) -> tuple[str, ...]:
    """A stage's ``TOOLS``: the tuple, or what its function gives now (check and bench: every backend's package)."""
    return tuple(stage.TOOLS() if callable(stage.TOOLS) else stage.TOOLS)


class Executor:
    def __init__(self, root: Path, *, force: bool = False) -> None:
        self.rd = RunDir(Path(root), reset=force)
        self.force = force
        self.versions = tool_versions()
        self.looked_up: set[str] = set()  # stage tools whose version was asked for
        self.events: list[Event] = []
        self.memo: dict[str, Any] = {}

    @property
    def root(self) -> Path:
        return self.rd.root

    # -- keys --------------------------------------------------------------------------------
    def tool_versions(self, stage: ModuleType) -> dict[str, str | None]:
        """optim's version and those of the stage's ``TOOLS`` (None: not installed)."""
        tools = stage_tools(stage)
        unseen = [t for t in tools if t not in self.versions and t not in self.looked_up]
        self.looked_up.update(unseen)
        self.versions.update(installed_versions(unseen))  # those installed: the run's tools
        return {t: self.versions.get(t) for t in ("optim", *tools)}

    def key(self, stage: ModuleType, inputs: Sequence[Artifact], settings: BaseModel | dict | None) -> str:
        env = getattr(stage, "environment", None)
        return sha256_json({
            "stage": stage.NAME,
            "inputs": [[a.name, a.sha256] for a in inputs],
            "settings": settings_dump(settings),
            "tools": self.tool_versions(stage),
            "environment": env() if env else None,
        })

    def cached(self, stage: ModuleType, name: str, inputs: Sequence[Artifact],
               settings: BaseModel | dict | None, key: str | None = None) -> Artifact | None:
        """The recorded output if an intact file with this step's key exists (``key``: already derived)."""
        rec = self.rd.cached(name, key or self.key(stage, inputs, settings))
        if rec is None:
            return None
        return Artifact(name, self.rd.path(rec.path), rec.sha256, rec.kind, rec.tag, tuple(rec.parents))

    # -- running -----------------------------------------------------------------------------
    def step(self, stage: ModuleType, name: str, rel: str, inputs: Sequence[Artifact],
             settings: BaseModel | dict | None, *, kind: str = "onnx", tag: str = "",
             force: bool = False, cache: bool = True) -> Artifact:
        """Run ``stage`` into ``rel`` unless an intact output with the same key exists."""
        key = self.key(stage, inputs, settings)
        if cache and not (self.force or force):
            hit = self.cached(stage, name, inputs, settings, key)
            if hit is not None:
                info(f"[dim]cached[/] {stage.NAME} {name} ({rel})")
                self.events.append(Event(stage.NAME, name, "cached"))
                return hit
            why = self.rd.stale(name, key)
            if why:  # a file of the run folder changed behind optim's back: say so, then redo it
                info(f"[yellow]{escape(why)}[/]: redoing {stage.NAME} {name.removeprefix(stage.NAME + '/')}")
        ctx = StageContext(self.root, self.rd.path(rel), name, self.memo)
        t0 = time.perf_counter()
        from optim.artifacts import stage_writes

        with doing(f"{stage.NAME} {name}"), stage_writes(stage.NAME, name):  # a failed write names the stage
            out = stage.run(list(inputs), settings, ctx)
            seconds = time.perf_counter() - t0
            parents = [a.name for a in inputs if a.kind != "data"]
            rec = self.rd.record(name, rel, stage.NAME, parents=parents, settings=out.record, key=key,
                                 seconds=seconds, kind=kind, tag=tag)
            for side, (side_rel, side_kind) in ctx.sides.items():
                if self.rd.path(side_rel).is_file():
                    self.rd.record(side, side_rel, stage.NAME, parents=[name], kind=side_kind, tag=tag)
        info(f"[green]done[/] {stage.NAME} {name} ({rel}, {seconds:.1f} s)")
        self.events.append(Event(stage.NAME, name, "done", round(seconds, 3)))
        return Artifact(name, self.rd.path(rel), rec.sha256, kind, tag, tuple(parents))

    def skip(self, stage: str, name: str, why: str) -> None:
        """A stage that cannot run here: one line, and an event that says why."""
        skipped(f"{stage} {name}".strip(), why)
        self.events.append(Event(stage, name, "skipped", why=why))

    def ran(self, status: str = "done") -> list[str]:
        """Names of the outputs with this status, in order."""
        return [e.name for e in self.events if e.status == status]
