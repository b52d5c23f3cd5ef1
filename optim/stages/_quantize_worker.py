"""Worker process for ``optim.stages.quantize.quantize_onnx``: ``python -m optim.stages._quantize_worker JOB_DIR``.

Reads ``job.json`` (and ``calib.npy``, never unpickled) from JOB_DIR, quantizes,
and writes ``result.json``: the report, or the error's class name and message.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from optim.artifacts import write_json
from optim.errors import OptimError, first_line


def main(job_dir: Path) -> None:
    from optim.stages.quantize import quantize_here
    from optim.recipe import QuantizeSettings

    job = json.loads((job_dir / "job.json").read_text())
    calib = np.load(job_dir / "calib.npy", allow_pickle=False) if job["calib"] else None
    try:
        rep = quantize_here(Path(job["src"]), QuantizeSettings(**job["settings"]), Path(job["out"]), calib)
        result = {"ok": True, "report": rep.as_dict()}
    except OptimError as exc:
        result = {"ok": False, "type": type(exc).__name__, "message": str(exc)}
    except Exception as exc:  # reported as a QuantizeError by the parent
        first = first_line(str(exc))  # may be empty: the type name is already there
        result = {"ok": False, "type": "QuantizeError", "message": f"{type(exc).__name__}: {first}"}
    write_json(job_dir / "result.json", result)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
