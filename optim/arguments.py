"""What a command or an API call is given, made into what the stages take: number lists, a recipe,
the data for a model file (``--data``/``--calib`` values), the task. The CLI (``optim.cli``) and the
Python API (``optim.api``) both read their arguments through these."""

from __future__ import annotations

from pathlib import Path

from optim.errors import InputError


def ints(text: str, what: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise InputError(f"{what} must be comma-separated integers, got '{text}'") from None
    if not vals or any(v < 1 for v in vals):
        raise InputError(f"{what} must be positive integers, got '{text}'")
    return vals


def names(text: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (text or "").split(",") if v.strip())


def recipe_from(path: Path | None):
    """The recipe at ``path`` (a --recipe value), or None."""
    if path is None:
        return None
    from optim.recipe import load_recipe

    return load_recipe(path)


def input_spec_from_onnx(path: Path):
    """The input spec of an ONNX file (batch axis dynamic, the rest fixed)."""
    from optim.onnx_tools import graph_inputs, load_onnx, single_input
    from optim.settings import InputSpec

    name, _, shape = single_input(graph_inputs(load_onnx(path)), str(path))
    return InputSpec(name=name, shape=shape)


def preprocess_for(spec, recipe):
    from optim.settings import Preprocess

    if recipe is not None:
        return recipe.preprocess
    channels = spec.shape[0] if len(spec.shape) == 3 else 1
    return Preprocess(color="gray" if channels == 1 else "rgb", mean=(0.0,), std=(1.0,))


def load_data(arg: str, onnx_path: Path, recipe, samples: int | None, labels: Path | None = None, task=None):
    """``arg`` (a --data/--calib value) as model inputs for ``onnx_path``; ``task`` (a Task) decides
    which labels it takes and whether a flat image folder is letterboxed (``optim.data.load_dataset``)."""
    from optim.data import prepare, parse_data_arg

    spec = parse_data_arg(arg)
    if labels is not None:
        spec = spec.model_copy(update={"labels": labels.resolve()})
    ispec = input_spec_from_onnx(onnx_path)
    pp = preprocess_for(ispec, recipe)
    if recipe is None and spec.kind == "photos" and len(ispec.shape) == 3 and ispec.shape[1] == ispec.shape[2]:
        side = ispec.shape[1]  # the photos are 256x256: bring them to the model's input, as a recipe would
        pp = pp.model_copy(update={"resize": side, "crop": side})
    return prepare(spec, pp, ispec, samples, task)


def fused_op(path: Path):
    from optim.onnx_tools import load_onnx
    from optim.ops.preprocess import op_of

    return op_of(load_onnx(path))


def load_frames(arg: str, fused, samples: int | None, labels: Path | None, task=None):
    """Raw frames for a model with fused preprocessing, and the same frames preprocessed
    on the host by the op's reference (what the FP32 reference model is fed); ``task``: as ``load_data``."""
    from optim.data import parse_data_arg, prepare_frames

    op, hwc = fused
    spec = parse_data_arg(arg)
    if labels is not None:
        spec = spec.model_copy(update={"labels": labels.resolve()})
    return prepare_frames(spec, op, hwc, samples, task)


def task_name(given: str | None, recipe) -> str:
    """--task, else the recipe's task, else classification; a --task that contradicts the recipe is an error."""
    from optim.tasks import task_names

    if given is not None and given not in task_names():
        raise InputError(f"--task '{given}' is not a task; known: {', '.join(task_names())}")
    if recipe is not None:
        if given is not None and given != recipe.task:
            raise InputError(f"--task {given} contradicts the recipe's task {recipe.task}: drop --task or use "
                             "a recipe of that task")
        return recipe.task
    return given or "classification"


def task(given: str | None, recipe):
    """The Task of ``--task`` / the recipe (see ``task_name``)."""
    from optim.tasks import get_task

    return get_task(task_name(given, recipe))
