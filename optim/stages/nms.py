"""Stage: a detector's deployable with decode + NMS in the graph (a detection recipe's ``nms:`` key).

Appends ``optim.tasks.detect_graph.with_nms`` to one entry's model (FP32, INT8, FP8, FP16 or
BF16 file alike: the decode runs on the raw output, after the quantized part) and checks the
result before it is kept: on the first images of the evaluation data it must give, image by
image, the boxes, scores and classes of optim's NumPy decode + NMS of the same file's raw
output, run on the same backend (form ``ops``: the reference keeps the same ``max_candidates``
best candidates before NMS as the graph). A mismatch is a ModelError and nothing is written.
"""

from __future__ import annotations

import numpy as np
from optim.artifacts import Artifact
from optim.errors import ModelError
from optim.executor import StageContext, StageOutput
from optim.onnx_tools import load_onnx, save_onnx
from optim.settings import NmsSettings

NAME = "nms"
SUMMARY = "a detector's decode + NMS in the graph"
TOOLS = ("onnx", "onnxruntime")
CHECK_IMAGES = 8


Settings = NmsSettings


def verify(raw_path, nms_path, x: np.ndarray, s: Settings) -> int:
    """The NMS file against the NumPy decode of the raw file on ``x``; the number of boxes compared."""
    from optim.backends import open_runner
    from optim.tasks.detect_ops import MAX_NMS, decode

    cap = s.max_candidates if s.form == "ops" else MAX_NMS  # the graph's candidate cap, in the reference too
    with open_runner(raw_path) as raw, open_runner(nms_path) as nms:
        ref = decode(next(iter(raw.infer({raw.input_names[0]: x}).values())), conf=s.conf, iou=s.iou,
                     max_det=s.max_det, max_nms=cap)
        got = nms.infer({nms.input_names[0]: x})
    count, boxes, scores, classes = (got[k] for k in ("num_dets", "det_boxes", "det_scores", "det_classes"))
    for i, d in enumerate(ref):
        n = int(count[i, 0])
        if n != len(d) or not np.array_equal(classes[i, :n], d.classes) or \
                not np.allclose(boxes[i, :n], d.boxes, atol=1e-3) or not np.allclose(scores[i, :n], d.scores, atol=1e-5):
            raise ModelError(f"{nms_path.name}: the in-graph NMS kept {n} boxes on image {i} where optim's "
                             f"decode keeps {len(d)} (or other boxes): not written")
    return sum(len(d) for d in ref)


def run(inputs: list[Artifact], settings: Settings, ctx: StageContext) -> StageOutput:
    """``inputs``: the entry's model and the evaluation ``Data``. Writes the NMS model to ``ctx.out``."""
    import shutil
    import tempfile
    from pathlib import Path

    from optim.artifacts import atomic_path

    from optim.console import info
    from optim.tasks.detect_graph import with_nms

    model, data = inputs
    with_decode = with_nms(load_onnx(model.path), max_det=settings.max_det, conf=settings.conf, iou=settings.iou,
                 form=settings.form, max_candidates=settings.max_candidates)
    with tempfile.TemporaryDirectory(prefix="optim-nms-") as d:
        tmp = Path(d) / ctx.out.name
        save_onnx(with_decode, tmp)
        boxes = verify(model.path, tmp, np.ascontiguousarray(data.x[:CHECK_IMAGES]), settings)
        with atomic_path(ctx.out) as final:  # the checked file itself, not a second serialisation
            shutil.copyfile(tmp, final)
    info(f"  {ctx.out.name}: decode + NMS in the graph (form {settings.form}), {boxes} boxes on "
         f"{min(CHECK_IMAGES, len(data.x))} images identical to optim's decode")
    return StageOutput({**settings.model_dump(mode="json"), "verified_boxes": boxes})
