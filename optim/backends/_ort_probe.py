"""Build an ONNX Runtime session in a child process first, so that a native crash cannot kill optim.

ONNX Runtime can crash in native code while it builds a session (seen: ORT 1.24.4 segfaults
optimising a ViT-B/16 FP16 graph at ``ORT_ENABLE_ALL``; the same file loads at EXTENDED). In
optim's own process that is an exit with code 139 and no message. ``probe`` builds the same
session in a child and reports how it went; ``optim.backends.onnxruntime.open_session`` (the
one place optim creates sessions) decides from that what to load in-process.

The child is this file run as a script with ``python -P`` (no script folder on ``sys.path``, so
``optim/backends/onnxruntime.py`` cannot shadow the real package): it imports only the standard
library and onnxruntime, and optim's CPU ops library only for ``--custom-ops``. It gets a path
and plain options on its command line, never pickled data. By hand::

    python -m optim.backends._ort_probe model.onnx all [--providers CPUExecutionProvider] [--custom-ops]

It prints one JSON line (``{"ok": true}`` or ``{"ok": false, "error": "..."}``) and exits 0
(built) or 3 (ORT raised an ordinary error); a crash shows as a signal in the return code, and
faulthandler leaves the native crash's Python stack on stderr (kept for ``--debug``).

Test hook: ``OPTIM_TEST_PROBE_CRASH`` set to a comma list of levels (``all,extended``) or ``*``
(every level) makes the child kill itself with SIGSEGV just before it builds the session at
those levels. Nothing else reads it; only the test suite sets it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

#: optim's level names -> ``onnxruntime.GraphOptimizationLevel`` members
LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
TEST_CRASH_ENV = "OPTIM_TEST_PROBE_CRASH"
EXIT_LOAD_ERROR = 3


@dataclass(frozen=True)
class Verdict:
    """How building one session went in the child.

    ``ok``: it was built. ``signal``: the child died of this signal (``crashed`` when it is a
    native crash). ``error``: ORT's own error (one line) when it raised one. ``detail``: the tail of
    the child's stderr. Neither ok, signal nor error: the probe itself could not run (``detail``)."""

    ok: bool
    level: str
    signal: str = ""
    error: str = ""
    detail: str = ""
    seconds: float = 0.0

    @property
    def crashed(self) -> bool:
        from optim.process import CRASH_SIGNALS  # here, not at the top: the child imports no optim module

        return self.signal in CRASH_SIGNALS


def probe(path: Path, level: str, *, providers: tuple[str, ...] = ("CPUExecutionProvider",),
          custom_ops: bool = False) -> Verdict:
    """Build a session for ``path`` at graph optimisation ``level`` in a child process.

    Raises ``KeyboardInterrupt`` when the child was interrupted (Ctrl-C reaches both)."""
    from optim.process import run_child  # here, not at the top: the child imports no optim module

    cmd = [sys.executable, "-P", str(Path(__file__).resolve()), str(path), level,
           "--providers", ",".join(providers)] + (["--custom-ops"] if custom_ops else [])
    t0 = time.perf_counter()
    end = run_child(cmd)
    seconds = time.perf_counter() - t0
    if not end.started:  # no interpreter to start: the caller builds the session unprobed
        return Verdict(False, level, detail=f"probe could not start: {end.detail}")
    if end.signal:
        return Verdict(False, level, signal=end.signal, detail=end.detail, seconds=seconds)
    if end.code == 0 and end.said.get("ok"):
        return Verdict(True, level, detail=end.detail, seconds=seconds)
    if end.code == EXIT_LOAD_ERROR and end.said.get("error"):
        return Verdict(False, level, error=str(end.said["error"]), detail=end.detail, seconds=seconds)
    return Verdict(False, level, detail=f"probe exited with code {end.code}: {end.detail}", seconds=seconds)


def _test_crash_levels() -> set[str]:
    raw = os.environ.get(TEST_CRASH_ENV, "")
    levels = {p.strip() for p in raw.split(",") if p.strip()}
    return set(LEVELS) if "*" in levels else levels


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def main(argv: list[str] | None = None) -> int:
    import argparse
    import faulthandler

    ap = argparse.ArgumentParser(prog="python -m optim.backends._ort_probe",
                                 description="Build one ONNX Runtime session; report how it went.")
    ap.add_argument("model", help="ONNX file")
    ap.add_argument("level", choices=sorted(LEVELS), help="graph optimisation level")
    ap.add_argument("--providers", default="CPUExecutionProvider", help="comma-separated execution providers")
    ap.add_argument("--custom-ops", action="store_true", help="register optim's CPU ops first")
    args = ap.parse_args(argv)
    faulthandler.enable()  # a native crash leaves the Python stack on stderr
    try:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1  # graph optimisation does not depend on it; keeps the probe light
        so.inter_op_num_threads = 1
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[args.level])
        so.log_severity_level = 3
        if args.custom_ops:
            # run as a script, the optim package may not be on sys.path (a source checkout): append
            # its root (after everything else, so it shadows nothing)
            sys.path.append(str(Path(__file__).resolve().parents[2]))
            from onnxruntime_extensions import get_library_path

            from optim.ops.preprocess_cpu import register

            register()
            so.register_custom_ops_library(get_library_path())
        if args.level in _test_crash_levels():
            os.kill(os.getpid(), signal.SIGSEGV)
        ort.InferenceSession(args.model, sess_options=so, providers=args.providers.split(","))
    except Exception as exc:  # ORT raises its own exception types
        print(json.dumps({"ok": False, "error": _one_line(exc)}), flush=True)
        return EXIT_LOAD_ERROR
    print(json.dumps({"ok": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
