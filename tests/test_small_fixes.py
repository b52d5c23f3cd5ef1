"""Messages from issue 21: what to do about symbolic input sizes, which compute nodes stayed
unquantized, no internal file names in the budget's log, short symbolic sizes in layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from optim.errors import ModelError
from optim.onnx_tools import graph_inputs, show_dim, show_dims, single_input

#: what onnxslim's shape inference writes for the anchors of a 3-scale detector exported with
#: dynamic height and width (246 characters)
LONG = " + ".join([
    "(((((((((height - 1)//2)) + 1 - 1)//2)) + 1 - 1)//2)) + 1*(((((((((width - 1)//2)) + 1 - 1)//2)) + 1 - 1)//2)) + 1",
    "((((((height - 1)//2)) + 1 - 1)//2)) + 1*((((((width - 1)//2)) + 1 - 1)//2)) + 1",
    "(((height - 1)//2)) + 1*(((width - 1)//2)) + 1",
])


def pooling_model(shape) -> onnx.ModelProto:
    """[N, C, H, W] -> [N, C]: runs at any height and width."""
    g = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["output0"])], "pool",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", shape[1]])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_symbolic_height_and_width_error_says_how_to_fix_it(tmp_path):
    """The error names the recipe's input.shape and the export that writes a fixed copy; doing
    what it says gives a file optim takes."""
    from optim.settings import ExportSettings, InputSpec
    from optim.stages.export import onnx_from_file

    src = tmp_path / "hw.onnx"
    onnx.save(pooling_model(["batch", 3, "height", "width"]), str(src))
    with pytest.raises(ModelError) as e:
        single_input(graph_inputs(onnx.load(str(src))), str(src))
    msg = str(e.value)
    assert "\n" not in msg
    assert "non-fixed sizes [3, 'height', 'width'] besides the batch axis" in msg
    assert "model.source: onnx:FILE" in msg and "input: {shape: [3, 640, 640]}" in msg and "optim run" in msg
    assert "optim export --recipe" in msg and "optim quantize/check/bench" in msg

    fixed = tmp_path / "fixed.onnx"  # what optim export --recipe does with model.source: onnx:hw.onnx
    rep = onnx_from_file(src, InputSpec(name="images", shape=(3, 32, 48)), ExportSettings(output_names=("output0",)),
                         fixed)
    assert rep.changes == ["input size 'height' fixed to 32", "input size 'width' fixed to 48"]
    assert single_input(graph_inputs(onnx.load(str(fixed))), str(fixed))[2] == (3, 32, 48)

    with pytest.raises(ModelError, match=r"non-fixed sizes \[3, 'f\(height, width\)', 8\]"):  # kept short
        single_input(graph_inputs(pooling_model(["batch", 3, LONG, 8])), "m.onnx")


def test_show_dim_keeps_sizes_short_and_honest():
    assert show_dim(640) == "640" and show_dim(None) == "?" and show_dim("") == "?"
    assert show_dim("anchors") == "anchors" and show_dim("Concatoutput0_dim_2") == "Concatoutput0_dim_2"
    assert show_dim(LONG) == "f(height, width)"
    assert show_dim("Concatoutput0_dim_2_of_a_long_name") == "Concatoutput0_dim..."
    assert show_dim(" + ".join(f"s{i}" for i in range(30))) == "?"  # too many names to list
    assert show_dims(["batch", 84, None, LONG]) == "[batch, 84, ?, f(height, width)]"


def test_add_nms_prints_a_long_symbolic_anchor_count_short(tmp_path):
    from typer.testing import CliRunner

    from optim.tasks.detect_graph import with_nms
    from tests.helpers.cli import detect_app
    from tests.helpers.models import identity_model

    src, out = tmp_path / "det.onnx", tmp_path / "nms.onnx"
    onnx.save(identity_model(7, LONG), str(src))
    r = CliRunner().invoke(detect_app(), ["add-nms", str(src), str(out)])
    assert r.exit_code == 0, (r.output, r.exception)
    line = next(ln for ln in r.output.splitlines() if ln.startswith("wrote "))
    assert "NMS after 'output0' [N, 7, f(height, width)] (3 classes)" in line and "//" not in line, line
    with pytest.raises(ModelError, match=r"has shape \[batch, f\(height, width\)\], not a detector's") as e:
        with_nms(identity_model(0, 0, out_shape=["batch", LONG]))
    assert "//" not in str(e.value)


def narrow_cnn():
    """Wide enough for modelopt's FP8 on one convolution only: it leaves the ones with few
    channels (3 in, 4 out, 4 in) and the Gemm in FP32."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 4, 1), nn.ReLU(), nn.Conv2d(4, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5),
    ).eval()


