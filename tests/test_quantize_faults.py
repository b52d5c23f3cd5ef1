"""Quantization never writes to its input, and its worker dies with the process that started it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optim.settings import QuantizeSettings
from optim.stages.quantize.stage import JOB_PREFIX, quantize_onnx, sweep_jobs
from tests.helpers import REPO
from tests.helpers.processes import alive, quantize_workers


SLOW = pytest.mark.slow  # a quantize worker each: one quick case in the fast tier


@pytest.mark.parametrize("precision,target", [
    ("int8", "onnxruntime"), pytest.param("int8", "tensorrt", marks=SLOW), pytest.param("fp8", "tensorrt", marks=SLOW),
    pytest.param("fp16", "tensorrt", marks=SLOW), pytest.param("bf16", "tensorrt", marks=SLOW)])
def test_input_is_never_modified(tmp_path, tiny_onnx, calib_x, precision, target):
    src = tmp_path / "model.fp32.onnx"
    shutil.copyfile(tiny_onnx, src)
    os.utime(src, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))  # a known, old mtime
    before = src.read_bytes()
    quantize_onnx(src, QuantizeSettings(precision=precision, target=target), tmp_path / "out.onnx", calib_x)
    assert src.read_bytes() == before
    assert src.stat().st_mtime_ns == 1_000_000_000_000_000_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.fp32.onnx", "out.onnx"]  # nothing beside it


def test_sweep_removes_only_dead_processes_jobs(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"{JOB_PREFIX}{dead.pid}-abc").mkdir()
    (tmp_path / f"{JOB_PREFIX}{os.getpid()}-def").mkdir()  # ours: in use
    (tmp_path / f"{JOB_PREFIX}1-ghi").mkdir()  # init never dies
    assert [p.name for p in sweep_jobs(tmp_path)] == [f"{JOB_PREFIX}{dead.pid}-abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{JOB_PREFIX}1-ghi", f"{JOB_PREFIX}{os.getpid()}-def"]


@pytest.mark.slow  # kills a quantize run mid-way
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc to find the worker")
def test_kill_9_of_the_parent_takes_the_worker_with_it(tmp_path, tiny_onnx):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "run" / "model.int8.onnx"
    env = {**os.environ, "TMPDIR": str(tmp), "OPTIM_NO_PROGRESS": "1", "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "optim", "quantize", str(tiny_onnx), "--precision", "int8",
           "--calib", "synthetic:64", "-o", str(out)]
    parent = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    workers: list[int] = []
    while not workers and time.time() < deadline and parent.poll() is None:
        workers = quantize_workers(parent.pid)
        time.sleep(0.05)
    assert workers, "the quantize worker never started"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    t0 = time.time()
    while any(alive(w) for w in workers) and time.time() - t0 < 10:
        time.sleep(0.1)
    assert not any(alive(w) for w in workers), "the worker outlived its parent by 10 s"
    time.sleep(2)
    assert not out.exists() and not (out.parent.exists() and list(out.parent.iterdir()))
    assert list(tmp.rglob(f"{JOB_PREFIX}{parent.pid}-*"))  # the killed parent could not clean up...
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert not list(tmp.iterdir())  # ...the next optim process did (its own temporary folder included)
