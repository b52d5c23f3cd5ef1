"""Triton's model configuration schema, offline: the ``ModelConfig`` message of Triton's
``model_config.proto`` as the tritonclient package ships it (``tritonclient/grpc/model_config_pb2.py``).

That file is loaded on its own, under a private module name: importing the
``tritonclient.grpc`` package needs grpcio, the generated file does not. A config is
written by building the message and printing it with ``text_format`` (valid by
construction) and is checked by parsing it back with ``text_format.Parse``, which refuses
unknown fields and unknown enum values the way Triton's own parser does.
"""

from __future__ import annotations

import importlib.util
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import onnx

from optim.errors import BackendUnavailable, InputError

MODULE = "optim_triton_model_config_pb2"
INSTALL_HINT = "bash scripts/setup.sh (requirements.txt pins tritonclient)"

#: ONNX element type -> Triton DataType name
ONNX_TO_TRITON = {
    onnx.TensorProto.BOOL: "TYPE_BOOL", onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.UINT16: "TYPE_UINT16", onnx.TensorProto.UINT32: "TYPE_UINT32",
    onnx.TensorProto.UINT64: "TYPE_UINT64", onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.INT16: "TYPE_INT16", onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.STRING: "TYPE_STRING", onnx.TensorProto.BFLOAT16: "TYPE_BF16",
}


def triton_dtype(elem_type: int, where: str) -> str:
    if elem_type not in ONNX_TO_TRITON:
        name = onnx.TensorProto.DataType.Name(elem_type) if elem_type in onnx.TensorProto.DataType.values() else elem_type
        raise InputError(f"{where}: ONNX type {name} has no Triton data type")
    return ONNX_TO_TRITON[elem_type]


def module_path() -> Path:
    """Where the installed tritonclient keeps ``grpc/model_config_pb2.py`` (without importing it)."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable(f"tritonclient is not installed, so Triton configs cannot be validated; {INSTALL_HINT}")
    for base in spec.submodule_search_locations:
        p = Path(base) / "grpc" / "model_config_pb2.py"
        if p.is_file():
            return p
    raise BackendUnavailable(f"tritonclient {version()} has no grpc/model_config_pb2.py; {INSTALL_HINT}")


def version() -> str:
    try:
        return metadata.version("tritonclient")
    except metadata.PackageNotFoundError:
        return "not installed"


@lru_cache(maxsize=1)
def pb2() -> ModuleType:
    """The generated module (``ModelConfig``, ``ModelInput``, ``DataType`` ...)."""
    path = module_path()
    spec = importlib.util.spec_from_file_location(MODULE, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[MODULE] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as exc:  # a protobuf runtime that refuses this generated code
        sys.modules.pop(MODULE, None)
        raise BackendUnavailable(f"cannot load Triton's model config schema from {path}: "
                                 f"{type(exc).__name__}: {exc}") from None
    return mod


def describe() -> str:
    return f"Triton's model_config.proto (tritonclient {version()}, grpc/model_config_pb2.py)"


def new_config(**fields: Any):
    return pb2().ModelConfig(**fields)


def to_text(config) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def parse(text: str, where: str = "config.pbtxt"):
    """``text`` parsed into a ModelConfig; InputError naming ``where``, the line and the problem."""
    from google.protobuf import text_format

    try:
        return text_format.Parse(text, pb2().ModelConfig())
    except text_format.ParseError as exc:
        raise InputError(f"{where} is not a valid Triton model config: {exc}") from None
