"""The fuse stage's work: the preprocessing op (csrc/) put in front of a model, which then takes uint8
frames (``optim.ops.preprocess.prepend``, ``optim fuse-preprocess``), run in ONNX Runtime through the
csrc/ CPU library and checked against host preprocessing. The op itself: tests/test_plugins.py."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from optim.backends import open_runner
from optim.errors import InputError
from optim.ops.preprocess import PreprocessOp, has_op, prepend, reference
from tests.helpers.cli import assert_one_line_error, optim
from tests.helpers.plugins import random_frames

pytestmark = pytest.mark.usefixtures("cpu_library_built")


def test_fused_model_matches_host_preprocessing(fused, tiny_onnx):
    path, op = fused
    model = onnx.load(str(path))
    assert has_op(model) and model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    cast, node = model.graph.node[0], model.graph.node[1]
    assert cast.op_type == "Cast" and cast.input[0] == "frames"  # uint8 stays the graph input
    assert node.op_type == "OptimPreprocess" and node.input[0] == cast.output[0]
    assert {a.name: a.s for a in node.attribute if a.name == "plugin_namespace"} == {"plugin_namespace": b"optim"}
    frames = random_frames(5, 21, 27, 3, seed=3)
    with open_runner(path) as r:
        assert "csrc/ CPU library" in r.method and r.input_names == ["frames"]
        got = r.infer({"frames": frames})["logits"]
    with open_runner(tiny_onnx) as r:
        want = r.infer({"input": reference(frames, op)})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # quantizes
def test_fused_quantized_variant_matches_too(tmp_path, fused, tiny_onnx, calib_x):
    from optim.stages.quantize.stage import quantize_onnx
    from optim.settings import QuantizeSettings

    _, op = fused
    q = tmp_path / "int8.onnx"
    quantize_onnx(tiny_onnx, QuantizeSettings(precision="int8", method="max"), q, calib_x)
    qf = tmp_path / "int8.frames.onnx"
    onnx.save(prepend(onnx.load(str(q)), op, (21, 27)), str(qf))
    frames = random_frames(4, 21, 27, 3, seed=4)
    with open_runner(qf) as r:
        got = r.infer({"frames": frames})["logits"]
    with open_runner(q) as r:
        want = r.infer({"input": reference(frames, op)})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_prepend_refuses_a_size_mismatch(tiny_onnx):
    with pytest.raises(InputError, match="wants 3x16x16"):
        prepend(onnx.load(str(tiny_onnx)), PreprocessOp(out_h=8, out_w=8), (20, 20))


def test_cli_plugins_and_fuse(tmp_path, tiny_onnx):
    p = optim("plugins")
    assert p.returncode == 0 and "cpu       yes" in p.stdout
    out = tmp_path / "f.onnx"
    p = optim("fuse-preprocess", tiny_onnx, "--frame", "30x40", "--channel-order", "BGR", "-o", out)
    assert p.returncode == 0, p.stderr
    assert has_op(onnx.load(str(out)))
    assert_one_line_error(optim("fuse-preprocess", tiny_onnx, "--frame", "big", "-o", tmp_path / "g.onnx"),
                          2, "HxW")


@pytest.mark.slow  # two optim subprocesses
def test_cli_check_feeds_frames_to_a_fused_model(tmp_path, fused, tiny_onnx):
    path, _ = fused
    data = tmp_path / "frames.npz"
    np.savez(data, images=random_frames(16, 21, 27, 3, seed=7), labels=np.zeros(16, np.int64))
    p = optim("check", path, "--reference", tiny_onnx, "--data", data, "--max-abs-error", "1e-4")
    assert p.returncode == 0, p.stderr
    assert "gate max_abs_error passed" in p.stdout and "csrc/ CPU library" in p.stdout
    wrong = tmp_path / "small.npz"
    np.savez(wrong, images=random_frames(4, 10, 10, 3))
    assert_one_line_error(optim("check", path, "--reference", tiny_onnx, "--data", wrong), 2,
                          "frames are [10, 10, 3]", "[21, 27, 3]")