@pytest.fixture(scope="module")
def narrow_onnx(tmp_path_factory) -> Path:
    from optim.settings import ExportSettings, InputSpec
    from optim.sources import LoadedModel
    from optim.stages.export import onnx_from_torch

    out = tmp_path_factory.mktemp("narrow") / "narrow.onnx"
    onnx_from_torch(LoadedModel(narrow_cnn(), "tests:narrow_cnn", None), InputSpec(shape=(3, 16, 16)),
                    ExportSettings(output_names=("logits",)), out)
    return out


@pytest.mark.slow  # modelopt quantization
def test_quantize_names_the_nodes_it_left_unquantized(tmp_path, narrow_onnx, capsys):
    """modelopt (in the quantize worker process) skips FP8 on the narrow layers: the console line
    and quantize/<name>.json name them, not only count them."""
    from optim.artifacts import Artifact, Data
    from optim.executor import StageContext
    from optim.settings import QuantizeSettings
    from optim.stages.quantize import stage as quantize

    calib = np.random.default_rng(0).standard_normal((32, 3, 16, 16)).astype(np.float32)
    ctx = StageContext(tmp_path, tmp_path / "model.fp8.onnx", "fp8")
    inputs = [Artifact.of_file(narrow_onnx, "fp32", "onnx"), Data.of("calibration", calib)]
    rep = quantize.run(inputs, QuantizeSettings(precision="fp8", target="tensorrt", method="max"), ctx).result
    cov = json.loads((tmp_path / "quantize" / "fp8.json").read_text())["coverage"]
    assert cov["unquantized"] == rep.coverage["unquantized"]
    assert cov["quantized"] < cov["eligible"] and len(cov["unquantized"]) == cov["eligible"] - cov["quantized"]
    assert "/10/Gemm" in cov["unquantized"] and "/2/Conv" not in cov["unquantized"]
    line = next(ln for ln in capsys.readouterr().err.splitlines() if "Conv/Gemm/MatMul nodes quantized" in ln)
    assert f"model.fp8.onnx: {cov['quantized']}/{cov['eligible']} Conv/Gemm/MatMul nodes quantized" in line
    assert f"modelopt onnx ptq left {', '.join(cov['unquantized'])} unquantized" in line, line


def test_left_unquantized_text_names_five_then_counts():
    from optim.stages.quantize.stage import QuantizeReport, _left_text

    def rep(left, kept=()):
        return QuantizeReport("m.onnx", "int8", "int8", "tensorrt", "modelopt onnx ptq", "max", 8,
                              {"quantized": 1, "eligible": 1 + len(left), "unquantized": left}, 0.1, list(kept))

    assert _left_text(rep([])) == ""
    names = [f"/m.{i}/Conv" for i in range(8)]
    assert _left_text(rep(names)) == ("; modelopt onnx ptq left /m.0/Conv, /m.1/Conv, /m.2/Conv, /m.3/Conv, "
                                      "/m.4/Conv and 3 more unquantized")
    assert _left_text(rep(names[:2], kept=names[1:2])) == ("; modelopt onnx ptq left /m.0/Conv unquantized "
                                                           "(1 more kept by the exclusions)")
    assert _left_text(rep(names[:2], kept=names[:2])) == "; 2 kept unquantized by the exclusions"


@pytest.mark.slow  # quantizes and tunes
def test_budget_log_names_the_users_file_not_an_internal_one(tmp_path, tiny_onnx, calib_x, eval_xy, capsys):
    from optim.artifacts import Data
    from optim.cli.tuning import _tuning_settings, quantize_with_budget
    from optim.settings import QuantizeSettings

    x, y = eval_xy
    out = tmp_path / "mine.int8.onnx"
    s = _tuning_settings("top1", 64, None, 32, max_drop=100.0)
    quantize_with_budget(tiny_onnx, QuantizeSettings(precision="int8", target="onnxruntime", method="max"), out,
                         calib_x, Data.of("tuning", x, y), s)
    err = capsys.readouterr().err
    assert out.is_file()
    assert "raw.onnx" not in err, err
    assert "mine.int8.onnx: 4/4 Conv/Gemm/MatMul nodes quantized" in err, err
    assert "tuning mine.int8.onnx (onnxruntime quantize_static, max) on 64 samples" in err, err
