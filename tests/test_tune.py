"""The tune stage: sensitivity ranking and the accuracy budget, on a tiny CNN with one broken layer.

The first convolution has one output channel with a huge outlier (weights x300,
bias 300) which the second convolution ignores in FP32 (its weights for that
channel are zero). Quantizing the second convolution's input per tensor then
crushes every other channel: that node, and only that node, is broken.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from optim.stages.tune.budget import apply_budget
from optim.errors import QuantizeError
from optim.stages.tune.edit import dequantize_nodes, quantized_nodes
from optim.stages.quantize.stage import quantize_onnx
from optim.settings import QuantizeSettings
from optim.backends import open_runner
from optim.stages.tune.sensitivity import Evaluator, node_sensitivity

BROKEN = "/2/Conv"


def broken_cnn():
    import torch
    from torch import nn

    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
        nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5),
    ).eval()
    xs = torch.from_numpy(_inputs())
    with torch.no_grad():
        m[0].weight[0] *= 300.0
        m[0].bias[0] = 300.0
        m[2].weight[:, 0] = 0.0
        feats = m[:6](xs)  # centre and scale the head so that every class wins somewhere
        m[6].weight.mul_(1.0 / feats.std(0).clamp_min(1e-6))
        m[6].bias.copy_(-(m[6].weight @ feats.mean(0)))
    return m


def _inputs() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((128, 3, 16, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    from optim.stages.export import onnx_from_torch
    from optim.settings import ExportSettings, InputSpec
    from optim.sources import LoadedModel

    d = tmp_path_factory.mktemp("broken")
    fp32, int8 = d / "fp32.onnx", d / "int8.onnx"
    onnx_from_torch(LoadedModel(broken_cnn(), "broken", None), InputSpec(shape=(3, 16, 16)),
                    ExportSettings(output_names=("logits",)), fp32)
    x = _inputs()
    quantize_onnx(fp32, QuantizeSettings(precision="int8", method="max"), int8, x[:32])
    with open_runner(fp32) as r:
        ref = r.infer({"input": x})["logits"]
    assert len(set(ref.argmax(1))) == 5  # the fixture is not degenerate
    return onnx.load(str(int8)), x, ref


def _ev(broken, labels=False):
    _, x, ref = broken
    return Evaluator(x, ref, ref.argmax(1) if labels else None)


def test_taking_every_node_back_gives_fp32(broken):
    model, x, ref = broken
    names = [n.name for n in quantized_nodes(model)]
    assert BROKEN in names and len(names) >= 3
    back = dequantize_nodes(model, names)
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in back.graph.node)
    np.testing.assert_allclose(_ev(broken).run(back)["output"], ref, atol=1e-4)


def test_sensitivity_ranks_the_broken_layer_first(broken):
    model, _, _ = broken
    ev = _ev(broken)
    rep = node_sensitivity(model, ev)
    top, second = rep.rows[0], rep.rows[1]
    assert top.node == BROKEN and top.op_type == "Conv"
    assert top.output_error > 100 * second.output_error
    assert top.metric_drop > 50.0  # top-1 agreement with FP32 collapses
    assert rep.full.drop > 50.0 and rep.metric == "agreement"
    assert rep.evaluations == len(rep.rows) + 2 and rep.seconds > 0  # + full model + reversibility check


def test_budget_excludes_exactly_the_broken_layer(broken):
    model, _, _ = broken
    out, res = apply_budget(model, _ev(broken, labels=True), max_drop=2.0)
    assert res.metric == "top1"
    assert [e["node"] for e in res.excluded] == [BROKEN]
    assert "rank 1 of" in res.excluded[0]["why"]
    assert res.before.drop > 50.0 and res.after.drop <= 2.0
    remaining = {n.name for n in quantized_nodes(out)}
    assert BROKEN not in remaining and len(remaining) == len(quantized_nodes(model)) - 1


def test_budget_already_met_changes_nothing(broken):
    model, _, _ = broken
    out, res = apply_budget(model, _ev(broken), max_drop=100.0)
    assert res.excluded == [] and res.sensitivity is None and res.evaluations == 1
    assert out.SerializeToString() == model.SerializeToString()


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(max_drop=-1.0), "even with every quantized node"),
    (dict(max_drop=0.0, max_excluded=0), "with up to 0 nodes"),
])
def test_impossible_budget_fails_cleanly(broken, kwargs, fragment):
    model, _, _ = broken
    with pytest.raises(QuantizeError, match=fragment) as exc:
        apply_budget(model, _ev(broken), **kwargs)
    assert "cannot be met" in str(exc.value) and "smallest drop reached" in str(exc.value)


def test_budget_is_deterministic(broken):
    model, _, _ = broken
    a, ra = apply_budget(model, _ev(broken), max_drop=0.0)
    b, rb = apply_budget(model, _ev(broken), max_drop=0.0)
    assert ra.excluded == rb.excluded and ra.steps == rb.steps
    assert a.SerializeToString() == b.SerializeToString()
    assert BROKEN in [e["node"] for e in ra.excluded]


@pytest.mark.slow  # quantizes (a quantize worker)
def test_onnxruntime_placement_is_reversible_with_fp32_weights(tmp_path, tiny_onnx, calib_x):
    """optim's ORT-placed INT8 keeps Relu explicit; its integer weights computed from FP32's again
    (unpack_weights) make every node reversible, so sensitivity and the budget run on it, and
    packing gives back the very same integers."""
    from optim.stages.tune.edit import pack_weights, unpack_weights

    q = tmp_path / "ort.onnx"
    quantize_onnx(tiny_onnx, QuantizeSettings(precision="int8", target="onnxruntime", method="max"), q, calib_x)
    with open_runner(tiny_onnx) as r:
        ref = r.infer({"input": calib_x})["logits"]
    packed = onnx.load(str(q))
    model, names = unpack_weights(packed, onnx.load(str(tiny_onnx)))
    assert names, "ORT stores its weights as integers: some must be unpacked"
    with pytest.raises(QuantizeError, match="folds operators|no quantized"):  # without FP32's weights: refused
        node_sensitivity(packed, Evaluator(calib_x, ref, None))
    rep = node_sensitivity(model, Evaluator(calib_x, ref, None))
    assert {r.op_type for r in rep.rows} >= {"Conv"}
    again = {i.name: onnx.numpy_helper.to_array(i) for i in pack_weights(model, names).graph.initializer}
    for i in packed.graph.initializer:
        if i.name.endswith("_quantized"):
            assert np.array_equal(again[i.name], onnx.numpy_helper.to_array(i)), i.name


@pytest.mark.slow  # quantizes (a quantize worker)
def test_onnxruntime_file_with_folded_relu_is_refused(tmp_path, tiny_onnx, calib_x):
    """A file whose quantizer folded Relu into the Q/DQ ranges cannot be taken back by removing Q/DQ."""
    import subprocess
    import sys

    from optim.stages.tune.edit import unpack_weights

    # ORT's quantizer in a fresh process (as optim's worker does: modelopt, run in this one by earlier
    # tests, patches ORT's calibrators), told to fold Relu as ORT does by default
    q, calib = tmp_path / "ort.onnx", tmp_path / "calib.npy"
    np.save(calib, calib_x)
    code = ("import sys, numpy as np; from pathlib import Path; import optim.stages.quantize.stage as Q; "
            "from optim.settings import QuantizeSettings; Q.KEEP_ACTIVATIONS = False; "
            "Q.quantize_here(Path(sys.argv[1]), QuantizeSettings(precision='int8', target='onnxruntime', "
            "method='max'), Path(sys.argv[2]), np.load(sys.argv[3]))")
    p = subprocess.run([sys.executable, "-c", code, str(tiny_onnx), str(q), str(calib)], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    with open_runner(tiny_onnx) as r:
        ref = r.infer({"input": calib_x})["logits"]
    model, _ = unpack_weights(onnx.load(str(q)), onnx.load(str(tiny_onnx)))
    with pytest.raises(QuantizeError, match="folds operators"):
        node_sensitivity(model, Evaluator(calib_x, ref, None))


def test_top1_metric_needs_labels(broken):
    _, x, ref = broken
    with pytest.raises(QuantizeError, match="labelled"):
        Evaluator(x, ref, None, metric="top1")


@pytest.fixture
def broken_files(tmp_path, broken):
    """The broken model's FP32 (every node taken back) and Q/DQ files."""
    model = broken[0]
    fp32, q = tmp_path / "fp32.onnx", tmp_path / "q.onnx"
    onnx.save(dequantize_nodes(model, [n.name for n in quantized_nodes(model)]), str(fp32))
    onnx.save(model, str(q))
    return fp32, q


