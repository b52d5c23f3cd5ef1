"""A native crash while ONNX Runtime builds a session never takes optim down silently.

Fast tests make the probe child kill itself with SIGSEGV at chosen graph optimisation levels
(``OPTIM_TEST_PROBE_CRASH``); the slow test is the real case that needed it: torchvision
vit_b_16 converted to FP16 segfaults ORT 1.24.4 at ``ORT_ENABLE_ALL``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from optim.backends import onnxruntime as ortb
from optim.backends._ort_probe import TEST_CRASH_ENV, Verdict
from optim.backends.onnxruntime import OrtRunner, open_session
from optim.errors import ModelError, QuantizeError
from tests.helpers import REPO
from tests.helpers.models import TINY_SHAPE


@pytest.fixture
def probes(monkeypatch):
    """Counts the probe children started (and still runs them)."""
    calls: list[tuple[str, str]] = []
    real = ortb.probe

    def counting(path, level, **kw):
        calls.append((str(path), level))
        return real(path, level, **kw)

    monkeypatch.setattr(ortb, "probe", counting)
    return calls


def _x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, *TINY_SHAPE)).astype(np.float32)


def test_probe_child_by_hand(tiny_onnx):
    p = subprocess.run([sys.executable, "-m", "optim.backends._ort_probe", str(tiny_onnx), "all"],
                       capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != TEST_CRASH_ENV})
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"ok": True}


def test_crash_at_all_retries_at_extended(tiny_onnx, monkeypatch, probes, capsys):
    monkeypatch.setenv(TEST_CRASH_ENV, "all")
    runner = OrtRunner(tiny_onnx, threads=1)
    with runner:
        out = runner.infer({"input": _x()})
    assert out["logits"].shape == (2, 5)
    assert runner.optimization_used == "extended"
    assert "graph optimization extended: ONNX Runtime crashed (SIGSEGV) building the session at all" in runner.method
    assert probes == [(str(tiny_onnx), "all"), (str(tiny_onnx), "extended")]
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "tiny.fp32.onnx" in err[0] and "SIGSEGV" in err[0] and "using extended" in err[0], err

    # probed once per file and options per process: a second runner starts no child, prints nothing
    again = OrtRunner(tiny_onnx, threads=1)
    with again:
        pass
    assert len(probes) == 2
    assert again.optimization_used == "extended" and "crashed (SIGSEGV)" in again.method
    assert capsys.readouterr().err == ""


def test_crash_at_all_and_extended_retries_at_basic(tiny_onnx, monkeypatch):
    monkeypatch.setenv(TEST_CRASH_ENV, "all,extended")
    with OrtRunner(tiny_onnx, threads=1) as r:
        assert r.optimization_used == "basic"
        assert "building the session at all, extended" in r.method


def test_crash_at_every_level_is_one_line_model_error(tiny_onnx, monkeypatch, probes):
    monkeypatch.setenv(TEST_CRASH_ENV, "*")
    with pytest.raises(ModelError) as ei:
        OrtRunner(tiny_onnx, threads=1).activate()
    msg = str(ei.value)
    assert "\n" not in msg
    assert str(tiny_onnx) in msg and "SIGSEGV" in msg and "all, extended, basic" in msg
    assert "Segmentation fault" in ei.value.detail  # the child's faulthandler output, for --debug
    assert [lv for _, lv in probes] == ["all", "extended", "basic"]
    # asked for basic: nothing lower to try
    with pytest.raises(ModelError, match=r"every graph optimization level tried \(basic\)"):
        OrtRunner(tiny_onnx, threads=1, optimization="basic").activate()


def test_in_memory_model_is_probed_from_a_file(tiny_onnx, monkeypatch, probes):
    monkeypatch.setenv(TEST_CRASH_ENV, "all")
    data = tiny_onnx.read_bytes()
    opened = open_session(data, label="tiny bytes", threads=1)
    assert opened.optimization == "extended" and opened.note
    assert len(probes) == 2 and all(not Path(p).exists() for p, _ in probes)  # the temp file is gone
    open_session(data, label="tiny bytes", threads=1)  # same bytes: remembered
    assert len(probes) == 2


def test_ort_load_error_is_not_retried(tmp_path, probes):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(ModelError, match=r"^ONNX Runtime cannot load .*bad\.onnx: "):
        OrtRunner(bad).activate()
    assert [lv for _, lv in probes] == ["all"]


def test_probe_killed_from_outside_is_not_a_retry(tiny_onnx, monkeypatch):
    monkeypatch.setattr(ortb, "probe", lambda path, level, **kw: Verdict(False, level, signal="SIGKILL"))
    monkeypatch.setattr(ortb, "_verdicts", {})  # nothing remembered from other tests
    with pytest.raises(ModelError, match=r"was killed by SIGKILL \(out of memory\?\)"):
        OrtRunner(tiny_onnx).activate()


def test_check_cli_survives_and_reports(tiny_onnx, tmp_path):
    env = {**os.environ, "OPTIM_NO_PROGRESS": "1", TEST_CRASH_ENV: "all"}
    cmd = [sys.executable, "-m", "optim", "check", str(tiny_onnx), "--reference", str(tiny_onnx),
           "--data", "synthetic:8", "--json", str(tmp_path / "check.json")]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    notes = [ln for ln in p.stderr.splitlines() if "crashed (SIGSEGV)" in ln]
    assert len(notes) == 1, p.stderr  # one line, although the file is both candidate and reference
    env[TEST_CRASH_ENV] = "*"
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert lines[0].startswith("error: ") and "tiny.fp32.onnx" in lines[0] and "SIGSEGV" in lines[0]


def test_quantize_worker_killed_by_signal(tiny_onnx, tmp_path, monkeypatch):
    from optim.settings import QuantizeSettings
    from optim.stages.quantize import stage as q

    monkeypatch.setattr(q.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, -11))
    with pytest.raises(QuantizeError) as ei:
        q.quantize_onnx(tiny_onnx, QuantizeSettings(precision="fp16"), tmp_path / "out.onnx")
    msg = str(ei.value)
    assert "\n" not in msg and "killed by SIGSEGV" in msg, msg
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.slow
def test_vit_b_16_fp16_check_does_not_crash(tmp_path):
    """ORT 1.24.4 segfaults building this FP16 ViT at ORT_ENABLE_ALL (about 2 minutes on 2 cores)."""
    env = {**os.environ, "OPTIM_NO_PROGRESS": "1", "TQDM_DISABLE": "1"}
    env.pop(TEST_CRASH_ENV, None)

    def optim(*args):
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "optim", *map(str, args)], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=900)
        print(f"optim {args[0]}: {time.perf_counter() - t0:.1f} s, exit {p.returncode}")
        return p

    fp32, fp16 = tmp_path / "vit.fp32.onnx", tmp_path / "vit.fp16.onnx"
    p = optim("export", "torchvision:vit_b_16", "--input-shape", "3,224,224", "-o", fp32)
    assert p.returncode == 0, p.stderr[-2000:]
    p = optim("quantize", fp32, "--precision", "fp16", "-o", fp16)
    assert p.returncode == 0, p.stderr[-2000:]
    p = optim("check", fp16, "--reference", fp32, "--data", "synthetic:16", "--json", tmp_path / "check.json")
    assert p.returncode not in (-11, 139, -6, 134), f"optim check died of a signal: {p.returncode}"
    if p.returncode == 0:
        method = json.loads((tmp_path / "check.json").read_text()).get("method", "")
        if "crashed" in method:  # the ORT that crashes: the retry is said once on the console
            assert sum("crashed (SIGSEGV)" in ln for ln in p.stderr.splitlines()) == 1, p.stderr
    else:
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
