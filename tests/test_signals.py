"""Ctrl-C, SIGTERM and kill -9 (issue 24): one line, exit 130/143, and no temporary file left behind."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optim.process import PROC_PREFIX, doing, sweep
from optim.stages.quantize.stage import JOB_PREFIX
from tests.helpers import REPO
from tests.helpers.processes import alive, quantize_workers

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")


def _start_quantize(tmp_path, tiny_onnx):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "OPTIM_NO_PROGRESS": "1", "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "optim", "quantize", str(tiny_onnx), "--precision", "int8",
           "--calib", "synthetic:64", "-o", str(tmp_path / "out" / "model.int8.onnx")]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, workers = time.time() + 120, []
    while not workers and time.time() < deadline and proc.poll() is None:
        workers = quantize_workers(proc.pid)
        time.sleep(0.05)
    assert workers, "the quantize worker never started"
    while not list(tmp.rglob(f"{JOB_PREFIX}*/tmp/*")) and time.time() < deadline:  # the worker is at work
        time.sleep(0.05)
    return proc, workers, tmp


@pytest.mark.slow  # signals a quantize run mid-way
@pytest.mark.parametrize("sig,code,how", [(signal.SIGINT, 130, "interrupted"),
                                          (signal.SIGTERM, 143, "interrupted (SIGTERM)")])
def test_a_signal_mid_quantize_says_one_line_and_leaves_nothing(tmp_path, tiny_onnx, sig, code, how):
    proc, workers, tmp = _start_quantize(tmp_path, tiny_onnx)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == (f"{how} during quantize int8-tensorrt: nothing half-written; "
                                            "rerun to continue")
    assert "Traceback" not in err
    assert not any(alive(w) for w in workers)
    assert list(tmp.iterdir()) == []  # job folder, worker temp files, the process's own folder: all gone
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.slow  # kills a quantize worker mid-way
def test_a_killed_worker_takes_its_temporary_files_with_it(tmp_path, tiny_onnx):
    proc, workers, tmp = _start_quantize(tmp_path, tiny_onnx)
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 4 and "worker was killed by SIGKILL" in err, err
    assert list(tmp.iterdir()) == []


def test_the_sweep_removes_every_temporary_folder_of_a_dead_process(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = [f"{PROC_PREFIX}{dead.pid}-a", f"{JOB_PREFIX}{dead.pid}-b", f"optim-quant-{dead.pid}-c"]
    kept = [f"{PROC_PREFIX}{os.getpid()}-d", "optim-quant-x1y2z3", f"{PROC_PREFIX}1-e", "other"]
    for name in gone + kept:
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text("x")
    assert sorted(p.name for p in sweep(tmp_path)) == sorted(gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


# -- 8: a full temporary folder names the folder and the stage ------------------------------
def test_a_full_tmpdir_names_the_folder_and_the_stage(monkeypatch, capsys):
    import optim.cli as cli
    from optim import process

    def full(**_):
        with doing("export fp32"):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli, "app", full)
    monkeypatch.setattr(process, "base_tmp", ["/some/tmp"])
    assert cli._main_once() == 4
    err = capsys.readouterr().err.strip()
    assert err == ("error: export fp32: a write in the temporary folder /some/tmp failed (tools write their "
                   "temporary files there; set TMPDIR to move them): No space left on device [ENOSPC]; free "
                   "some space or write elsewhere")


def test_a_full_tmpdir_in_the_worker_names_the_folder_and_the_entry(tmp_path, monkeypatch):
    import tempfile

    from optim.stages.quantize.worker import _os_error

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    msg = _os_error(OSError(errno.ENOSPC, "No space left on device"), {"precision": "fp8", "target": "tensorrt"})
    assert msg == (f"quantize fp8-tensorrt: writing a temporary file under {tmp_path}: No space left on device "
                   "[ENOSPC]; free some space there or set TMPDIR to a larger disk")
