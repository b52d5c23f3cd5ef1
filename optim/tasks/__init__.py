"""Tasks: a registry keyed by name (classification and detection built in; ``register_task`` adds one).

A recipe's ``task:`` names one; ``optim doctor`` lists them (``task_names``)."""

from __future__ import annotations

from optim.errors import InputError
from optim.tasks.base import Column, Fidelity, GateResult, Task

_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Register a task class under ``cls.name`` (usable as a decorator)."""
    _TASKS[cls.name] = cls
    return cls


def unregister_task(name: str) -> None:
    _TASKS.pop(name, None)


def task_names() -> list[str]:
    _builtin()
    return sorted(_TASKS)


def get_task(name: str) -> Task:
    _builtin()
    if name not in _TASKS:
        raise InputError(f"unknown task '{name}'; known: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]()


def _builtin() -> None:
    import optim.tasks.classification  # noqa: F401  (registers itself)
    import optim.tasks.detection  # noqa: F401


__all__ = ["Column", "Fidelity", "GateResult", "Task", "get_task", "register_task", "task_names",
           "unregister_task"]
