"""The rules with one home: gate verdicts and the budget score every task shares (optim.tasks.base);
how a child process ended or died of a signal, and whether a leftover's writer is gone (optim.process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from optim.errors import DataError
from optim.process import CRASH_SIGNALS, ChildEnd, killed_by, owner_gone, run_child, signal_name
from optim.settings import Strict
from optim.tasks import get_task
from optim.tasks.base import GateResult, gate_results, max_abs_error, require_labels


class Gates(Strict):
    max_drop: float | None = None
    min_score: float | None = None


# gates ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("value,passed", [(0.5, True), (1.0, True), (1.5, False)])
def test_a_max_gate_passes_at_or_below_its_limit(value, passed):
    assert GateResult.judge("max_drop", value, 1.0) == GateResult("max_drop", value, 1.0, passed)


@pytest.mark.parametrize("value,passed", [(0.5, False), (1.0, True), (1.5, True)])
def test_a_min_gate_passes_at_or_above_its_limit(value, passed):
    assert GateResult.judge("min_score", value, 1.0) == GateResult("min_score", value, 1.0, passed)


def test_a_gate_name_without_a_direction_is_refused():
    with pytest.raises(ValueError, match="max_ or min_"):
        GateResult.judge("drop", 0.0, 1.0)


def test_gate_results_reads_only_the_gates_that_are_set_in_the_readers_order():
    read = []

    def reader(name, value):
        def go():
            read.append(name)
            return value
        return go

    results = gate_results(Gates(min_score=90.0, max_drop=1.0),
                           {"min_score": reader("min_score", 80.0), "max_drop": reader("max_drop", 0.2)})
    assert results == [GateResult("min_score", 80.0, 90.0, False), GateResult("max_drop", 0.2, 1.0, True)]
    assert read == ["min_score", "max_drop"]
    assert gate_results(Gates(min_score=1.0), {"min_score": reader("min_score", 2.0),
                                               "max_drop": reader("max_drop", 0.0)}) == [
        GateResult("min_score", 2.0, 1.0, True)]
    assert read == ["min_score", "max_drop", "min_score"]  # an unset gate's value is never read


def test_require_labels_names_the_first_labelled_gate_that_is_set():
    require_labels(Gates(max_drop=1.0), ("max_drop",), {"top1": 50.0})  # labels: nothing to say
    require_labels(Gates(), ("max_drop", "min_score"), None)  # no such gate set
    with pytest.raises(DataError, match="^gate min_score needs labelled evaluation data; this data has no labels$"):
        require_labels(Gates(min_score=1.0), ("max_drop", "min_score"), None)


def test_max_abs_error_is_the_worst_over_the_outputs():
    assert max_abs_error({"a": {"max_abs_error": 0.25}, "b": {"max_abs_error": 2.0}}) == 2.0


@pytest.mark.parametrize("task,drop,delta,agreement,agree_gate", [
    ("classification", "max_top1_drop", "top1_delta", "top1_agreement", "min_top1_agreement"),
    ("detection", "max_map_drop", "map_delta", "agreement", "min_agreement")])
def test_task_gates_keep_their_values_limits_and_messages(task, drop, delta, agreement, agree_gate):
    t = get_task(task)
    outputs = {"y": {"cosine": 0.99, "max_abs_error": 0.5, agreement: 97.0}, "z": {"cosine": 1.0, "max_abs_error": 0.75}}
    gates = t.gates_model(**{drop: 1.0, agree_gate: 98.0, "max_abs_error": 0.75})
    results = t.apply_gates(outputs, {delta: -0.5}, gates)
    assert [(r.gate, r.value, r.limit, r.passed) for r in results] == [
        (drop, 0.5, 1.0, True), (agree_gate, 97.0, 98.0, False), ("max_abs_error", 0.75, 0.75, True)]
    assert results[1].line("int8") == f"gate {agree_gate} FAILED for int8: measured 97, limit 98"
    with pytest.raises(DataError, match=f"^gate {drop} needs labelled evaluation data; this data has no labels$"):
        t.apply_gates(outputs, None, gates)


# the budget score ----------------------------------------------------------------------------

def test_classification_fidelity_scores_top1_drop_and_agreement():
    t = get_task("classification")
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(40, 5)).astype(np.float32)
    got = ref.copy()
    got[:4] = np.roll(got[:4], 1, axis=1)  # 4 of 40 samples change their top-1 class
    labels = ref.argmax(1)
    f = t.fidelity({"logits": ref}, {"logits": got}, labels, "top1")
    assert f.score == pytest.approx(90.0) and f.drop == pytest.approx(10.0) and f.agreement == pytest.approx(90.0)
    f = t.fidelity({"logits": ref}, {"logits": got}, None, "agreement")
    assert f.score is None and f.drop == pytest.approx(10.0)
    with pytest.raises(DataError, match="^budget metric top1 needs labelled data; use metric agreement$"):
        t.fidelity({"logits": ref}, {"logits": got}, None, "top1")


# how a child died ----------------------------------------------------------------------------

def test_signal_names():
    assert signal_name(signal.SIGSEGV) == "SIGSEGV"
    assert signal_name(signal.SIGKILL) == "SIGKILL"
    assert signal_name(200) == "signal 200"
    assert {"SIGSEGV", "SIGABRT", "SIGBUS", "SIGILL", "SIGFPE"} <= CRASH_SIGNALS
    assert "SIGKILL" not in CRASH_SIGNALS and "SIGTERM" not in CRASH_SIGNALS and "SIGINT" not in CRASH_SIGNALS


@pytest.mark.parametrize("sig,text", [("SIGKILL", "killed by SIGKILL (out of memory?)"),
                                      ("SIGSEGV", "killed by SIGSEGV (a crash in native code)"),
                                      ("SIGABRT", "killed by SIGABRT (a crash in native code)"),
                                      ("SIGTERM", "killed by SIGTERM"),
                                      ("signal 200", "killed by signal 200")])
def test_killed_by(sig, text):
    assert killed_by(sig) == text


def _child(code: str) -> ChildEnd:
    return run_child([sys.executable, "-c", code])


def test_run_child_reads_the_last_line_a_child_printed():
    end = _child("import json, sys; print('loading'); print(json.dumps({'ok': True})); sys.stderr.write('note')")
    assert end == ChildEnd(True, 0, "", {"ok": True}, "note")
    assert _child("import sys; print('not json'); sys.exit(3)") == ChildEnd(True, 3)
    assert _child("print('[1, 2]')").said == {}  # JSON, but no object
    assert _child("pass").said == {}


def test_run_child_names_the_signal_a_child_died_of():
    end = _child("import os, signal, sys; sys.stderr.write('dying'); sys.stderr.flush(); "
                 "os.kill(os.getpid(), signal.SIGSEGV)")
    assert (end.started, end.signal, end.said) == (True, "SIGSEGV", {}) and end.detail.endswith("dying")
    assert killed_by(end.signal) == "killed by SIGSEGV (a crash in native code)"
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C reached the child: it reaches this process too
        _child("import os, signal; signal.signal(signal.SIGINT, signal.SIG_DFL); os.kill(os.getpid(), signal.SIGINT)")


def test_run_child_that_cannot_start():
    end = run_child(["/nonexistent/python"])
    assert not end.started and "No such file" in end.detail


# leftovers of writers that died --------------------------------------------------------------

def test_owner_gone():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its PID names no process (until the system reuses it)
    assert owner_gone(child.pid) and owner_gone(str(child.pid))
    assert not owner_gone(os.getpid())  # this process
    assert not owner_gone(os.getppid())  # alive
    assert not owner_gone("12ab") and not owner_gone("")  # not a PID: not known gone
