"""Worker process for ``optim.stages.quantize.stage.quantize_onnx``: ``python -m optim.stages.quantize.worker JOB_DIR``.

Reads ``job.json`` (and ``calib.npy``, never unpickled) from JOB_DIR, quantizes into
JOB_DIR, and writes ``result.json``: the report, or the error's class name and message.
It dies with the process that started it: the kernel kills it when the parent dies
(Linux ``PR_SET_PDEATHSIG``), and a watchdog thread checks the parent elsewhere.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from optim.artifacts import write_json
from optim.errors import OptimError, first_line
from optim.settings import QuantizeSettings


PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Exit as soon as ``parent`` is gone, however it died."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the watchdog below is enough
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    if os.getppid() != parent:  # died before the death signal was armed
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def _os_error(exc: OSError, settings: dict) -> str:
    """One line for an OSError of the tools: the path it names, else the temporary folder (TMPDIR)."""
    import errno
    import tempfile

    tag = QuantizeSettings(**settings).tag
    code = errno.errorcode.get(exc.errno or -1, "")
    where = exc.filename or f"a temporary file under {tempfile.gettempdir()}"
    hint = "; free some space there or set TMPDIR to a larger disk" if exc.errno in (errno.ENOSPC, errno.EDQUOT) \
        else ""
    return f"quantize {tag}: writing {where}: {exc.strerror or first_line(exc)}" + (f" [{code}]" if code else "") + hint


def main(job_dir: Path) -> None:
    job = json.loads((job_dir / "job.json").read_text())
    die_with_parent(int(job["parent"]))
    from optim.stages.quantize.stage import quantize_here

    calib = np.load(job_dir / "calib.npy", allow_pickle=False) if job["calib"] else None
    try:
        rep = quantize_here(Path(job["src"]), QuantizeSettings(**job["settings"]), Path(job["out"]), calib)
        result = {"ok": True, "report": rep.as_dict()}
    except OptimError as exc:
        result = {"ok": False, "type": type(exc).__name__, "message": str(exc)}
    except OSError as exc:
        result = {"ok": False, "type": "QuantizeError", "message": _os_error(exc, job["settings"])}
    except Exception as exc:  # reported as a QuantizeError by the parent
        first = first_line(str(exc))  # may be empty: the type name is already there
        result = {"ok": False, "type": "QuantizeError", "message": f"{type(exc).__name__}: {first}"}
    write_json(job_dir / "result.json", result)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
