"""Export stage: dynamic batch, checks, verification against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from optim.errors import ExportError, InputError
from optim.stages.export import onnx_from_torch
from optim.onnx_tools import graph_inputs, graph_outputs, load_onnx
from optim.settings import BatchRange, ExportSettings, InputSpec
from optim.backends import open_runner
from optim.sources import LoadedModel
from tests.helpers.models import TINY_SHAPE, tiny_cnn


def test_export_has_dynamic_batch_and_matches_torch(tmp_path):
    out = tmp_path / "m.onnx"
    rep = onnx_from_torch(LoadedModel(tiny_cnn(), "t", None), InputSpec(shape=TINY_SHAPE),
                          ExportSettings(output_names=("logits",), opset=18), out)
    m = load_onnx(out)
    assert m.opset_import[0].version == 18
    (inp,), (outp,) = graph_inputs(m), graph_outputs(m)
    assert inp.name == "input" and isinstance(inp.shape[0], str) and inp.shape[1:] == TINY_SHAPE
    assert outp.name == "logits" and isinstance(outp.shape[0], str)
    assert rep.verify_batches == [1, 4] and rep.max_abs_error < 1e-4
    x = np.random.default_rng(0).standard_normal((7, *TINY_SHAPE)).astype(np.float32)
    with open_runner(out) as r, torch.no_grad():
        np.testing.assert_allclose(r.infer({"input": x})["logits"],
                                   tiny_cnn()(torch.from_numpy(x)).numpy(), atol=1e-4)


class Noisy(nn.Module):
    """Random at run time: ONNX and PyTorch cannot agree, verification must say so."""

    def forward(self, x):
        return x.flatten(1) + torch.rand_like(x.flatten(1))


def test_verification_failure_leaves_no_file(tmp_path):
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match="differs from PyTorch"):
        onnx_from_torch(LoadedModel(Noisy().eval(), "noisy", None), InputSpec(shape=(2, 3)),
                        ExportSettings(), out)
    assert list(tmp_path.iterdir()) == []


def test_verify_batch_outside_range(tmp_path):
    with pytest.raises(ExportError, match="outside the input batch range"):
        onnx_from_torch(LoadedModel(tiny_cnn(), "t", None),
                        InputSpec(shape=TINY_SHAPE, batch=BatchRange(min=1, opt=1, max=2)),
                        ExportSettings(verify_batches=(1, 4)), tmp_path / "m.onnx")


def test_wrong_input_shape_is_an_export_error(tmp_path):
    with pytest.raises(ExportError, match=r"does not accept an input of shape \[2, 5, 16, 16\]"):
        onnx_from_torch(LoadedModel(tiny_cnn(), "t", None), InputSpec(shape=(5, 16, 16)),
                        ExportSettings(), tmp_path / "m.onnx")


class TwoHeads(nn.Module):
    """Two outputs, like a detector's boxes and scores."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.box = nn.Linear(6, 4)
        self.cls = nn.Linear(6, 3)

    def forward(self, x):
        x = x.flatten(1)
        return self.box(x), self.cls(x)


def _two_heads():
    return LoadedModel(TwoHeads().eval(), "two_heads", None)


@pytest.mark.parametrize("names", [("logits",), ("a", "b", "c")])
def test_wrong_number_of_output_names_is_an_input_error(tmp_path, names):
    out = tmp_path / "m.onnx"
    with pytest.raises(InputError, match=rf"2 outputs.*{len(names)} output name.*boxes,scores") as ei:
        onnx_from_torch(_two_heads(), InputSpec(shape=(2, 3)), ExportSettings(output_names=names), out)
    assert "\n" not in str(ei.value)
    assert list(tmp_path.iterdir()) == []


def test_too_many_output_names_for_one_output(tmp_path):
    with pytest.raises(InputError, match=r"1 output.*2 output names"):
        onnx_from_torch(LoadedModel(tiny_cnn(), "t", None), InputSpec(shape=TINY_SHAPE),
                        ExportSettings(output_names=("logits", "extra")), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("names", [("boxes", "scores"), ("boxes,scores",), (" boxes , scores ",)])
def test_one_name_per_output_names_the_onnx_outputs(tmp_path, names):
    """A list of names, or one comma-separated string (what ``--output-name boxes,scores`` gives)."""
    out = tmp_path / "m.onnx"
    onnx_from_torch(_two_heads(), InputSpec(shape=(2, 3)), ExportSettings(output_names=names), out)
    outs = graph_outputs(load_onnx(out))
    assert [o.name for o in outs] == ["boxes", "scores"]
    assert [o.shape[1:] for o in outs] == [(4,), (3,)] and all(isinstance(o.shape[0], str) for o in outs)
    x = np.random.default_rng(0).standard_normal((3, 2, 3)).astype(np.float32)
    with open_runner(out) as r, torch.no_grad():
        got = r.infer({"input": x})
        ref = TwoHeads().eval()(torch.from_numpy(x))
    np.testing.assert_allclose(got["boxes"], ref[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(got["scores"], ref[1].numpy(), atol=1e-5)


def test_default_output_name_still_numbers_several_outputs(tmp_path):
    """Recipes that never set output_names keep working on multi-output models."""
    out = tmp_path / "m.onnx"
    onnx_from_torch(_two_heads(), InputSpec(shape=(2, 3)), ExportSettings(), out)
    assert [o.name for o in graph_outputs(load_onnx(out))] == ["output_0", "output_1"]


def test_default_output_name_for_one_output(tmp_path):
    out = tmp_path / "m.onnx"
    onnx_from_torch(LoadedModel(tiny_cnn(), "t", None), InputSpec(shape=TINY_SHAPE), ExportSettings(), out)
    assert [o.name for o in graph_outputs(load_onnx(out))] == ["output"]
