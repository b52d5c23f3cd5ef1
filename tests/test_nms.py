"""The nms stage (``optim.stages.nms``): a detector's deployable with decode + NMS in the graph, checked
against the NumPy decode before it is kept. The graph itself (``optim add-nms``,
``optim.tasks.detect_graph``) is tested in tests/test_detect_graph.py."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from optim.errors import ModelError
from optim.tasks.detect_graph import with_nms
from tests.helpers.detectors import raw_scene
from tests.helpers.models import identity_model


def test_stage_verify_uses_the_graphs_candidate_cap(tmp_path):
    """The nms stage checks a form-ops file against decode with the same cap: a file made with
    another cap than the settings say is refused (more boxes above conf than the file's cap)."""
    from optim.settings import NmsSettings
    from optim.stages.nms import verify

    raw = raw_scene(np.random.default_rng(2), 2, 4, 400)
    src, capped = tmp_path / "raw.onnx", tmp_path / "nms.onnx"
    onnx.save(identity_model(8, 400), str(src))
    s = NmsSettings(max_det=100, conf=0.05, iou=0.5, max_candidates=48)
    assert NmsSettings().form == "ops" and NmsSettings().max_candidates == 1024
    onnx.save(with_nms(onnx.load(str(src)), max_det=100, conf=0.05, iou=0.5, max_candidates=48), str(capped))
    assert 0 < verify(src, capped, raw, s) <= 2 * 48
    with pytest.raises(ModelError, match="in-graph NMS kept"):
        verify(src, capped, raw, s.model_copy(update={"max_candidates": 1024}))