def test_tune_stage_writes_the_budgeted_model(tmp_path, broken, broken_files):
    import json

    from optim.artifacts import Artifact, Data
    from optim.executor import StageContext
    from optim.settings import TuningSettings
    from optim.stages.tune import stage as tune

    model, x, ref = broken
    fp32, q = broken_files
    out = tmp_path / "tuned.onnx"
    t = TuningSettings(max_drop={"int8": 2.0, "fp8": 0.1}, sensitivity_samples=64)
    assert t.budget_for("int8-tensorrt") == 2.0 and t.budget_for("fp8-tensorrt") == 0.1
    s = tune.Settings(max_drop=t.budget_for("int8-tensorrt"), sensitivity_samples=64)
    inputs = [Artifact.of_file(q, "raw"), Artifact.of_file(fp32, "fp32"), Data.of("tuning", x, ref.argmax(1))]
    res = tune.run(inputs, s, StageContext(tmp_path, out, "int8-tensorrt")).result
    side = json.loads((tmp_path / "tune/int8-tensorrt.json").read_text())
    assert side["output"] == "tuned.onnx" and side["coverage"]["quantized"] < side["coverage"]["eligible"]
    assert res.sensitivity.samples == 64 and res.sensitivity.rows[0].node == BROKEN
    assert [e["node"] for e in res.budget.excluded] == [BROKEN]
    assert {n.name for n in quantized_nodes(onnx.load(str(out)))} == \
        {n.name for n in quantized_nodes(model)} - {BROKEN}
    assert res.as_dict()["budget"]["after"]["drop"] <= 2.0


