"""Helpers shared by the commands: the --recipe option, and (from ``optim.arguments``, which the
Python API reads its arguments through too) number lists, recipes, data for a model file, the task."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from optim.arguments import (  # noqa: F401  (the commands' names for them)
    fused_op as _fused_op, input_spec_from_onnx as _input_spec_from_onnx, ints as _ints, load_data as _load_data,
    load_frames as _load_frames, names as _names, preprocess_for as _preprocess_for, recipe_from as _recipe,
    task as _task, task_name as _task_name,
)

RecipeOpt = Annotated[Optional[Path], typer.Option("--recipe", help="Take preprocessing (and defaults) from this recipe.")]
