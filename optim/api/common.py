"""What every API function shares: paths, messages naming arguments as keywords or as the command's
options, settings built from keyword values, data loaded as ``--data`` loads it, and the private
temporary folder each call runs in."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, Union

from optim.errors import InputError

if TYPE_CHECKING:  # for readers and type checkers only: nothing heavy is imported at run time
    import numpy as np

    from optim.recipe import Recipe

PathLike = Union[str, "os.PathLike[str]"]
#: a ``--data`` string (or a path to the same), or a NumPy array of model inputs (N, *input shape)
DataLike = Union[str, "os.PathLike[str]", "np.ndarray"]


def in_private_tmp(fn):
    """Run ``fn`` with a temporary folder of this process's own (as the ``optim`` command does:
    quantize workers and tools write there, and it is removed afterwards); inside one already, as is."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from optim import process

        if process.base_tmp:  # the CLI (or an outer API call) made one already
            return fn(*args, **kwargs)
        with process.private_tmp():
            return fn(*args, **kwargs)

    return wrapper


def as_path(p: PathLike | None, what: str) -> Path | None:
    if p is None:
        return None
    if isinstance(p, (str, os.PathLike)):
        return Path(p)
    raise InputError(f"{what} must be a path (str or Path), got {type(p).__name__}")


def flag(key: str, flags: bool) -> str:
    """How a message names the argument ``key``: as the keyword, or with ``flags`` as the ``optim``
    command's argument or option (``MODEL``, ``-o/--output``, ``--input-shape``)."""
    if not flags:
        return key
    return {"model": "MODEL", "output": "-o/--output"}.get(key, "--" + key.replace("_", "-"))


def or_recipe(flags: bool) -> str:
    """The recipe as the alternative a message offers: ``--recipe`` or ``a recipe``."""
    return flag("recipe", True) if flags else "a recipe"


def output_label(key: str, given: Any, default: str, flags: bool) -> str:
    """How a message names an output file: as the argument it was given with, else where it goes
    by default (``default``)."""
    return flag(key, flags) if given is not None else default


def as_recipe(recipe: PathLike | Recipe | None) -> Recipe | None:
    """A recipe given as a path (loaded and validated) or as a loaded ``Recipe``."""
    if recipe is None:
        return None
    from optim.recipe import Recipe, load_recipe

    if isinstance(recipe, Recipe):
        return recipe
    return load_recipe(as_path(recipe, "recipe"))


def names(v: str | Sequence[str] | None) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return tuple(s.strip() for s in v.split(",") if s.strip())
    return tuple(str(s) for s in v)


def settings_of(cls, given: Any, what: str, **values: Any):
    """``given`` when it is already a ``cls``, else ``cls(**values)``; a bad value is a RecipeError
    naming the option, as on the command line."""
    from pydantic import ValidationError

    from optim.recipe import RecipeError, validation_message

    if given is not None:
        if not isinstance(given, cls):
            raise InputError(f"{what} must be an optim.settings.{cls.__name__}, got {type(given).__name__}")
        return given
    try:
        return cls(**values)
    except ValidationError as exc:
        raise RecipeError(validation_message("bad option", exc)) from None


# -- data -------------------------------------------------------------------------------------------
def labels_of(labels: Any, n: int, source: str, task=None):
    """Labels given as an array, for the first ``n`` samples, as the task reads them (``Task.check_labels``;
    default classification: class ids)."""
    import numpy as np

    from optim.errors import DataError
    from optim.tasks import get_task

    y = np.asarray(labels)
    if y.ndim == 0 or len(y) < n:
        raise DataError(f"{source}: {len(y) if y.ndim else 0} labels for {n} samples")
    return (task or get_task("classification")).check_labels(y[:n], n, source)


def model_inputs(data: DataLike, onnx_path: Path, recipe: Recipe | None, samples: int | None,
                  labels: Any = None, task=None, what: str = "data"):
    """(x, y, source) for ``onnx_path``: ``data`` as ``--data`` reads it (the command's own loader), or
    an array of model inputs (checked against the model's input). ``labels``: a labels file (for a
    ``--data`` string) or an array of class ids."""
    import numpy as np

    from optim.arguments import input_spec_from_onnx as _input_spec_from_onnx, load_data as _load_data

    if isinstance(data, np.ndarray):
        from optim.data import validate_inputs

        source = f"{what} (a NumPy array)"
        x = validate_inputs(data[:samples] if samples else data, _input_spec_from_onnx(onnx_path), source)
        y = None if labels is None else labels_of(labels, len(x), source, task)
        return x, y, source
    if not isinstance(data, (str, os.PathLike)):
        raise InputError(f"{what} must be a --data string (spec .yaml, .npz, image folder, scenes:N, ...), a path "
                         f"or a NumPy array, got {type(data).__name__}")
    label_file = labels if isinstance(labels, (str, os.PathLike)) else None
    x, y, ds = _load_data(os.fspath(data), onnx_path, recipe, samples,
                          Path(label_file) if label_file is not None else None, task=task)
    if labels is not None and label_file is None:
        y = labels_of(labels, len(x), ds.source, task)
    return x, y, ds.source


def recipe_inputs(data, r: Recipe, samples: int, t):
    """The recipe's data spec ``data`` as its model's inputs: (x, y, source)."""
    from optim.data import prepare

    x, y, ds = prepare(data, r.preprocess, r.input, samples, t)
    return x, y, ds.source


def ints(v: Sequence[int] | str, what: str) -> tuple[int, ...]:
    if isinstance(v, str):
        from optim.arguments import ints as parse

        return parse(v, what)
    vals = tuple(int(i) for i in v)
    if not vals or any(i < 1 for i in vals):
        raise InputError(f"{what} must be positive integers, got {list(v)}")
    return vals


def task_of(given: str | None, r: Recipe | None):
    """The task ``given`` (a name), else the recipe's, else classification."""
    from optim.arguments import task

    return task(given, r)
