"""The one module that calls TensorRT. Everything else talks to ``TensorRT`` / ``EngineSession``.

The ``tensorrt`` module is passed in (``TensorRT(module, flavour)``), so CPU tests inject a
recording fake; ``TensorRT.load(flavour)`` imports the real one (``tensorrt``, or
``tensorrt_rtx`` for TensorRT-RTX, which shares these names and builds without a GPU) or
raises BackendUnavailable with the install command. What the flavours do differently
(timing cache, compute-capability targets, weak typing) is data in
``optim.backends.trt_flavour``. Written for the TensorRT 10 and 11 Python APIs: every name
below exists in both (tests/test_tensorrt_api_check.py collects them from this file's
code and checks them against both versions' binding sources, and against the installed
TensorRT-RTX bindings), except the names that an ``EnginePlan`` passes for its major
(builder flags, network creation flags) and the TensorRT-RTX-only compute-capability
names, reached only through ``plan.compute_capabilities`` (empty in every TensorRT 10/11 plan):

module ``tensorrt``
    ``__version__``, ``ILogger`` (subclassed; ``ILogger.INTERNAL_ERROR``/``ERROR``/``WARNING``),
    ``init_libnvinfer_plugins(logger, "")``, ``get_plugin_registry()``, ``Builder(logger)``,
    ``OnnxParser(network, logger)``, ``Runtime(logger)``,
    ``NetworkDefinitionCreationFlag.<name>`` (STRONGLY_TYPED on TensorRT 10 only: ``plan.network_flags``),
    ``BuilderFlag.<name>`` (TF32, VERSION_COMPATIBLE; FP16/BF16 on TensorRT 10 only: the names an
    ``EnginePlan`` lists), ``MemoryPoolType.WORKSPACE``,
    ``HardwareCompatibilityLevel.NONE``/``AMPERE_PLUS``, ``ProfilingVerbosity.DETAILED``,
    ``LayerInformationFormat.JSON``, ``TensorIOMode.INPUT``
``IPluginRegistry``
    ``load_library(path)`` (returns None on failure)
``Builder``
    ``create_network(flags)``, ``create_builder_config()``, ``create_optimization_profile()``,
    ``build_serialized_network(network, config)`` (returns None on failure)
``OnnxParser``
    ``parse_from_file(path)``, ``num_errors``, ``get_error(i)`` (a ParserError: ``desc()``,
    ``node_name()``, ``node_operator()``)
``IBuilderConfig``
    ``set_flag(f)``, ``clear_flag(f)``, ``set_memory_pool_limit(pool, bytes)``,
    ``num_compute_capabilities`` and ``set_compute_capability(ComputeCapability.<name>, i)`` (TensorRT-RTX),
    ``builder_optimization_level``, ``hardware_compatibility_level``, ``profiling_verbosity``,
    ``create_timing_cache(bytes)``, ``set_timing_cache(cache, ignore_mismatch)``,
    ``get_timing_cache()``, ``add_optimization_profile(profile)``
``ITimingCache``
    ``serialize()``
``IOptimizationProfile``
    ``set_shape(name, min, opt, max)``
``Runtime``
    ``engine_host_code_allowed``, ``deserialize_cuda_engine(bytes)`` (returns None on failure)
``ICudaEngine``
    ``num_io_tensors``, ``get_tensor_name(i)``, ``get_tensor_mode(name)``, ``get_tensor_dtype(name)``
    (``.name`` of the DataType), ``get_tensor_shape(name)``, ``get_tensor_profile_shape(name, 0)``,
    ``create_execution_context()``, ``create_engine_inspector()``
``IEngineInspector``
    ``execution_context`` (set), ``get_engine_information(format)``
``IExecutionContext``
    ``set_input_shape(name, shape)``, ``get_tensor_shape(name)``, ``set_tensor_address(name, ptr)``,
    ``execute_async_v3(stream_handle)``

Strongly typed networks take their precisions from the graph (Q/DQ, casts); the plan
never sets FP16/BF16/INT8/FP8 flags for them (the Python API documents STRONGLY_TYPED:
"Setting layer precision and layer output types is not allowed"; TensorRT 10.12+ marks
those precision flags "Deprecated ... Superseded by strong typing", and TensorRT 11
removed them, with every network strongly typed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optim.errors import BackendUnavailable, BuildError, ModelError  # noqa: F401  (BuildError re-exported)
from optim.backends.trt_flavour import FLAVOURS, Flavour
from optim.install import INSTALL


def _import(flavour: str = "tensorrt") -> tuple[Any, str]:
    if flavour not in FLAVOURS:
        raise BackendUnavailable(f"unknown TensorRT flavour '{flavour}'; known: {', '.join(FLAVOURS)}")
    try:
        if flavour == "tensorrt_rtx":
            import tensorrt_rtx as module
        else:
            import tensorrt as module
        return module, ""
    except Exception as exc:  # a stub wheel fails with OSError deep in its __init__
        return None, (str(exc).strip() or type(exc).__name__).splitlines()[0][:160]


def installed_version(flavour: str = "tensorrt") -> tuple[str | None, str]:
    """The importable flavour's version (``tensorrt`` or ``tensorrt_rtx``), or None and why its import fails."""
    trt, why = _import(flavour)
    return (str(trt.__version__), "") if trt is not None else (None, why)


