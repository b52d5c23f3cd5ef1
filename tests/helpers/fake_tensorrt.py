"""A recording fake of the ``tensorrt`` module, for CPU tests of optim's own logic.

It records which TensorRT calls and flags optim makes, and returns just enough for
optim's code to carry on. It is NOT TensorRT: it builds nothing, checks no network,
and a test that passes with it says nothing about whether TensorRT accepts the call.
Only the GPU suite (tests/gpu/) is evidence of that.
"""

from __future__ import annotations

import json
from typing import Any


class _Enum:
    """Members are their own qualified names, e.g. BuilderFlag.FP16 == "BuilderFlag.FP16"."""

    def __init__(self, name: str, values: dict[str, int] | None = None) -> None:
        self._name, self._values = name, values or {}

    def __getattr__(self, member: str) -> Any:
        if member.startswith("_"):
            raise AttributeError(member)
        if member in self._values:
            return self._values[member]
        return _Member(f"{self._name}.{member}")


class _Member(str):
    @property
    def name(self) -> str:
        return self.split(".", 1)[1]


class FakeTensorRT:
    __version__ = "10.16.1.11"

    def __init__(self, *, parse_ok: bool = True, build_ok: bool = True, layers: list | None = None) -> None:
        self.calls: list[tuple] = []
        self.parse_ok, self.build_ok = parse_ok, build_ok
        self.layers = layers if layers is not None else [
            {"Name": "conv1", "LayerType": "CaskConvolution", "Inputs": [{"Format/Datatype": "Int8 NCHW"}]},
            {"Name": "reformat", "LayerType": "Reformat", "Inputs": [{"Format/Datatype": "Row major linear FP32"}]},
            {"Name": "fc", "LayerType": "CaskGemm", "Inputs": [{"Format/Datatype": "Row major linear FP32"}]},
        ]
        self.profile: tuple = ()
        self.NetworkDefinitionCreationFlag = _Enum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 0})
        for name in ("BuilderFlag", "MemoryPoolType", "HardwareCompatibilityLevel", "ProfilingVerbosity",
                     "LayerInformationFormat", "TensorIOMode"):
            setattr(self, name, _Enum(name))
        fake = self

        class ILogger:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

            def __init__(self) -> None:
                fake.calls.append(("ILogger.__init__",))

        self.ILogger = ILogger

    # -- module functions and classes ---------------------------------------------------------
    def init_libnvinfer_plugins(self, logger: Any, namespace: str) -> bool:
        self.calls.append(("init_libnvinfer_plugins", namespace))
        return True

    def get_plugin_registry(self) -> Any:
        return _Recorder(self, "registry", load_library=lambda path: "handle" if "missing" not in path else None)

    def Builder(self, logger: Any) -> Any:  # noqa: N802 - mirrors tensorrt.Builder
        self.calls.append(("Builder",))
        return _Builder(self)

    def OnnxParser(self, network: Any, logger: Any) -> Any:  # noqa: N802
        return _Recorder(self, "parser", parse_from_file=lambda path: self.parse_ok,
                         get_error=lambda i: f"In node 3 (Conv): unsupported thing {i}",
                         num_errors=0 if self.parse_ok else 2)

    def Runtime(self, logger: Any) -> Any:  # noqa: N802
        return _Recorder(self, "runtime", deserialize_cuda_engine=lambda data: _Engine(self)
                         if data.startswith(b"FAKE-PLAN") else None)


class _Recorder:
    """Records every method call and attribute set as ("<what>.<name>", args...)."""

    def __init__(self, fake: FakeTensorRT, what: str, **behaviour: Any) -> None:
        object.__setattr__(self, "_fake", fake)
        object.__setattr__(self, "_what", what)
        object.__setattr__(self, "_behaviour", behaviour)

    def __getattr__(self, name: str) -> Any:
        b = self._behaviour.get(name)
        if b is not None and not callable(b):
            return b

        def call(*args: Any) -> Any:
            self._fake.calls.append((f"{self._what}.{name}", *args))
            return b(*args) if b is not None else True
        return call

    def __setattr__(self, name: str, value: Any) -> None:
        self._fake.calls.append((f"{self._what}.{name}=", value))


class _Cache:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> bytes:
        return b"CACHE" + bytes([len(self.data) % 250])


class _Builder:
    def __init__(self, fake: FakeTensorRT) -> None:
        self.fake = fake
        self.config = _Recorder(fake, "config", create_timing_cache=self._cache, set_timing_cache=self._set_cache,
                                get_timing_cache=lambda: self.cache)
        self.cache: _Cache | None = None

    def _cache(self, data: bytes) -> _Cache:
        return _Cache(data)

    def _set_cache(self, cache: _Cache, ignore_mismatch: bool) -> bool:
        self.cache = cache
        return cache.data != b"FOREIGN"

    def create_network(self, flags: int) -> Any:
        self.fake.calls.append(("builder.create_network", flags))
        return _Recorder(self.fake, "network")

    def create_builder_config(self) -> Any:
        return self.config

    def create_optimization_profile(self) -> Any:
        def set_shape(name, mn, opt, mx):
            self.fake.profile = (name, tuple(mn), tuple(opt), tuple(mx))
        return _Recorder(self.fake, "profile", set_shape=set_shape)

    def build_serialized_network(self, network: Any, config: Any) -> bytes | None:
        self.fake.calls.append(("builder.build_serialized_network",))
        return b"FAKE-PLAN" + json.dumps(self.fake.profile).encode() if self.fake.build_ok else None


class _Engine:
    def __init__(self, fake: FakeTensorRT) -> None:
        self.fake = fake
        name, mn, opt, mx = fake.profile or ("input", (1, 3, 16, 16), (1, 3, 16, 16), (8, 3, 16, 16))
        self.inp, self.shapes = name, [mn, opt, mx]
        self.num_io_tensors = 2

    def get_tensor_name(self, i: int) -> str:
        return [self.inp, "logits"][i]

    def get_tensor_mode(self, name: str) -> str:
        return self.fake.TensorIOMode.INPUT if name == self.inp else self.fake.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> Any:
        return _Member("DataType.FLOAT")

    def get_tensor_shape(self, name: str) -> tuple:
        return (-1, *self.shapes[0][1:]) if name == self.inp else (-1, 5)

    def get_tensor_profile_shape(self, name: str, profile: int) -> list:
        return self.shapes

    def create_execution_context(self) -> Any:
        return _Recorder(self.fake, "context", get_tensor_shape=lambda name: (1, 5),
                         set_input_shape=lambda name, shape: shape[0] <= self.shapes[2][0])

    def create_engine_inspector(self) -> Any:
        return _Recorder(self.fake, "inspector",
                         get_engine_information=lambda fmt: json.dumps({"Layers": self.fake.layers}))


def names(fake: FakeTensorRT) -> list[str]:
    return [c[0] for c in fake.calls]
