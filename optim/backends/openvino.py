"""OpenVINO on the CPU: an ONNX file compiled by OpenVINO's CPU plugin, with the precision it really ran in.

``OpenVinoRunner(path, threads=..., precision=None|"bf16"|"f16", mode="latency"|"throughput")``:

- ``precision=None`` runs the file's own types with OpenVINO's inference precision set to f32
  (OpenVINO's CPU default on an AVX-512 CPU is bf16, which would not be an FP32 number);
  ``"bf16"``/``"f16"`` set ``INFERENCE_PRECISION_HINT``. OpenVINO quietly runs another precision
  where the CPU lacks one (2026.4: f16 needs AVX512_FP16 or AVX2-VNNI-2, else it keeps its default,
  bf16 on AVX-512 CPUs, f32 elsewhere; bf16 is accepted on any AVX-512 CPU, emulated without
  AVX512_BF16). The runner reads back the precision the compiled model uses and the precision of
  every Conv/MatMul layer in OpenVINO's runtime graph, and ``method`` says both, with the CPU
  features that decide the speed (``optim.backends.machine.cpu_info``). Where the precision that ran is
  not the one asked for, or the CPU has no native instructions for it, ``method`` and
  ``timing_note`` say so: no BF16 speed is claimed on a CPU without BF16.
- Q/DQ INT8 files (modelopt's TensorRT placement, ORT ``quantize_static``) run with OpenVINO's
  integer kernels where it fuses the Q/DQ pairs; the layer precisions in ``method`` show it.
  FP8 Q/DQ files load and run as float arithmetic (no FP8 kernels on a CPU): ``timing_note``.
- optim's OptimPreprocess custom op (fused preprocessing) is refused with one line.

Native crashes: like ``optim.backends.onnxruntime.open_session``, the model is first compiled in
a child process (``python -P -c _PROBE``, importing only the standard library, NumPy and
openvino) and run once on a zero batch of one; a crash there (OpenVINO's compile_model and first
inference run native code that can segfault or hit an illegal instruction) becomes a one-line
``ModelError`` naming the file instead of killing optim. The child also reports what this
runner describes (precision used, layer precisions), so ``method`` is known before ``activate``.
Verdicts are kept per file and options for the process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from optim.backends import machine
from optim.backends.base import WALL_TIME, Runner, TensorSpec
from optim.errors import BackendUnavailable, ModelError, first_line
from optim.onnx_tools import FLOAT8_TYPES, load_onnx, single_input, tensor_types
from optim.process import killed_by
from optim.backends._ov_probe import (  # noqa: F401  (re-exported for tests)
    COMPUTE_LAYERS, EXIT_LOAD_ERROR, TEST_CRASH_ENV, Probe, _short_type, openvino_version, probe,
)

PRECISIONS = (None, "bf16", "f16")
MODES = ("latency", "throughput")
#: runtime precisions that mean integer kernels
INT_PRECISIONS = ("u8", "i8")
def layer_summary(layers: Mapping[tuple[str, str], int]) -> str:
    """"Conv/MatMul layers: u8 53, f32 1 (brgconv_avx512_I8, ...)" from (precision, kernel) counts."""
    if not layers:
        return "no Conv/MatMul layers"
    by_prec: dict[str, int] = {}
    for (prec, _), n in layers.items():
        by_prec[prec] = by_prec.get(prec, 0) + n
    kernels = sorted({k for _, k in layers if k not in ("?", "")})
    shown = ", ".join(kernels[:3]) + (f", +{len(kernels) - 3} more" if len(kernels) > 3 else "")
    counts = ", ".join(f"{p} {n}" for p, n in sorted(by_prec.items(), key=lambda kv: -kv[1]))
    return f"Conv/MatMul layers: {counts}" + (f" ({shown})" if shown else "")


_UPPER = {"bf16": "BF16", "f16": "FP16", "f32": "FP32"}
_NEEDS = {"bf16": "AMX-BF16/AVX512_BF16", "f16": "AMX-FP16/AVX512_FP16"}


def _native_label(precision: str, cpu: machine.CpuInfo) -> str:
    """Which instructions give ``precision`` natively on ``cpu`` ("" where none)."""
    feats = [machine.FEATURE_LABELS[f] for f in machine.NATIVE.get(precision, ()) if cpu.has(f)]
    if precision == "bf16" and feats == ["AVX512_BF16"]:
        return "AVX512_BF16, no AMX"
    return "/".join(feats)


def describe(asked: str | None, probe_: Probe, cpu: machine.CpuInfo, *, float8: bool = False,
             bfloat16: bool = False, float16: bool = False) -> tuple[str, str]:
    """(the precision part of ``method``, the timing note) for a model compiled with hint ``asked``.

    Plain code over what the probe saw and the CPU's features, so tests cover every branch by
    faking either."""
    used = probe_.precision or "f32"
    layer_precs = {p for p, _ in probe_.layers}
    int8 = bool(layer_precs & set(INT_PRECISIONS))
    float_precs = {p for p in layer_precs if p not in INT_PRECISIONS}
    parts, notes = [], []
    if asked is None:
        parts.append(f"inference precision {used} (the file's own types)")
    elif used == asked:
        parts.append(f"{asked} hint: OpenVINO runs {used}")
    else:
        parts.append(f"{asked} hint: OpenVINO runs {used} instead (it found no {asked} support on this CPU; "
                     f"native {asked} needs {_NEEDS[asked]})")
        notes.append(f"asked for {asked}, OpenVINO ran {used} (no {asked} support on this CPU): "
                     f"not {_UPPER[asked]} speed or accuracy")
    # what the heavy layers really computed in, and whether the CPU has instructions for it
    for prec in sorted(float_precs & {"bf16", "f16"}):
        native = _native_label(prec, cpu)
        if native:
            parts.append(f"{prec} native ({native})")
        elif not cpu.features_known:
            parts.append(f"{prec}: CPU features unknown, cannot tell whether native")
        else:
            parts.append(f"{prec} NOT native (no {_NEEDS[prec]}: emulated or converted)")
            notes.append(f"this CPU has no {_NEEDS[prec]}: OpenVINO's {prec} layers run without native "
                         f"{_UPPER[prec]} instructions, so timings are not {_UPPER[prec]} speed")
    if int8:
        vnni = cpu.vnni_label()
        parts.append(f"int8 kernels {'with ' + vnni if vnni else 'without VNNI/AMX-INT8 (slower integer path)'}")
    if float8:
        parts.append("FP8 Q/DQ computed as float (no FP8 kernels on CPU)")
        notes.append(f"OpenVINO has no FP8 kernels on CPU: FP8 Q/DQ runs as {'/'.join(sorted(float_precs)) or used} "
                     "arithmetic, not FP8 speed")
    if bfloat16 and asked is None and "bf16" not in float_precs:
        parts.append(f"the file's BF16 types computed in {'/'.join(sorted(float_precs)) or used}")
        notes.append(f"the BF16 file ran in {'/'.join(sorted(float_precs)) or used} on this CPU: not BF16 speed")
    if float16 and asked is None and "f16" not in float_precs:
        ran = "/".join(sorted(float_precs)) or used
        parts.append(f"the file's FP16 types computed in {ran}")
        notes.append(f"the FP16 file ran in {ran} on this CPU: not FP16 speed")
    return "; ".join(parts), "; ".join(notes)


def _features_text(cpu: machine.CpuInfo) -> str:
    if not cpu.features_known:
        return "CPU features unknown"
    return " ".join(machine.FEATURE_LABELS[f] for f in cpu.feature_list()) or "no AVX2/AVX-512/VNNI/BF16/FP16"



def load_model(path: Path):
    """An ONNX file as an OpenVINO model, through ``openvino.convert_model`` (OpenVINO IR, ``.xml``:
    ``Core.read_model``, the only reader of IR).

    Not ``Core.read_model`` for ONNX: on OpenVINO 2026.4 that path runs modelopt's signed INT8 Q/DQ on
    a Concat output feeding an INT8 Conv with wrong values (the detector's mAP 76.3 -> 42.4; the same
    file in ONNX Runtime, or through ``convert_model``, which fuses each Q/DQ pair first: 76.3)."""
    import openvino as ov

    if Path(path).suffix.lower() == ".xml":
        return ov.Core().read_model(str(path))
    return ov.convert_model(str(path))

class OpenVinoRunner(Runner):
    """An ONNX file (or an OpenVINO IR ``.xml``, e.g. NNCF's output) on OpenVINO's CPU plugin (see the
    module text). Dynamic batch: the batch axis stays dynamic; OpenVINO compiles kernels for each new
    batch size on first use."""

    def __init__(self, path: Path, *, threads: int | None = None, precision: str | None = None,
                 mode: str = "latency") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.version = openvino_version()
        self.path = Path(path)
        self.label = str(path)
        self.precision = precision
        self.mode = mode
        self.threads = threads or os.cpu_count() or 1
        self.name = "openvino" + (f"-{precision}" if precision else "")
        self.session = None
        self.compiled = None
        if self.path.suffix.lower() == ".xml":  # OpenVINO IR (NNCF's output): OpenVINO itself checks it
            if not self.path.is_file():
                raise ModelError(f"OpenVINO IR file not found: {self.path}")
            self.float8 = self.bfloat16 = self.float16 = False
        else:
            self._check_onnx()
        self.cpu = machine.cpu_info()
        self.props = {"INFERENCE_PRECISION_HINT": precision or "f32", "INFERENCE_NUM_THREADS": str(self.threads),
                      "PERFORMANCE_HINT": mode.upper()}
        if mode == "latency":
            self.props["NUM_STREAMS"] = "1"
        self.probe = self._probe()
        how, self.timing_note = describe(precision, self.probe, self.cpu, float8=self.float8,
                                         bfloat16=self.bfloat16, float16=self.float16)
        streams = (f"latency hint, {self.probe.streams} stream" if mode == "latency" else
                   f"throughput hint, {self.probe.streams} streams, {self.probe.requests} requests in flight")
        cap = os.environ.get("ONEDNN_MAX_CPU_ISA")  # oneDNN honours it: kernels no newer than that ISA
        self.method = (f"openvino {self.version} CPU ({self.cpu.model}; {_features_text(self.cpu)}"
                       + (f"; kernels capped at {cap} by ONEDNN_MAX_CPU_ISA" if cap else "") + "), "
                       f"{self.probe.threads or self.threads} threads, {streams}; {how}; "
                       f"{layer_summary(self.probe.layers)}")

    def _check_onnx(self) -> None:
        """Refuse optim's custom op; note the file's FP8/BF16/FP16 types (they change what ``method`` says)."""
        import onnx

        from optim.ops.preprocess import has_op

        model = load_onnx(self.path, check=False)
        if has_op(model):
            raise BackendUnavailable(f"OpenVINO cannot run {self.path.name}: it contains optim's OptimPreprocess "
                                     "custom op (fused preprocessing), which only ONNX Runtime (csrc/ CPU library) "
                                     "and TensorRT (plugin) run")
        types = tensor_types(model)
        self.float8 = bool(types & FLOAT8_TYPES)
        self.bfloat16 = onnx.TensorProto.BFLOAT16 in types
        self.float16 = onnx.TensorProto.FLOAT16 in types

    def _probe(self) -> Probe:
        p = probe(self.path, self.props)
        what = f"OpenVINO {self.version}"
        if p.crashed:
            raise ModelError(f"{what} crashed ({p.signal}) compiling {self.label} for the CPU; a probe process took "
                             "the crash, so this file cannot run in OpenVINO here", detail=p.detail)
        if p.signal:
            raise ModelError(f"the probe compiling {self.label} with OpenVINO was {killed_by(p.signal)}",
                             detail=p.detail)
        if p.error:
            raise ModelError(f"{what} cannot load {self.label}: {p.error}", detail=p.detail)
        if not p.ok:  # the probe itself could not run: compile here, unprobed, and describe from that
            return self._describe_here()
        return p

    def _compile(self):
        core = _core()
        try:
            return core.compile_model(load_model(self.path), "CPU", dict(self.props))
        except Exception as exc:  # OpenVINO raises its own exception types
            raise ModelError(f"OpenVINO {self.version} cannot load {self.label}: {_ov_error(exc)}") from None

    def _describe_here(self) -> Probe:
        compiled = self._compile()
        layers: dict[tuple[str, str], int] = {}
        for op in compiled.get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()
            kind = rt["layerType"].astype(str) if "layerType" in rt else op.get_type_name()
            if kind in COMPUTE_LAYERS:
                k = (rt["runtimePrecision"].astype(str) if "runtimePrecision" in rt else "?",
                     rt["primitiveType"].astype(str) if "primitiveType" in rt else "?")
                layers[k] = layers.get(k, 0) + 1
        return Probe(True, _short_type(str(compiled.get_property("INFERENCE_PRECISION_HINT"))),
                     int(compiled.get_property("NUM_STREAMS")), int(compiled.get_property("INFERENCE_NUM_THREADS")),
                     max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))), layers)

    def activate(self) -> None:
        self.compiled = self._compile()
        self.session = self.compiled.create_infer_request()
        self._in = [_port_name(p) for p in self.compiled.inputs]
        self._out = [_port_name(p) for p in self.compiled.outputs]

    def deactivate(self) -> None:
        self.session = None
        self.compiled = None

    @property
    def input_names(self) -> list[str]:
        self._sess()
        return list(self._in)

    @property
    def output_names(self) -> list[str]:
        self._sess()
        return list(self._out)

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        req = self._sess()
        try:
            res = req.infer({k: np.ascontiguousarray(v) for k, v in feeds.items()})
        except Exception as exc:  # OpenVINO raises its own exception types
            raise ModelError(f"OpenVINO failed running {self.label}: {_ov_error(exc)}") from None
        # OpenVINO reuses its output buffers: copy before the next run overwrites them
        return {name: np.array(v) for name, v in zip(self._out, res.to_tuple())}

    def input_spec(self) -> TensorSpec:
        self._sess()
        ins = self.compiled.inputs
        views = [SimpleNamespace(name=_port_name(p),
                                 shape=[d.get_length() if d.is_static else None for d in p.get_partial_shape()])
                 for p in ins]
        name, _, shape = single_input(views, self.label)
        import openvino as ov

        et = ins[0].get_element_type()
        if et == ov.Type.bf16 or not et.is_static():
            raise ModelError(f"{self.label}: input '{name}' has type {et}, which has no host equivalent")
        return TensorSpec(name, shape, np.dtype(et.to_dtype()))

    @property
    def timing_method(self) -> str:
        if self.mode == "throughput":
            return (f"wall time of rounds of {self.probe.requests} asynchronous requests on "
                    f"{self.probe.streams} streams, divided by {self.probe.requests} (seconds per batch amortised, "
                    "not a latency), host arrays in and out")
        return WALL_TIME

    def measure(self, batch: int, warmup: int, iterations: int, *,
                on_run: Callable[[], None] | None = None) -> list[float]:
        if self.mode == "latency":
            return super().measure(batch, warmup, iterations, on_run=on_run)
        import openvino as ov

        feeds = self.random_feeds(batch)
        n = self.probe.requests
        queue = ov.AsyncInferQueue(self.compiled, n)
        tick = on_run or (lambda: None)
        times = []
        for i in range(warmup + iterations):
            t0 = time.perf_counter()
            for _ in range(n):
                queue.start_async(dict(feeds))
            queue.wait_all()
            if i >= warmup:
                times.append((time.perf_counter() - t0) / n)
            tick()
        return times


def _ov_error(exc: BaseException) -> str:
    """OpenVINO's message without its "Exception from src/...cpp:N:" location lines, cut to one line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith("Exception from")]
    return (lines[0] if lines else first_line(exc))[:300]


def _port_name(port) -> str:
    names = port.get_names()
    return port.get_any_name() if names else f"port{port.get_index()}"


_CORE = None


def _core():
    global _CORE
    if _CORE is None:
        import openvino as ov

        _CORE = ov.Core()
    return _CORE
