"""``optim add-nms``: decode + NMS appended inside a YOLOv8-layout detector's ONNX graph."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from optim.console import info
from optim.errors import ModelError, first_line


def register(app: typer.Typer) -> None:
    @app.command("add-nms")
    def add_nms(
        model: Annotated[Path, typer.Argument(metavar="MODEL.onnx", help="Detector whose output is the raw [N, 4 + classes, anchors] (YOLOv8) layout.")],
        out: Annotated[Path, typer.Argument(metavar="OUT.onnx", help="ONNX file to write.")],
        max_det: Annotated[int, typer.Option("--max-det", help="Boxes kept per image (1..3840); outputs are padded to this many rows.")] = 100,
        conf: Annotated[float, typer.Option("--conf", help="Keep boxes whose class score is above this.")] = 0.25,
        iou: Annotated[float, typer.Option("--iou", help="NMS IoU threshold: a box overlapping a kept box of its class by more is dropped.")] = 0.7,
        output_name: Annotated[str | None, typer.Option("--output-name", help="The raw detection output (default: the first output).")] = None,
        keep_raw: Annotated[bool, typer.Option("--keep-raw", help="Keep the raw output as well (after the four NMS outputs).")] = False,
        form: Annotated[str, typer.Option("--form", help="ops: exact greedy NMS in plain ops (TensorRT-RTX builds it); nms_op: the ONNX NonMaxSuppression op (TensorRT 10/11 only).")] = "ops",
        max_candidates: Annotated[int, typer.Option("--max-candidates", help="--form ops: the best anchors above conf that NMS considers (1..3840).")] = 1024,
    ) -> None:
        """Append decode + class-aware NMS to a detector's ONNX graph.

        Outputs num_dets [N, 1] int32, det_boxes [N, max-det, 4] (x1, y1, x2, y2 in input
        pixels), det_scores [N, max-det] and det_classes [N, max-det] int32, the layout of
        TensorRT's EfficientNMS; rows past num_dets are zero. Standard ONNX ops only, so
        ONNX Runtime and TensorRT (--form ops: TensorRT-RTX too) take the file. The raw output is
        dropped unless --keep-raw."""
        import onnx

        from optim.artifacts import atomic_path, check_output_file, stage_writes
        from optim.onnx_tools import load_onnx, show_dim
        from optim.tasks.detect_graph import OUTPUTS, check_params, raw_output, with_nms

        check_output_file(out, "OUT")
        check_params(max_det, conf, iou, form=form, max_candidates=max_candidates)
        src = load_onnx(model)
        raw = raw_output(src, output_name)
        new = with_nms(src, max_det=max_det, conf=conf, iou=iou, output=output_name, keep_raw=keep_raw, form=form,
                       max_candidates=max_candidates)
        with stage_writes("add-nms"), atomic_path(out) as tmp:
            onnx.save(new, str(tmp))
            try:
                onnx.checker.check_model(str(tmp), full_check=True)
            except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
                raise ModelError(f"the model with NMS fails the ONNX checker (nothing written): "
                                 f"{first_line(exc)}") from None
        anchors = show_dim(raw.anchors)  # a symbolic size can be a 300-character expression
        layout = f"[N, {raw.classes + 4}, {anchors}] ({raw.classes} classes)" if raw.classes is not None \
            else f"[N, 4 + classes, {anchors}]"
        info(f"wrote {out}: NMS after {raw.name!r} {layout} -> "
             f"{', '.join(OUTPUTS)}{' + raw' if keep_raw else ''}; max-det {max_det}, conf {conf:g}, iou {iou:g}; "
             f"form {form}" + (f" (up to {max_candidates} candidates)" if form == "ops" else " (not TensorRT-RTX)"))