@pytest.mark.slow  # optim subprocesses that quantize and tune
def test_cli_sensitivity_and_quantize_with_budget(tmp_path, broken, broken_files):
    from tests.helpers.cli import assert_one_line_error, optim

    model, x, ref = broken
    fp32, q = broken_files
    data = tmp_path / "tune.npz"
    np.savez(data, images=x, labels=ref.argmax(1))

    p = optim("sensitivity", q, "--reference", fp32, "--data", data, "--samples", "64", "--json",
              tmp_path / "s.json")
    assert p.returncode == 0, p.stderr
    first = p.stdout.splitlines()[1]
    assert first.split()[0] == "1" and BROKEN in first
    assert "evaluations of 64 samples" in p.stdout
    assert json.loads((tmp_path / "s.json").read_text())["rows"][0]["node"] == BROKEN

    out = tmp_path / "budget.onnx"
    p = optim("quantize", fp32, "--precision", "int8", "--method", "max", "--calib", data,
              "--calib-samples", "32", "--max-drop", "2", "--tune-data", data, "-o", out)
    assert p.returncode == 0, p.stderr
    assert f"kept in high precision: {BROKEN}" in p.stderr
    assert BROKEN not in {n.name for n in quantized_nodes(onnx.load(str(out)))}

    # the onnxruntime placement gets the budget too: the same node is the culprit there, and the file
    # keeps ORT's compact form (integer weights) for the nodes still quantized
    out = tmp_path / "ort.onnx"
    p = optim("quantize", fp32, "--precision", "int8", "--target", "onnxruntime", "--method", "max", "--calib",
              data, "--calib-samples", "32", "--max-drop", "2", "--tune-data", data, "-o", out)
    assert p.returncode == 0, p.stderr
    assert "INT8 for ONNX Runtime: uint8 activations x int8 weights" in p.stderr
    assert f"kept in high precision: {BROKEN}" in p.stderr
    tuned = onnx.load(str(out))
    assert BROKEN not in {n.name for n in quantized_nodes(tuned)} and quantized_nodes(tuned)
    assert any(i.name.endswith("_quantized") and i.data_type == onnx.TensorProto.INT8 for i in tuned.graph.initializer)
    used = {i for n in tuned.graph.node for i in n.input}
    assert all(i.name in used for i in tuned.graph.initializer)  # FP32's biases only where a kept node reads them

    p = optim("quantize", fp32, "--precision", "fp16", "--max-drop", "1", "-o", tmp_path / "x.onnx")
    assert_one_line_error(p, 2, "INT8/FP8")
    assert not (tmp_path / "x.onnx").exists()
