"""``optim.run``: every stage of a recipe, and ``RunResult``, the report's rows of a run folder."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from optim.api.common import PathLike, as_path, in_private_tmp, names
from optim.errors import InputError, OptimError

if TYPE_CHECKING:
    from optim.stages.report.stage import Row


# -- run --------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    """What ``optim run`` left: the run folder, its report files and the report's rows (``report.json``)."""

    recipe: str
    task: str
    folder: Path
    #: the report files by kind: md, html, json, png, sensitivity.png (those written)
    reports: dict[str, Path]
    #: one per entry and CPU backend, as in report.json (``optim.stages.report.stage.Row``); ``accuracy`` holds
    #: the task's column values by key (``columns``), e.g. ``top1``, ``top1_drop`` for classification
    rows: list[Row]
    #: the task's accuracy columns: (key, header)
    columns: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: a failed gate (GateError) or engine build (BuildError) that ``optim run`` would exit non-zero with;
    #: None when every gate passed
    error: OptimError | None = None

    @property
    def passed(self) -> bool:
        return self.error is None

    def row(self, tag: str, backend: str | None = None) -> Row:
        """The row of entry ``tag`` (on ``backend``; default: the entry's first row)."""
        for r in self.rows:
            if r.tag == tag and (r.backend == backend if backend else r.primary):
                return r
        raise KeyError(f"no row {tag}{'@' + backend if backend else ''}; rows: "
                       f"{', '.join(sorted({r.tag for r in self.rows}))}")


def read_run(folder: PathLike, reports: Mapping[str, Path] | None = None) -> RunResult:
    """A run folder's ``report.json`` as a RunResult (rows typed as ``optim.stages.report.stage.Row``)."""
    from optim.stages.report.stage import Row

    folder = Path(folder)
    path = folder / "report.json"
    try:
        rep = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path} not found: run optim report {folder} (or optim run) first") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} cannot be read ({exc}); run optim report {folder} again") from None
    known = {f.name for f in fields(Row)}
    rows = [Row(**{k: v for k, v in d.items() if k in known}) for d in rep.get("rows", [])]
    if reports is None:
        reports = {k: folder / f"report.{k}" for k in ("md", "html", "png", "sensitivity.png", "json")
                   if (folder / f"report.{k}").is_file()}
    return RunResult(recipe=rep.get("recipe") or folder.name, task=rep.get("task") or "classification",
                     folder=folder, reports=dict(reports), rows=rows,
                     columns=[(c["key"], c["header"]) for c in rep.get("columns", [])], notes=rep.get("notes", []))


@in_private_tmp
def run(recipe: PathLike, *, out_root: PathLike = "artifacts", force: bool = False, weights: PathLike | None = None,
        precisions: str | Sequence[str] | None = None, eval_samples: int | None = None,
        calib_samples: int | None = None, bench_iterations: int | None = None, strict: bool = False,
        wait: bool = True, raise_on_failure: bool = False) -> RunResult:
    """Every stage of a recipe, as ``optim run RECIPE`` (same stages, cache and run folder
    ``OUT_ROOT/<recipe name>/``). ``precisions``: tags or precisions (``"fp32,int8"`` or a list);
    fp32 is always kept. ``strict``: a check flagged NOT MEANINGFUL fails like a gate. ``wait=False``:
    RunFolderBusy at once if another optim process holds the run folder.

    A failed gate or engine build leaves ``RunResult.error`` set (the report is written); with
    ``raise_on_failure`` it is raised instead, with the result as its ``result`` attribute."""
    from optim.artifacts import check_output_dir
    from optim.recipe import apply_overrides, load_recipe
    from optim.workflow.run import Workflow

    path = as_path(recipe, "recipe")
    tags = names(precisions)
    weights_path = as_path(weights, "weights")
    r = apply_overrides(load_recipe(path), weights=weights_path.resolve() if weights_path else None,
                        eval_samples=eval_samples, calib_samples=calib_samples,
                        precisions=",".join(tags) if precisions is not None else None,
                        bench_iterations=bench_iterations, strict=strict)
    root = as_path(out_root, "out_root")
    check_output_dir(root / r.name, "--out-root: run folder")

    class _Run(Workflow):  # the same workflow; the report paths kept when a gate fails after the report
        paths: dict[str, Path] | None = None

        def report(self, *args, **kwargs):
            self.paths = super().report(*args, **kwargs)
            return self.paths

    wf = _Run(r, path, out_root=root, force=force, wait=wait)
    error: OptimError | None = None
    try:
        paths = wf.run()
    except OptimError as exc:
        if wf.paths is None:  # it stopped before the report: nothing to return
            raise
        paths, error = wf.paths, exc
    result = read_run(wf.ex.root, {k.replace("_", "."): p for k, p in paths.items()})
    result.error = error
    if error is not None and raise_on_failure:
        error.result = result  # type: ignore[attr-defined]
        raise error
    return result
