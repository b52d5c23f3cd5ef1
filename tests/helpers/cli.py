"""optim's command line as a user meets it: in a subprocess (``optim``) or in this process (``invoke``)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import REPO


def optim(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPTIM_NO_PROGRESS": "1", "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, "-m", "optim", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def assert_one_line_error(p: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == code, p.stderr
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in p.stderr + p.stdout
    for f in fragments:
        assert f in lines[0], lines[0]


def invoke(*args) -> tuple[int, str, BaseException | None]:
    """optim in this process: (exit code, stdout + stderr, the OptimError raised or None)."""
    from typer.testing import CliRunner

    from optim.cli import app

    res = CliRunner().invoke(app, [str(a) for a in args])
    exc = res.exception if res.exception is not None and not isinstance(res.exception, SystemExit) else None
    return res.exit_code, res.output, exc


def detect_app():
    """A typer app with only optim's detection commands (``add-nms``)."""
    import typer

    from optim.cli import detect

    app = typer.Typer(add_completion=False, rich_markup_mode=None)
    app.callback()(lambda: None)
    detect.register(app)
    return app
