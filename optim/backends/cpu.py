"""The CPU backends a run checks and times every entry on, and which file each one runs.

They are the backends registered as a CPU ``family`` (``optim.backends.registry``), in
registration order: ``onnxruntime``, then ``openvino`` (``optim.backends.select``), then any other
registered. A recipe's ``backends:`` names some of them (default: every one installed here). Each
family runs each entry's own file, except the precisions its ``precision_hints`` name: those run
the FP32 file with the runtime's inference precision set (OpenVINO's f16/bf16). Results of the
first family keep their plain names (``check/TAG.json``), the others get ``@family``
(``check/TAG@openvino.json``).
"""

from __future__ import annotations

import dataclasses

from optim.artifacts import Artifact, installed_versions
from optim.backends.registry import families, get_backend
from optim.runfolder.entry import PRIMARY, Entry

__all__ = ["PRIMARY", "families", "installed", "result_name", "route", "split"]


def installed() -> list[str]:
    """The families whose package is installed here (ONNX Runtime always is: it is a dependency)."""
    packages = {f: get_backend(f).package for f in families()}
    have = installed_versions(p for p in packages.values() if p)
    return [f for f, package in packages.items() if f == PRIMARY or not package or package in have]


def route(family: str, tag: str, model: Artifact, fp32: Artifact) -> tuple[Artifact, str]:
    """(the file to run, the registered backend name) for one entry on one family."""
    if family == PRIMARY:
        return model, "auto"
    hinted = get_backend(family).precision_hints.get(Entry.parse(tag).precision)
    if hinted and not model.path.name.endswith(".frames.onnx"):
        return dataclasses.replace(fp32, tag=tag), hinted
    return model, family


def result_name(tag: str, family: str) -> str:
    """``TAG`` on the first family, ``TAG@family`` on the others (``optim.runfolder.Entry.result_name``)."""
    return Entry.parse(tag).replace(backend=family).result_name


def split(name: str) -> tuple[str, str]:
    """``TAG@family`` -> (TAG, family); a plain TAG is the primary family's (``optim.runfolder.Entry.parse``)."""
    e = Entry.parse(name)
    return e.tag, e.backend
