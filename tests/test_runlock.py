"""One writer per run folder: a second writer waits or (--no-wait) stops naming the holder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from optim.artifacts import RunDir
from optim.errors import RunFolderBusy
from optim.runlock import LOCK_NAME, RunLock
from tests.helpers import REPO
from tests.helpers.cli import assert_one_line_error, optim
from tests.helpers.runs import TINY


@pytest.fixture
def tiny(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    return tmp_path / "tiny.yaml"


def test_no_wait_names_the_holder(tiny):
    out = tiny.parent / "art"
    with RunLock(out / "tiny"):
        p = optim("run", tiny, "--out-root", out, "--no-wait")
    assert_one_line_error(p, 6, f"{out / 'tiny'} is in use by optim pid {os.getpid()}", "--no-wait")
    assert not (out / "tiny" / "manifest.json").exists()  # it stopped before any stage


def test_in_process_second_writer_is_refused(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunFolderBusy, match=f"pid {os.getpid()}"):
            RunLock(tmp_path, wait=False).acquire()
    RunLock(tmp_path, wait=False).acquire().release()  # free again once released
    assert (tmp_path / LOCK_NAME).read_text() == ""  # a finished writer leaves it empty


def test_a_dead_writer_is_noted_and_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 4194304, "host": "h", "command": "optim run r.yaml",
                                                  "started": "2026-01-01T00:00:00"}))
    with RunLock(tmp_path, wait=False) as lock:
        assert "did not finish" in lock.note and "pid 4194304" in lock.note
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_report_waits_for_the_writer(run_dir):
    env = {**os.environ, "OPTIM_NO_PROGRESS": "1"}
    with RunLock(run_dir):
        proc = subprocess.Popen([sys.executable, "-m", "optim", "report", str(run_dir)], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        assert proc.poll() is None  # still waiting while the lock is held
        assert not (run_dir / "report.md").exists()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"waiting for {run_dir}: in use by optim pid {os.getpid()}" in err
    assert (run_dir / "report.md").is_file()


@pytest.mark.slow
def test_two_concurrent_runs_leave_a_true_manifest(tiny):
    out = tiny.parent / "art"
    env = {**os.environ, "OPTIM_NO_PROGRESS": "1", "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "optim", "run", str(tiny), "--out-root", str(out)]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-2000:] for r in results]
    assert sum("waiting for" in err for _, err in results) == 1  # the second one waited
    rd = RunDir(out / "tiny")
    assert rd.manifest.artifacts and rd.verify() == []
    # the waiting run found every stage done by the first one
    waited = next(err for _, err in results if "waiting for" in err)
    assert "done export" not in waited and "cached export" in waited


# -- kill -9 mid-run, then rerun: the manifest is true and the results are the same ------------

KILL_RECIPE = TINY.replace("precisions: [fp32, fp16]", "precisions: [fp32, fp16, {precision: int8, target: tensorrt}]"
                           "\nbackends: [onnxruntime]")
#: deterministic results: the models and the check results (bench timings and reports are not)
DETERMINISTIC = ("model.*.onnx", "check/*.json")


def _hashes(root) -> dict[str, str]:
    from optim.artifacts import sha256_file

    return {str(p.relative_to(root)): sha256_file(p) for pat in DETERMINISTIC for p in sorted(root.glob(pat))}


def _run_until(recipe, out, nth_done: int | None) -> subprocess.CompletedProcess | None:
    """``optim run``; with ``nth_done``, kill -9 it right after its n-th 'done' line."""
    env = {**os.environ, "OPTIM_NO_PROGRESS": "1", "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "optim", "run", str(recipe), "--out-root", str(out)]
    if nth_done is None:
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = 0
    for line in proc.stderr:
        seen += line.startswith("done ")
        if seen == nth_done:
            proc.kill()
            break
    proc.wait()
    assert proc.returncode == -9, f"the run ended before its {nth_done}th stage"
    return None


@pytest.mark.slow
def test_kill_9_at_five_stages_then_rerun(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(KILL_RECIPE)
    ref = _run_until(recipe, tmp_path / "ref", None)
    assert ref.returncode == 0, ref.stderr[-2000:]
    want = _hashes(tmp_path / "ref" / "tiny")
    assert len(want) == 6  # 3 models, 3 checks
    # 1: export, 2-3: quantize, 4: first check, 8: a bench
    for n in (1, 2, 3, 4, 8):
        out = tmp_path / f"kill{n}"
        _run_until(recipe, out, n)
        p = _run_until(recipe, out, None)
        assert p.returncode == 0, p.stderr[-2000:]
        assert "did not finish" in p.stderr  # the lock saw the killed writer
        root = out / "tiny"
        assert RunDir(root).verify() == [], n
        assert _hashes(root) == want, n
        assert not list(root.rglob(".*.partial-*"))
