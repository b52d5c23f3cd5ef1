"""A run folder is untrusted on read (issue 24): links, outside paths, tampered results, broken manifests."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import types

import pytest

from optim.artifacts import MANIFEST, RunDir
from optim.errors import InputError, OutputPathError
from optim.executor import Executor, StageOutput
from optim.runlock import LOCK_NAME, RunLock
from optim.stages.report.stage import collect, summary_lines, table_rows, task_of
from optim.verify import problems
from tests.helpers.cli import assert_one_line_error, optim


def _record_all(root) -> RunDir:
    """Give a hand-written run folder the manifest ``optim run`` would have written."""
    rd = RunDir(root)
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel not in (MANIFEST, LOCK_NAME):
            rd.record(rel, rel, "test")
    return rd


@pytest.fixture
def recorded(run_dir):  # noqa: F811
    _record_all(run_dir)
    assert problems(run_dir) == []
    return run_dir


# -- 1: the lock never follows a link --------------------------------------------------------
def test_a_symlinked_lock_is_refused_and_its_target_survives(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).symlink_to(target)
    with pytest.raises(OutputPathError, match="symbolic link"):
        RunLock(run).acquire()
    assert target.read_text() == "keep me"


def test_atomic_writes_replace_a_planted_partial_link(tmp_path):
    from optim.artifacts import write_text

    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (tmp_path / f".out.txt.partial-{os.getpid()}").symlink_to(target)
    write_text(tmp_path / "out.txt", "new")
    assert target.read_text() == "keep me" and (tmp_path / "out.txt").read_text() == "new"


# -- 2: manifest paths stay inside the run folder -------------------------------------------
def _stage(calls: list, name: str = "quantize") -> types.ModuleType:
    m = types.ModuleType("fake_stage")
    m.NAME, m.TOOLS = name, ()

    def run(inputs, settings, ctx):
        calls.append(ctx.out)
        ctx.out.parent.mkdir(parents=True, exist_ok=True)
        ctx.out.write_text("made inside")
        return StageOutput({})

    m.run = run
    return m


@pytest.mark.parametrize("how", ["absolute", "dotdot", "link"])
def test_an_outside_manifest_path_is_never_used(tmp_path, how, capsys):
    run, outside = tmp_path / "run", tmp_path / "outside.onnx"
    run.mkdir()
    outside.write_text("made inside")  # the same bytes, so the same sha256
    calls: list = []
    ex = Executor(run)
    ex.step(_stage(calls), "fp16", "model.fp16.onnx", [], {"a": 1})
    m = json.loads((run / MANIFEST).read_text())
    rel = {"absolute": str(outside), "dotdot": "../outside.onnx", "link": "model.link.onnx"}[how]
    if how == "link":
        (run / rel).symlink_to(outside)
    m["artifacts"]["fp16"]["path"] = rel
    (run / MANIFEST).write_text(json.dumps(m))
    ex = Executor(run)
    a = ex.step(_stage(calls), "fp16", "model.fp16.onnx", [], {"a": 1})
    assert len(calls) == 2 and a.path == run / "model.fp16.onnx"  # redone, inside
    err = capsys.readouterr().err
    assert "cached" not in err and "redoing quantize fp16" in err
    assert json.loads((run / MANIFEST).read_text())["artifacts"]["fp16"]["path"] == "model.fp16.onnx"


def test_verify_names_an_outside_path(recorded, tmp_path):
    m = json.loads((recorded / MANIFEST).read_text())
    m["artifacts"]["run.json"]["path"] = "/etc/hostname"
    (recorded / MANIFEST).write_text(json.dumps(m))
    found = problems(recorded)
    assert any("manifest entry run.json" in p and "not a path inside the run folder" in p for p in found)


# -- 3: report and run verify what they read ------------------------------------------------
def _tamper(path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new))


def test_a_tampered_check_is_not_shown_as_passed(recorded):
    _tamper(recorded / "check" / "bf16.json", b'"top1": 90.0', b'"top1": 14.0')
    run, rows = collect(recorded)
    bf16 = next(r for r in rows if r.tag == "bf16")
    assert bf16.unverified == "check/bf16.json does not match the manifest"
    assert bf16.accuracy.get("top1") is None and not bf16.fastest  # the tampered number is not read
    head, body = table_rows(task_of(run), rows)
    cells = dict(zip(head, next(b for b in body if b[0] == "bf16")))
    assert cells["gates"] == "UNVERIFIED: check/bf16.json does not match the manifest"
    assert "14.0" not in " ".join(body[[b[0] for b in body].index("bf16")])
    assert any("bf16" in ln and "UNVERIFIED" in ln for ln in summary_lines(run, rows))
    assert problems(recorded) == ["check/bf16.json does not match the manifest"]


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_broken_model_marks_its_row(recorded, damage):
    model = recorded / "model.fp32.onnx"
    model.write_bytes(b"x") if damage == "truncate" else model.unlink()
    _, rows = collect(recorded)
    fp32 = next(r for r in rows if r.tag == "fp32")
    assert fp32.unverified == ("model.fp32.onnx " + ("does not match the manifest" if damage == "truncate"
                                                     else "is missing"))


def test_an_undecodable_result_is_one_line(run_dir):  # noqa: F811
    (run_dir / "check" / "bf16.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="cannot read result file .*bf16.json"):
        collect(run_dir)


def test_a_tampered_run_json_is_refused(recorded):
    _tamper(recorded / "run.json", b'"accuracy_meaningful": true', b'"accuracy_meaningful": false')
    with pytest.raises(InputError, match="run.json does not match the manifest: `optim run RECIPE` redoes it"):
        collect(recorded)


def test_run_redoes_a_tampered_file_saying_which(tmp_path, capsys):
    calls: list = []
    check = _stage(calls, "check")
    Executor(tmp_path).step(check, "check/fp16", "check/fp16.json", [], {"a": 1}, kind="result")
    (tmp_path / "check" / "fp16.json").write_text("made inside, edited")
    Executor(tmp_path).step(check, "check/fp16", "check/fp16.json", [], {"a": 1}, kind="result")
    assert len(calls) == 2
    assert "check/fp16.json does not match the manifest: redoing check fp16" in capsys.readouterr().err


def test_verify_command(recorded):
    assert optim("verify", recorded).returncode == 0
    (recorded / "stray.txt").write_text("?")
    _tamper(recorded / "check" / "bf16.json", b'"top1": 90.0', b'"top1": 14.0')
    p = optim("verify", recorded)
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert lines == ["problem: check/bf16.json does not match the manifest",
                     "problem: stray.txt is not in the manifest (a stray file)"]


# -- 5: --force recovers from a broken manifest ---------------------------------------------
def test_force_recovers_from_a_broken_manifest(tmp_path):
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(InputError, match=r"not a valid optim manifest .*`optim run RECIPE --force` redoes"):
        Executor(tmp_path)
    calls: list = []
    ex = Executor(tmp_path, force=True)
    ex.step(_stage(calls), "fp16", "model.fp16.onnx", [], {"a": 1})
    assert problems(tmp_path) == []


# -- 8: a failed manifest write leaves a manifest that verifies -----------------------------
def test_a_failed_manifest_write_leaves_it_true(tmp_path, monkeypatch):
    import errno

    from optim import artifacts
    from optim.errors import WriteError

    rd = RunDir(tmp_path)
    (tmp_path / "run.json").write_text('{"a": 1}')
    rd.record("run", "run.json", "run")
    (tmp_path / "run.json").write_text('{"a": 2}')  # replaced, then the manifest write fails once
    real, failed = artifacts.write_text, []

    def full_once(path, text):
        if path.name == MANIFEST and not failed:
            failed.append(1)
            raise artifacts.write_failed(path, OSError(errno.ENOSPC, "No space left on device"))
        real(path, text)

    monkeypatch.setattr(artifacts, "write_text", full_once)
    with pytest.raises(WriteError, match=f"cannot write {tmp_path / MANIFEST}: No space left"):
        rd.record("run", "run.json", "run")
    assert problems(tmp_path) == []


def test_a_full_out_root_at_lock_time_names_the_lock(tmp_path, monkeypatch):
    import errno

    from optim import runlock
    from optim.errors import WriteError

    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runlock.os, "pwrite", full)
    with pytest.raises(WriteError) as info:
        RunLock(tmp_path / "run").acquire()
    assert str(info.value) == (f"taking the lock of run folder {tmp_path / 'run'}: cannot write "
                               f"{tmp_path / 'run' / LOCK_NAME}: No space left on device [ENOSPC]; free some "
                               "space or write elsewhere")
    monkeypatch.undo()
    RunLock(tmp_path / "run", wait=False).acquire().release()  # the failed writer let go of the lock
