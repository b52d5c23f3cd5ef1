"""run.json: what ``optim run`` records about a run, as a pydantic model.

``Workflow.report`` writes it through ``RunInfo.save``; the report, ``optim deploy``, ``optim ci
merge`` and the size steps read it through ``optim.verify.read_run_info`` / ``RunInfo.read``. Every key has a
default, so a run.json written before a key existed still reads; a file that is not JSON or whose
keys have the wrong types is an ``InputError`` (exit 2) naming it, on one line. Keys optim does not
know are kept (a newer optim's run.json reads, and ``ci merge`` writes it back unchanged).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from optim.errors import InputError
from optim.runfolder.entry import PRIMARY, Entry
from optim.runfolder.layout import MANIFEST, RUN_JSON


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class BatchInfo(_Open):
    """The recipe's input batch range (``input.batch``): the engines' optimization profile."""

    min: int = Field(ge=1)
    opt: int = Field(ge=1)
    max: int = Field(ge=1)

    def triple(self) -> tuple[int, int, int]:
        return self.min, self.opt, self.max


class InputInfo(_Open):
    """The model's input: its name and one sample's shape (without the batch axis)."""

    name: str
    shape: tuple[int, ...]


class GpuInfo(_Open):
    """The TensorRT engines of the run: the target GPU, and per entry why it got no engine."""

    target: str = ""
    not_run: dict[str, str] = Field(default_factory=dict)


class RunInfo(_Open):
    """run.json. The JSON keys are the field names; ``batch`` and ``input`` were added later (None
    in an older run.json). ``ci merge`` adds ``gpu.merged_from``."""

    recipe: str | None = None
    description: str | None = ""
    task: str = "classification"
    tags: list[str] = Field(default_factory=list)
    files: dict[str, str] = Field(default_factory=dict)
    accuracy_meaningful: bool = True
    accuracy_reason: str = ""
    notes: list[str] = Field(default_factory=list)
    host: dict[str, Any] = Field(default_factory=dict)
    tools: dict[str, Any] = Field(default_factory=dict)
    gpu: GpuInfo = Field(default_factory=GpuInfo)
    backends: list[str] = Field(default_factory=list)
    cpu_not_run: dict[str, str] = Field(default_factory=dict)
    sizes: list[str] = Field(default_factory=list)
    size_not_run: dict[str, str] = Field(default_factory=dict)
    nms_files: dict[str, str] = Field(default_factory=dict)
    nms: dict[str, Any] | None = None
    engines: dict[str, dict[str, str]] = Field(default_factory=dict)
    generated: str = ""
    manifest: str = MANIFEST
    #: the recipe's input batch range (min/opt/max): deploy's batch profile for ONNX models
    batch: BatchInfo | None = None
    #: the model's input (name, one sample's shape)
    input: InputInfo | None = None

    # -- reading and writing --------------------------------------------------------------------
    @classmethod
    def from_data(cls, data: Any, where: str | Path = RUN_JSON) -> RunInfo:
        """Validate parsed JSON; an InputError naming ``where`` and the first bad key otherwise."""
        if not isinstance(data, dict):
            raise InputError(f"{where} is not an optim run.json (a JSON object expected, got "
                             f"{type(data).__name__}); `optim run RECIPE` writes a new one")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"]) or "?"
            raise InputError(f"{where} is not a valid optim run.json: {key}: {err['msg']}; "
                             "`optim run RECIPE` writes a new one") from None

    @classmethod
    def of(cls, run: RunInfo | dict[str, Any] | None) -> RunInfo:
        """``run`` as a RunInfo (a run.json dict is validated; None: the defaults)."""
        if isinstance(run, RunInfo):
            return run
        return cls() if run is None else cls.from_data(run)

    @classmethod
    def read(cls, path: Path) -> RunInfo:
        """run.json at ``path`` (not checked against a manifest: see ``load``)."""
        try:
            data = json.loads(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            raise InputError(f"{path} is not a readable run.json ({type(exc).__name__}); "
                             "`optim run RECIPE` writes a new one") from None
        return cls.from_data(data, path)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def save(self, path: Path) -> Path:
        """Written atomically (``optim.artifacts.write_json``); record it in the manifest yourself."""
        from optim.artifacts import write_json

        write_json(Path(path), self.to_json())
        return Path(path)

    # -- what readers ask ------------------------------------------------------------------------
    @property
    def families(self) -> list[str]:
        """The CPU backends of the run, in report order (the first one when none is recorded)."""
        return list(self.backends or [PRIMARY])

    def entries(self) -> list[Entry]:
        return [Entry.parse(t) for t in self.tags]

    def deployable_tags(self) -> list[str]:
        """The entries deploy makes models of: every tag but the ``-nobudget`` comparisons."""
        return [t for t in self.tags if not Entry.parse(t).comparison]
