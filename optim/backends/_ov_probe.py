"""OpenVINO's compile in a child process: a native crash becomes a verdict, not optim's death.

``probe(path, props)`` runs ``python -P -c _PROBE`` (the standard library, NumPy and openvino
only), which compiles the model with the given properties on the CPU plugin, runs one zero
batch of one and prints what ran (inference precision, streams, the precision and kernel of
every compute layer) as one JSON line. Verdicts are kept per file and properties for the process.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from optim.errors import BackendUnavailable, first_line
from optim.install import INSTALL
from optim.process import CRASH_SIGNALS, run_child

#: layer types of OpenVINO's CPU runtime graph that do the arithmetic (whose precision is the model's speed)
COMPUTE_LAYERS = ("Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul")

#: test hook: "1" makes the probe child kill itself with SIGSEGV before it compiles (only tests set it)
TEST_CRASH_ENV = "OPTIM_TEST_OV_PROBE_CRASH"
EXIT_LOAD_ERROR = 3

# The child: compile with the given properties, run one zero batch of one, report what ran. It
# gets a path and a JSON object of plain properties on its command line, never pickled data.
_PROBE = r"""
import faulthandler, json, os, signal, sys
faulthandler.enable()
path, props = sys.argv[1], json.loads(sys.argv[2])
try:
    import numpy as np
    import openvino as ov
    if os.environ.get("OPTIM_TEST_OV_PROBE_CRASH") == "1":
        os.kill(os.getpid(), signal.SIGSEGV)
    core = ov.Core()
    # ONNX through convert_model, not read_model (see openvino.load_model); OpenVINO IR (.xml) is read_model's
    model = core.read_model(path) if path.lower().endswith(".xml") else ov.convert_model(path)
    compiled = core.compile_model(model, "CPU", props)
    ran = False
    if len(compiled.inputs) == 1:
        dims = list(compiled.inputs[0].get_partial_shape())
        et = compiled.inputs[0].get_element_type()
        if dims and all(d.is_static for d in dims[1:]) and et != ov.Type.bf16:
            shape = [1] + [d.get_length() for d in dims[1:]]
            compiled.create_infer_request().infer({0: np.zeros(shape, dtype=et.to_dtype())})
            ran = True
    layers, compute = {}, set(json.loads(sys.argv[3]))
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        kind = rt["layerType"].astype(str) if "layerType" in rt else op.get_type_name()
        if kind in compute:
            prec = rt["runtimePrecision"].astype(str) if "runtimePrecision" in rt else "?"
            prim = rt["primitiveType"].astype(str) if "primitiveType" in rt else "?"
            key = prec + "|" + prim
            layers[key] = layers.get(key, 0) + 1
    out = {"ok": True, "precision": str(compiled.get_property("INFERENCE_PRECISION_HINT")),
           "streams": int(compiled.get_property("NUM_STREAMS")),
           "threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
           "requests": int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")),
           "layers": layers, "ran": ran}
except Exception as exc:
    text = str(exc).strip() or type(exc).__name__
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("Exception from")]
    print(json.dumps({"ok": False, "error": (lines[0] if lines else text.splitlines()[0])[:300]}), flush=True)
    sys.exit(3)
print(json.dumps(out), flush=True)
"""

#: OpenVINO's element type names -> the short names optim uses
_TYPE_NAMES = {"float32": "f32", "f32": "f32", "bfloat16": "bf16", "bf16": "bf16", "float16": "f16", "f16": "f16"}


def _short_type(name: str) -> str:
    name = name.strip().lower()
    for prefix in ("<type: '", "type: "):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return _TYPE_NAMES.get(name.strip("'>"), name.strip("'>"))


def openvino_version() -> str:
    """The installed openvino distribution's version; ``BackendUnavailable`` where it does not import."""
    try:
        import openvino  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install raising anything
        raise BackendUnavailable(f"OpenVINO is not importable here ({first_line(exc, 200)}); "
                                 f"install: {INSTALL['openvino']}") from None
    from importlib import metadata

    try:
        return metadata.version("openvino")
    except metadata.PackageNotFoundError:
        import openvino

        return getattr(openvino, "__version__", "?").split("-")[0]


@dataclass(frozen=True)
class Probe:
    """How compiling the model went in the child: ``ok`` with what ran, or ``signal`` (the child died
    of it), or ``error`` (OpenVINO's own one-line error); none of them: the probe could not run (``detail``)."""

    ok: bool
    precision: str = ""  # the inference precision the compiled model uses (f32, bf16, f16)
    streams: int = 0
    threads: int = 0
    requests: int = 1
    #: (runtime precision, kernel) -> number of compute layers
    layers: dict[tuple[str, str], int] = field(default_factory=dict)
    ran: bool = False
    signal: str = ""
    error: str = ""
    detail: str = ""

    @property
    def crashed(self) -> bool:
        return self.signal in CRASH_SIGNALS


_probes: dict[tuple, Probe] = {}


def probe(path: Path, props: dict[str, str]) -> Probe:
    """Compile ``path`` with ``props`` on OpenVINO's CPU plugin in a child process (once per file,
    size, mtime and properties per process). Raises ``KeyboardInterrupt`` when the child was interrupted."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, tuple(sorted(props.items())), os.environ.get(TEST_CRASH_ENV, ""))
    if key in _probes:
        return _probes[key]
    cmd = [sys.executable, "-P", "-c", _PROBE, str(path), json.dumps(props), json.dumps(list(COMPUTE_LAYERS))]
    end = run_child(cmd)
    said = end.said
    if not end.started:
        return Probe(False, detail=f"probe could not start: {end.detail}")
    if end.signal:
        result = Probe(False, signal=end.signal, detail=end.detail)
    elif end.code == 0 and said.get("ok"):
        layers = {}
        for k, n in said.get("layers", {}).items():
            prec, _, prim = k.partition("|")
            layers[(prec, prim)] = int(n)
        result = Probe(True, _short_type(said["precision"]), said["streams"], said["threads"],
                       max(1, said.get("requests", 1)), layers, bool(said.get("ran")), detail=end.detail)
    elif end.code == EXIT_LOAD_ERROR and said.get("error"):
        result = Probe(False, error=str(said["error"]), detail=end.detail)
    else:
        return Probe(False, detail=f"probe exited with code {end.code}: {end.detail}")
    _probes[key] = result
    return result