_WHERE = re.compile(r"\s+In \w+ at [/\w].*$")
_PREFIX = re.compile(r"^\s*(\[[^\]]*\]\s*|[\w:]+:\s+(?=\S)|Error Code \d+:\s*[^(]*\()")


def one_line(message: str) -> str:
    """A TensorRT log or parser message cut to what a user reads: no ``[file::func::line] Error Code N:
    Kind (`` prefix, no `` In func at /_src/...)`` suffix, no Assertion text, first line only."""
    first = (message.strip().splitlines() or [""])[0]
    text = first
    while _PREFIX.match(text):  # "IBuilder::x: Error Code 1: Myelin ([pass.cpp:1500: run_passes] ..."
        text = _PREFIX.sub("", text, count=1)
    text = _WHERE.sub("", text).strip()
    text = re.sub(r"^Assertion .*? failed\.\s*", "", text)
    return (text or first)[:300]


def parser_error(err: Any) -> str:
    """One line from an ``OnnxParser`` error: the node, its op and the reason the parser gives."""
    desc = str(err.desc()) if hasattr(err, "desc") else str(err)
    node, op = (err.node_name(), err.node_operator()) if hasattr(err, "node_name") else ("", "")
    reasons = [ln for ln in desc.splitlines() if "Error Code" in ln and "cudaError" not in ln]
    reason = one_line(reasons[0]) if reasons else one_line(desc)
    if node and reason.startswith(f"{node}: "):
        reason = reason[len(node) + 2:]
    return f"node {node} ({op}): {reason}" if node else reason


