"""Check stage: metrics on hand-made arrays, gates, and a real candidate vs reference."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from optim.artifacts import Data
from optim.errors import DataError, GateError
from optim.settings import QuantizeSettings
from optim.stages.check import CheckResult, check_files, raise_on_failures, settings_for
from optim.stages.quantize.stage import quantize_onnx
from optim.tasks.classification import Classification, Gates, output_deltas, topk_accuracy


def apply_gates(r: CheckResult, gates: Gates):
    return Classification().apply_gates(r.outputs, r.accuracy, gates)


def check_candidate(cand, ref, x, y, gates: Gates, tag: str = "", batch_size: int = 256) -> CheckResult:
    return check_files(cand, ref, Data.of("evaluation", x, y), settings_for("classification", gates,
                                                                             batch_size=batch_size), tag=tag)


def test_output_deltas_by_hand():
    ref = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], np.float32)
    got = np.array([[1.0, 0.5, 0.0], [0.0, 0.0, 3.0]], np.float32)
    d = output_deltas(ref, got)
    assert d["max_abs_error"] == pytest.approx(3.0)
    assert d["mean_abs_error"] == pytest.approx((0.5 + 2 + 3) / 6)
    cos0 = 1 / np.sqrt(1.25)
    assert d["cosine"] == pytest.approx((cos0 + 0.0) / 2)
    assert d["min_cosine"] == pytest.approx(0.0)
    assert d["top1_agreement"] == pytest.approx(50.0)
    assert d["top5_overlap"] == pytest.approx(100.0)  # 3 classes: the top-3 sets always match
    assert d["kl_divergence"] > 0


def test_top5_overlap_and_kl_by_hand():
    ref = np.array([[9, 8, 7, 6, 5, 0, 0, 0]], np.float32)
    got = np.array([[9, 8, 7, 0, 0, 6, 5, 0]], np.float32)  # two of the top five replaced
    d = output_deltas(ref, got)
    assert d["top5_overlap"] == pytest.approx(60.0)
    p = np.exp(ref[0]) / np.exp(ref[0]).sum()
    q = np.exp(got[0]) / np.exp(got[0]).sum()
    assert d["kl_divergence"] == pytest.approx(float((p * np.log(p / q)).sum()), rel=1e-5)
    assert output_deltas(ref, ref)["kl_divergence"] == pytest.approx(0.0, abs=1e-9)


def test_output_deltas_shape_mismatch():
    with pytest.raises(DataError, match="shape"):
        output_deltas(np.zeros((2, 3)), np.zeros((2, 4)))


def test_topk_accuracy_by_hand():
    logits = np.array([[0.1, 0.9, 0.0, 0, 0, 0], [0.9, 0.1, 0.0, 0, 0, 0.5]], np.float32)
    acc = topk_accuracy(logits, np.array([1, 5]))
    assert acc["top1"] == pytest.approx(50.0)
    assert acc["top5"] == pytest.approx(100.0)
    with pytest.raises(DataError, match="does not fit 6 classes"):
        topk_accuracy(logits, np.array([1, 6]))


def _result(top1_delta=-0.5, cosine=0.995, agree=99.0, max_abs=0.2, with_acc=True) -> CheckResult:
    acc = {"top1": 90 + top1_delta, "top5": 99, "reference_top1": 90, "reference_top5": 99,
           "top1_delta": top1_delta, "top5_delta": 0} if with_acc else None
    outs = {"logits": {"max_abs_error": max_abs, "mean_abs_error": 0.01, "cosine": cosine,
                       "min_cosine": cosine, "top1_agreement": agree}}
    return CheckResult("int8-tensorrt", "c.onnx", "r.onnx", 100, "m", "m", outs, acc)


def test_gates_pass_and_fail_with_values_and_limits():
    r = _result()
    r.gates = apply_gates(r, Gates(max_top1_drop=1.0, min_cosine=0.999, min_top1_agreement=98,
                                   max_abs_error=0.1))
    by = {g.gate: g for g in r.gates}
    assert by["max_top1_drop"].passed and by["max_top1_drop"].value == pytest.approx(0.5)
    assert not by["min_cosine"].passed and by["min_cosine"].limit == 0.999
    assert by["min_top1_agreement"].passed
    assert not by["max_abs_error"].passed
    assert not r.passed
    with pytest.raises(GateError) as exc:
        raise_on_failures([r])
    msg = str(exc.value)
    assert "min_cosine" in msg and "int8-tensorrt" in msg and "0.995" in msg and "0.999" in msg
    assert "+1 more" in msg
    assert GateError.exit_code != 0


def test_a_gate_line_never_says_minus_zero():
    from optim.tasks.base import GateResult

    assert GateResult("max_map_drop", -0.0, 1.0, True).line("fp16") == \
        "gate max_map_drop passed for fp16: measured 0, limit 1"
    assert "measured -0.25," in GateResult("max_map_drop", -0.25, 1.0, True).line("fp16")


def test_no_gates_no_failure():
    r = _result()
    r.gates = apply_gates(r, Gates())
    assert r.gates == [] and r.passed
    raise_on_failures([r])


def test_top1_gate_needs_labels():
    with pytest.raises(DataError, match="labelled"):
        apply_gates(_result(with_acc=False), Gates(max_top1_drop=1.0))


def test_result_json_round_trip():
    r = _result()
    r.gates = apply_gates(r, Gates(min_cosine=0.9))
    back = CheckResult.from_dict(r.as_dict())
    assert back == r and back.as_dict()["passed"] is True


@pytest.mark.slow  # quantizes
def test_check_candidate_end_to_end(tmp_path, tiny_onnx, calib_x, eval_xy):
    x, y = eval_xy
    cand = tmp_path / "int8.onnx"
    quantize_onnx(tiny_onnx, QuantizeSettings(precision="int8", method="max"), cand, calib_x)
    res = check_candidate(cand, tiny_onnx, x, y, Gates(max_top1_drop=50.0, min_cosine=0.9), tag="int8",
                          batch_size=16)
    assert res.samples == len(x)
    assert res.accuracy["reference_top1"] == pytest.approx(100.0)  # labels are FP32's predictions
    assert res.accuracy["top1_delta"] == pytest.approx(res.accuracy["top1"] - 100.0)
    d = res.outputs["logits"]
    assert 0 < d["max_abs_error"] and 0.9 < d["cosine"] <= 1.0 + 1e-9
    assert res.passed and [g.gate for g in res.gates] == ["max_top1_drop", "min_cosine"]
    strict = check_candidate(cand, tiny_onnx, x, y, Gates(max_abs_error=0.0), tag="int8", batch_size=16)
    assert not strict.passed


def test_check_identical_model_is_exact(tiny_onnx, eval_xy):
    x, y = eval_xy
    res = check_candidate(tiny_onnx, tiny_onnx, x, y, Gates(max_abs_error=0.0))
    assert res.outputs["logits"]["max_abs_error"] == 0.0 and res.passed


# -- references that cannot discriminate ---------------------------------------------------------

def _logits(n=32, classes=10, seed=0):
    return np.random.default_rng(seed).standard_normal((n, classes)).astype(np.float32)


@pytest.mark.parametrize("ref,fragment", [
    (np.zeros((32, 10), np.float32), "is all zeros"),
    (_logits() * 1e-14, "about zero everywhere"),
    (np.tile(_logits(1), (32, 1)) + _logits() * 1e-9, "does not vary with the input"),
    (_logits() + np.eye(10, dtype=np.float32)[3] * 100, "one class predicted for all inputs (class 3 for all 32)"),
])
def test_reference_that_cannot_discriminate_is_named(ref, fragment):
    warnings = Classification().reference_warnings({"logits": ref})
    assert len(warnings) == 1 and fragment in warnings[0], warnings


def test_ordinary_reference_has_no_warning():
    x = _logits()
    assert Classification().reference_warnings({"logits": x}, x.argmax(1)) == []
    assert Classification().reference_warnings({"logits": x}) == []


def test_chance_level_reference_is_named():
    x = _logits(200)
    wrong = (x.argmax(1) + 1) % 10  # labels the model never gets right
    (w,) = Classification().reference_warnings({"logits": x}, wrong)
    assert "at chance level (top-1 0.00%, 10 classes)" in w


def _zeros_model(path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    g = helper.make_graph([helper.make_node("Mul", ["x", "zero"], ["y"])], "zeros", [x], [y], [zero])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_zero_output_model_check_says_not_meaningful(tmp_path):
    path = _zeros_model(tmp_path / "zeros.onnx")
    data = Data.of("evaluation", np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32))
    res = check_files(path, path, data, settings_for("classification", Gates(min_cosine=0.99)))
    assert res.warnings == ["output 'y' is all zeros"]
    assert "NOT MEANINGFUL: output 'y' is all zeros" in res.summary()
    assert res.passed  # the gate still reads its number; the warning says what that number is worth


def test_zero_output_model_cli_check_says_not_meaningful(tmp_path):
    from tests.helpers.cli import optim

    path = _zeros_model(tmp_path / "zeros.onnx")
    p = optim("check", path, "--reference", path, "--data", "synthetic:16")
    assert p.returncode == 0, p.stderr
    assert "NOT MEANINGFUL: output 'y' is all zeros" in p.stdout
