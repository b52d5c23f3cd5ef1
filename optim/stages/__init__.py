"""The stages, one module (or folder, whose ``stage.py`` is the stage) each, registered in the order a
run takes them.

A stage module has ``NAME``, ``TOOLS`` (the packages whose versions change its output, or a
function giving them), ``SUMMARY`` (what it makes, in a few words), ``Settings`` and
``run(inputs, settings, ctx) -> StageOutput`` (``optim.executor`` runs it and keeps its cache).
``optim doctor`` reads this registry: it lists every stage, in order, with whether it can run on
the machine. A stage says so with ``doctor(machine, target, hardware_compatibility)``, a list of
(what, why it cannot run or None); without one, it can run where its ``TOOLS`` are installed.
``register_stage`` adds a stage module (a plugin, a test's toy stage), ``unregister_stage`` takes it
away again.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: the built-in stages, in the order ``optim run`` takes them
_BUILTIN = {
    "export": "optim.stages.export",
    "quantize": "optim.stages.quantize.stage",
    "tune": "optim.stages.tune.stage",
    "study": "optim.stages.study",
    "fuse": "optim.stages.fuse",
    "resize": "optim.stages.resize",
    "nms": "optim.stages.nms",
    "build": "optim.stages.build",
    "check": "optim.stages.check",
    "bench": "optim.stages.bench",
    "report": "optim.stages.report.stage",
    "deploy": "optim.stages.deploy.stage",
}
_ADDED: dict[str, ModuleType] = {}


def register_stage(module: ModuleType) -> ModuleType:
    """Add a stage module (after the built-in ones) under its ``NAME``."""
    name = module.NAME
    if name in _BUILTIN:
        raise ValueError(f"stage '{name}' is built in")
    _ADDED[name] = module
    return module


def unregister_stage(name: str) -> None:
    _ADDED.pop(name, None)


def stage_names() -> tuple[str, ...]:
    return (*_BUILTIN, *_ADDED)


def get_stage(name: str) -> ModuleType:
    """The stage module registered under ``name`` (a built-in one is imported here, when asked for)."""
    if name in _ADDED:
        return _ADDED[name]
    if name not in _BUILTIN:
        raise KeyError(f"unknown stage '{name}'; stages are {', '.join(stage_names())}")
    return importlib.import_module(_BUILTIN[name])


def stages() -> list[ModuleType]:
    """Every registered stage module, in order."""
    return [get_stage(n) for n in stage_names()]


def summary(stage: ModuleType) -> str:
    """What a stage makes: its ``SUMMARY``, else its docstring's first line."""
    return getattr(stage, "SUMMARY", "") or (stage.__doc__ or stage.NAME).strip().splitlines()[0]