def _make_logger(trt: Any) -> Any:
    """A TensorRT logger that keeps warnings and errors instead of printing them."""

    class _Log(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[tuple[str, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                self.messages.append(("error", str(msg)))
            elif severity == trt.ILogger.WARNING:
                self.messages.append(("warning", str(msg)))

    return _Log()


@dataclass(frozen=True)
class IOTensor:
    name: str
    is_input: bool
    dtype: str  # TensorRT DataType name: FLOAT, HALF, BF16, INT8, INT32, INT64, BOOL, UINT8, FP8
    shape: tuple[int, ...]  # -1 for dynamic sizes
    profile: tuple[tuple[int, ...], ...] = ()  # inputs: min, opt, max of profile 0


class TensorRT:
    def __init__(self, module: Any, flavour: str = "tensorrt") -> None:
        self.trt = module
        self.flavour: Flavour = FLAVOURS[flavour]
        self.logger = _make_logger(module)
        self._plugins_loaded: set[str] = set()
        self._runtimes: list[Any] = []  # a runtime must outlive the engines it deserialized

    @classmethod
    def load(cls, flavour: str = "tensorrt") -> TensorRT:
        trt, why = _import(flavour)
        if trt is None:
            raise BackendUnavailable(f"{FLAVOURS[flavour].label} is not installed here ({why}); "
                                     f"install: {INSTALL[flavour]}")
        return cls(trt, flavour)

    @property
    def version(self) -> str:
        return str(self.trt.__version__)

    @property
    def major(self) -> int:
        return int(str(self.version).split(".", 1)[0])

    def warnings(self) -> list[str]:
        return [text for kind, text in self.logger.messages if kind == "warning"]

    def _last_error(self, default: str) -> str:
        errors = [text for kind, text in self.logger.messages if kind == "error"]
        return (errors[-1].strip().splitlines() or [default])[0][:300] if errors else default

    def load_plugins(self, paths: list[Path]) -> None:
        """TensorRT's own plugins, then each library in ``paths`` (before parsing or deserializing)."""
        if not self._plugins_loaded:
            self.trt.init_libnvinfer_plugins(self.logger, "")
            self._plugins_loaded.add("")
        registry = self.trt.get_plugin_registry()
        for p in paths:
            if str(p) in self._plugins_loaded:
                continue
            if not Path(p).is_file():
                raise ModelError(f"plugin library not found: {p}")
            if registry.load_library(str(p)) is None:
                raise BuildError(f"TensorRT could not load plugin library {p} "
                                 f"({self._last_error('load_library returned None')})")
            self._plugins_loaded.add(str(p))

    def build(self, onnx_path: Path, plan: Any, timing_cache: bytes) -> tuple[bytes, bytes, bool]:
        """Parse ``onnx_path`` and build it as ``plan`` says (an ``optim.stages.build.EnginePlan``).

        Returns (serialized engine, serialized timing cache, whether the given cache was used).
        """
        trt = self.trt
        if plan.tensorrt_major != self.major:
            raise BuildError(f"the engine plan was made for TensorRT {plan.tensorrt_major}, but this is TensorRT "
                             f"{self.version}: plan it with this version (optim.stages.build.plan_engine)")
        self.load_plugins(list(plan.plugins))
        builder = trt.Builder(self.logger)
        flags = 0
        for name in plan.network_flags:  # STRONGLY_TYPED on TensorRT 10; none on 11 (always strongly typed)
            flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = [parser_error(parser.get_error(i)) for i in range(parser.num_errors)] or ["unknown parser error"]
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            raise BuildError(f"{self.flavour.label} cannot parse {Path(onnx_path).name}: {errors[0]}{more}")
        config = builder.create_builder_config()
        for name in plan.flags_on:
            config.set_flag(getattr(trt.BuilderFlag, name))
        for name in plan.flags_off:
            config.clear_flag(getattr(trt.BuilderFlag, name))
        if plan.workspace_bytes:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
        config.builder_optimization_level = plan.optimization_level
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, plan.hardware_compatibility)
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        if plan.compute_capabilities:  # TensorRT-RTX: the GPUs the engine is for
            config.num_compute_capabilities = len(plan.compute_capabilities)
        for i, cc in enumerate(plan.compute_capabilities):
            config.set_compute_capability(getattr(trt.ComputeCapability, cc), i)
        cache_used = False
        if timing_cache and self.flavour.timing_cache:
            try:
                cache = config.create_timing_cache(timing_cache)
                cache_used = cache is not None and bool(config.set_timing_cache(cache, False))
            except Exception:  # corrupt bytes: a cache is an optimisation, never a reason to fail
                cache_used = False
        if self.flavour.timing_cache and not cache_used:  # none yet, or another GPU / version wrote it
            config.set_timing_cache(config.create_timing_cache(b""), False)
        profile = builder.create_optimization_profile()
        p = plan.profile
        profile.set_shape(p.input, p.min, p.opt, p.max)
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BuildError(f"{self.flavour.label} could not build {Path(onnx_path).name}: "
                             f"{one_line(self._last_error('no engine returned'))}")
        cache_out = bytes(config.get_timing_cache().serialize()) if self.flavour.timing_cache else b""
        return bytes(serialized), cache_out, cache_used

    def deserialize(self, data: bytes, *, host_code: bool = False, what: str = "engine") -> Any:
        runtime = self.trt.Runtime(self.logger)
        if host_code:  # version-compatible plans carry a lean runtime; optim only loads plans it built
            runtime.engine_host_code_allowed = True
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise ModelError(f"TensorRT could not load {what}: {self._last_error('deserialize returned None')}")
        self._runtimes.append(runtime)
        return engine

    def session(self, engine: Any) -> EngineSession:
        return EngineSession(self.trt, engine)


class EngineSession:
    """One engine and one execution context: I/O description, shapes, addresses, enqueue."""

    def __init__(self, trt: Any, engine: Any) -> None:
        self.trt, self.engine = trt, engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendUnavailable("TensorRT could not create an execution context (out of GPU memory?)")
        self.io = [self._describe(engine.get_tensor_name(i)) for i in range(engine.num_io_tensors)]

    def _describe(self, name: str) -> IOTensor:
        e = self.engine
        is_input = e.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT
        profile = tuple(tuple(s) for s in e.get_tensor_profile_shape(name, 0)) if is_input else ()
        return IOTensor(name, is_input, e.get_tensor_dtype(name).name, tuple(e.get_tensor_shape(name)), profile)

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> None:
        if not self.context.set_input_shape(name, tuple(shape)):
            raise ModelError(f"engine input '{name}' does not accept shape {list(shape)} (outside its profile)")

    def tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.context.get_tensor_shape(name))

    def bind(self, name: str, address: int) -> None:
        self.context.set_tensor_address(name, address)

    def enqueue(self, stream_handle: int) -> None:
        if not self.context.execute_async_v3(stream_handle):
            raise BackendUnavailable("TensorRT execute_async_v3 failed (see the TensorRT log with --debug)")

    def layer_information(self) -> str:
        """Per-layer JSON (names, precisions/formats, tactics) for the shapes set on this context."""
        inspector = self.engine.create_engine_inspector()
        inspector.execution_context = self.context
        return str(inspector.get_engine_information(self.trt.LayerInformationFormat.JSON))
