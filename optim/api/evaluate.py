"""``optim.check`` (a candidate against FP32, with the task's gates) and ``optim.bench`` (latency, throughput)."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from optim.api.common import (DataLike, PathLike, as_path, as_recipe, flag, in_private_tmp, ints, model_inputs,
                              settings_of, task_of)
from optim.errors import InputError

if TYPE_CHECKING:
    from optim.recipe import Recipe
    from optim.settings import BenchSettings
    from optim.stages.bench import BenchResult
    from optim.stages.check import CheckResult


# -- gates ------------------------------------------------------------------------------------------
def recipe_gates(r: Recipe | None, candidate: Path) -> dict | None:
    """The recipe's gates for the candidate's entry (named in its file name, model.TAG.onnx; else the
    recipe's 'default'), as gate values; None without a recipe."""
    if r is None:
        return None
    tags = sorted((r.settings_for(c).tag for c in r.precisions), key=len, reverse=True)
    tag = next((t for t in tags if f".{t}." in f".{Path(candidate).name}"), "default")
    return r.gates_for(tag).model_dump()


def task_gates(task, base: Mapping | None = None, *, flags: bool = False, **given: float | None):
    """The task's gates model from ``base`` (default: the task's default gates) and the gate values
    given (None: not given); a name the task has no gate for is an InputError naming the task's gates
    (as ``--flag`` names with ``flags``, else as keyword names)."""
    values = {k: v for k, v in given.items() if v is not None}
    known = list(task.gates_model.model_fields)
    name = functools.partial(flag, flags=flags)
    foreign = [k for k in values if k not in known]
    if foreign:
        raise InputError(f"{', '.join(map(name, foreign))} {'is not a gate' if len(foreign) == 1 else 'are not gates'}"
                         f" of task {task.name}; its gates: {', '.join(map(name, known))}")
    return settings_of(task.gates_model, None, "gates", **{**(task.default_gates if base is None else base), **values})


# -- check ------------------------------------------------------------------------------------------
@in_private_tmp
def check(candidate: PathLike, reference: PathLike, data: DataLike, *, labels: PathLike | Any = None,
          samples: int | None = None, batch_size: int = 256, task: str | None = None,
          gates: Mapping[str, float | None] | Any = None, recipe: PathLike | Recipe | None = None,
          backend: str = "auto", strict: bool = False, raise_on_failure: bool = False,
          **gate_values: float | None) -> CheckResult:
    """Compare a candidate (ONNX or engine) with the FP32 reference on ``data``, as ``optim check``:
    output deltas, task accuracy (with labels), the task's gates.

    Gates: the task's defaults (or the recipe's for the candidate's entry), replaced by ``gates`` (a
    mapping or the task's gates model) and by keyword values, e.g. ``max_top1_drop=1.0``,
    ``min_cosine=0.99`` (classification), ``max_map_drop=1.0``, ``min_agreement=75`` (detection).
    ``labels``: a labels file, or an array of class ids. With ``raise_on_failure``, a failed gate (and
    with ``strict``, a NOT MEANINGFUL check) raises GateError; else read ``result.passed``."""
    from optim.artifacts import Data
    from optim.backends import backend_for
    from optim.arguments import fused_op as _fused_op, load_frames as _load_frames
    from optim.stages.check import check_files, raise_on_failures, settings_for

    cand = as_path(candidate, "candidate")  # a missing file: the loaders' own errors, as in optim check
    ref = as_path(reference, "reference")
    backend_for(cand, backend)  # an unknown name, or one that does not run this file: an InputError now
    r = as_recipe(recipe)
    t = task_of(task, r)
    base = gates.model_dump() if hasattr(gates, "model_dump") else (dict(gates) if gates is not None else None)
    g = task_gates(t, base if base is not None else recipe_gates(r, cand), **gate_values)
    fused = None if cand.suffix in (".plan", ".engine") else _fused_op(cand)
    if fused is None:
        x, y, source = model_inputs(data, ref, r, samples, labels, task=t)
        frames = None
    else:  # the candidate takes raw frames; the reference gets them preprocessed on the host
        if not isinstance(data, (str, os.PathLike)):
            raise InputError(f"{cand} takes raw frames (fused preprocessing): give data as a --data string")
        frames, x, y, ds = _load_frames(os.fspath(data), fused, samples,
                                        Path(labels) if isinstance(labels, (str, os.PathLike)) else None, task=t)
        source = ds.source
    res = check_files(cand, ref, Data.of("evaluation", x, y, frames, source),
                      settings_for(t.name, g, batch_size=batch_size, backend=backend))
    if raise_on_failure:
        raise_on_failures([res], strict=strict or bool(r is not None and r.check.strict))
    return res


# -- bench ------------------------------------------------------------------------------------------
@in_private_tmp
def bench(models: PathLike | Sequence[PathLike], *, settings: BenchSettings | None = None,
          batch_sizes: Sequence[int] | str = (1, 64), warmup: int = 5, iterations: int = 30,
          threads: int | None = None, backend: str = "auto", cuda_graph: bool = False) -> BenchResult | list[BenchResult]:
    """Latency (median/p90/p99) and throughput per batch size, as ``optim bench``: one model (a
    ``BenchResult``) or several measured one after another (a list, comparable side by side).
    ``backend``: auto (ONNX on ONNX Runtime CPU, ``.plan`` on TensorRT), openvino, openvino-bf16, ..."""
    from optim.settings import BenchSettings
    from optim.stages.bench import bench_model

    one = isinstance(models, (str, os.PathLike))
    paths = [as_path(m, "model") for m in ([models] if one else models)]
    if not paths:
        raise InputError("give at least one model to bench")
    s = settings_of(BenchSettings, settings, "settings", batch_sizes=ints(batch_sizes, "batch_sizes"),
                  warmup=warmup, iterations=iterations, threads=threads, cuda_graph=cuda_graph)
    results = [bench_model(p, s, backend=backend) for p in paths]
    return results[0] if one else results
