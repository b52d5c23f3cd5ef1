"""The CPU backends a run checks and times every entry on, and which file each one runs.

A recipe's ``backends:`` names CPU backend families (default: every one installed here).
``onnxruntime`` runs each entry's own file. ``openvino`` runs the INT8/FP8 Q/DQ files as
they are, and the FP16/BF16 entries as the FP32 file with OpenVINO's inference precision
set to f16/bf16 (how OpenVINO runs a model in reduced precision on a CPU: the AutoCast file
is for TensorRT). Results of the first family keep their plain names (``check/TAG.json``),
the others get ``@family`` (``check/TAG@openvino.json``).
"""

from __future__ import annotations

import dataclasses
import importlib.util

from optim.artifacts import Artifact
from optim.runfolder.entry import FAMILIES, PRIMARY, Entry

#: CPU backend families, in report order (FAMILIES, PRIMARY: defined with the run folder's names)
_HINT = {"bf16": "openvino-bf16", "fp16": "openvino-f16"}


def installed() -> list[str]:
    """The families registered as backends whose library is installed here (ONNX Runtime always is:
    it is a dependency)."""
    from optim.backends.registry import backend_names

    names = backend_names()
    return [f for f in FAMILIES if f == PRIMARY or (f in names and importlib.util.find_spec(f) is not None)]


def route(family: str, tag: str, model: Artifact, fp32: Artifact) -> tuple[Artifact, str]:
    """(the file to run, the registered backend name) for one entry on one family."""
    if family == PRIMARY:
        return model, "auto"
    precision = Entry.parse(tag).precision
    if family == "openvino" and precision in _HINT and not model.path.name.endswith(".frames.onnx"):
        return dataclasses.replace(fp32, tag=tag), _HINT[precision]
    return model, family


def result_name(tag: str, family: str) -> str:
    """``TAG`` on the first family, ``TAG@family`` on the others (``optim.runfolder.Entry.result_name``)."""
    return Entry.parse(tag).replace(backend=family).result_name


def split(name: str) -> tuple[str, str]:
    """``TAG@family`` -> (TAG, family); a plain TAG is the primary family's (``optim.runfolder.Entry.parse``)."""
    e = Entry.parse(name)
    return e.tag, e.backend
