"""The ``optim`` command line: thin commands over the stage modules."""

from __future__ import annotations

import errno
import signal
import sys
import traceback
from typing import Annotated

import typer

from rich.markup import escape

from optim.console import console
from optim.errors import OptimError, first_line

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    help="Export, quantize, check, build (TensorRT), benchmark and report vision models (INT8/FP8/FP16/BF16).",
)
_state = {"debug": False}


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False) -> None:
    _state["debug"] = debug


from optim.cli import deploy, detect, evaluate, gpu, model, plugins, run, tuning  # noqa: E402

for _module in (model, tuning, evaluate, gpu, run, plugins, deploy, detect):
    _module.register(app)


def main() -> None:
    from optim.process import private_tmp, signals

    with signals(), private_tmp():  # SIGINT/SIGTERM unwind through every cleanup; temp files go with it
        code = _main_once()
    sys.exit(code)


def _main_once() -> int:
    from optim.process import Interrupted, current, forget, tmp_base

    forget()
    try:
        app(prog_name="optim", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Interrupted as exc:
        doing = current()
        how = "interrupted" if exc.signum == signal.SIGINT else f"interrupted ({exc})"
        console.print(f"[red]{how}[/]" + escape(f" during {doing}" if doing else "")
                      + ": nothing half-written; rerun to continue")
        return exc.exit_code
    except OptimError as exc:
        if _state["debug"]:
            traceback.print_exc()
            if exc.detail:
                console.print(exc.detail, markup=False)
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return exc.exit_code
    except KeyboardInterrupt:  # raised by a library itself, not by the signal
        console.print("[red]interrupted[/]: nothing half-written; rerun to continue")
        return 130
    except Exception as exc:  # a bug in optim or a dependency: one line, unless --debug
        if _state["debug"]:
            traceback.print_exc()
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            # a write outside optim's own writers (a tool's temporary files) hit a full disk
            doing = current()
            where = (f"writing {exc.filename}" if exc.filename
                     else f"a write in the temporary folder {tmp_base()} failed (tools write their temporary "
                          "files there; set TMPDIR to move them)")
            console.print("[red]error:[/] " + escape((f"{doing}: " if doing else "") + f"{where}: "
                                                     f"{exc.strerror or exc} [{errno.errorcode[exc.errno]}]; "
                                                     "free some space or write elsewhere"))
            return 4
        first = first_line(str(exc))  # may be empty: the type name is printed anyway
        console.print(f"[red]internal error:[/] {type(exc).__name__}: {escape(first)} "
                      "(rerun with --debug for the traceback)")
        return 1
