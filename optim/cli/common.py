"""Helpers shared by the commands: the --recipe option, and (from ``optim.arguments``, which the
Python API reads its arguments through too) number lists, recipes, data for a model file, the task's name."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from optim.arguments import (  # the commands' names for them
    ints as _ints, load_data as _load_data, recipe_from as _recipe, task_name as _task_name,
)

__all__ = ["RecipeOpt", "_ints", "_load_data", "_recipe", "_task_name"]

RecipeOpt = Annotated[Optional[Path], typer.Option("--recipe", help="Take preprocessing (and defaults) from this recipe.")]
