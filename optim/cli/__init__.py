"""The ``optim`` command line: thin commands over the stage modules."""

from __future__ import annotations

import sys
import traceback
from typing import Annotated

import typer

from rich.markup import escape

from optim.console import console
from optim.errors import OptimError, first_line

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Export, quantize, check, build (TensorRT), benchmark and report vision models (INT8/FP8/FP16/BF16).",
)
_state = {"debug": False}


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False) -> None:
    _state["debug"] = debug


from optim.cli import evaluate, gpu, model, plugins, run, tuning  # noqa: E402

for _module in (model, tuning, evaluate, gpu, run, plugins):
    _module.register(app)


def main() -> None:
    try:
        app()
    except OptimError as exc:
        if _state["debug"]:
            traceback.print_exc()
            if exc.detail:
                console.print(exc.detail, markup=False)
        console.print(f"[red]error:[/] {escape(str(exc))}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]: nothing half-written was left behind")
        sys.exit(130)
    except Exception as exc:  # a bug in optim or a dependency: one line, unless --debug
        if _state["debug"]:
            traceback.print_exc()
        first = first_line(str(exc))  # may be empty: the type name is printed anyway
        console.print(f"[red]internal error:[/] {type(exc).__name__}: {escape(first)} "
                      "(rerun with --debug for the traceback)")
        sys.exit(1)
