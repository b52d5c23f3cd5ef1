"""Export stage: dynamic batch, checks, verification against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from optim.errors import ExportError
from optim.stages.export import onnx_from_torch
from optim.onnx_tools import graph_inputs, graph_outputs, load_onnx
from optim.recipe import BatchRange, ExportSettings, InputSpec
from optim.backends import open_runner
from optim.sources import LoadedModel
from tests.conftest import TINY_SHAPE, tiny_cnn


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
