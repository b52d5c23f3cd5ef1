"""Terminal output: one rich console (stderr) and a progress-bar factory."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)

T = TypeVar("T")

console = Console(stderr=True, highlight=False, soft_wrap=True)


def info(msg: str) -> None:
    console.print(msg)


def warn(msg: str) -> None:
    """A line the user should act on or know about (printed in yellow, prefixed "warning:")."""
    console.print(f"[yellow]warning:[/] {msg}")


def skipped(stage: str, why: str) -> None:
    """The one visible line for a stage that did not run here."""
    console.print(f"[yellow]skipped[/] {stage}: {why}")


def _quiet() -> bool:
    return os.environ.get("OPTIM_NO_PROGRESS") == "1" or not sys.stderr.isatty()


@contextmanager
def progress(disable: bool = False) -> Iterator[Progress]:
    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
        disable=disable or _quiet(),
    )
    with bar:
        yield bar


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar (hidden when stderr is not a terminal)."""
    with progress() as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
