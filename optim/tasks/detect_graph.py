"""Decode + NMS inside the ONNX graph for YOLOv8-layout detectors (``optim add-nms``).

``with_nms(model)`` appends, to a model whose (first, or named) output is the raw Ultralytics
layout ``[N, 4 + nc, A]`` (``cx, cy, w, h`` in input pixels, then per-class scores), the same
post-processing as the NumPy reference :func:`optim.tasks.detect_ops.decode` (single label):
per anchor its best class and that class's score, scores above ``conf`` only, class-aware
greedy NMS at IoU ``iou`` (a box is dropped when its IoU with a kept box of its class is above
``iou``), at most ``max_det`` boxes per image, highest score first. The outputs are the layout of
TensorRT's EfficientNMS plugin, which DeepStream and Triton users expect:

=============  =====================  =========================================================
num_dets       [N, 1] int32           boxes kept per image (<= max_det)
det_boxes      [N, max_det, 4] float  x1, y1, x2, y2 in input pixels
det_scores     [N, max_det] float     score of the box's class, descending
det_classes    [N, max_det] int32     class index
=============  =====================  =========================================================

Rows at and after ``num_dets`` are zero. The batch axis stays whatever the raw output's is
(symbolic ``batch`` for optim's exports), so dynamic batch keeps working.

The raw output is **dropped** by default: a deployment graph that also returns ``[N, 4 + nc, A]``
copies it out on every inference for nothing, and EfficientNMS-style consumers look for the four
outputs only. ``keep_raw=True`` (``--keep-raw``) keeps it after the four, e.g. to compare against
``decode`` on the same run. Any other outputs of the model are kept, after the four.

Ops, and why
------------
Only standard ``ai.onnx`` ops (opset >= 13) that both ONNX Runtime and TensorRT's ONNX parser
import. The EfficientNMS_TRT plugin op is avoided on purpose: ONNX Runtime cannot run it, so
the file could not be checked (or used) off TensorRT. Checked against onnx-tensorrt 10.1-GA
(``docs/operators.md``, ``onnxOpImporters.cpp``) and TensorRT 10.16.1 / 11.1.0 ``NvInfer.h``:

* ``Slice``, ``Transpose``, ``Div``, ``Sub``, ``Add``, ``Concat``: xywh -> xyxy, exactly as
  ``detect_ops.xywh2xyxy`` computes it in float32 (``w / 2`` is exact in both). Slice's
  ``axes`` must be an initializer for TensorRT: all constants here are initializers.
* ``ArgMax`` (keepdims, first index on ties, as ``numpy.argmax``) + ``GatherElements``: the
  best class and its score, the exact float the reference uses (no ReduceMax, whose ``axes``
  moved from attribute to input at opset 18).
* ``Equal`` (against a ``0 .. nc-1`` initializer; ``Shape``/``Gather``/``Range``/``Unsqueeze``
  where the file does not fix nc) + ``Where``: a ``[N, nc, A]`` score tensor holding each
  anchor's score in its best class only (-1 elsewhere, never above ``conf >= 0``).
* ``NonMaxSuppression`` (TensorRT: FP32/FP16, ``INMSLayer``) with all ``nc`` classes: the op's
  own per-class NMS is class-aware NMS, so the reference's offset trick (shift each class's
  boxes by ``class * offset``, one-class NMS) is not needed. It would also cost accuracy here:
  both runtimes compute IoU in float32, where a 40,000-pixel offset leaves ~0.004 px of
  coordinate precision, enough to flip boxes whose IoU is near the threshold; on unshifted
  boxes float32 IoU stays within rounding of the reference's float64 IoU. ``max_output_boxes_per_class = max_det``,
  ``score_threshold = conf`` (kept when score > conf, like ``decode``), ``iou_threshold = iou``,
  each a one-element initializer (TensorRT's importer turns volume-1 tensors into scalars).
* ``ScatterND`` (no ``reduction``: TensorRT rejects that attribute) of ``batch + 1`` (``Gather``,
  ``Add``, ``Cast``: >= 1, elementwise, so no shape tensor depends on NMS's output) at the
  selected ``(batch, anchor)`` pairs into a ``ConstantOfShape`` zero ``[N, A]`` mask, then
  ``Greater`` 0.5: turns NMS's data-dependent ``[K, 3]`` list into fixed-shape tensors without
  a Loop. Each anchor is selected in one class at most, so no index repeats.
* ``TopK`` with ``K = max_det`` as an initializer (so the outputs have a fixed ``max_det``
  axis; older parsers also required it) and ``sorted = 1`` (the parser's table: "``sorted`` must
  be 1"; K at most 3840, ITopKLayer): the kept scores (others -1), best first. Where ``A`` may be below ``max_det``, a
  ``ConstantOfShape`` pad of -1 columns is concatenated first.
* ``ReduceSum`` (``axes`` an initializer) + ``Min``: ``num_dets``; ``Less`` against a
  ``0 .. max_det-1`` row: which rows are valid; ``Unsqueeze``, ``Expand``, ``GatherElements``,
  ``Where``, ``Cast``: gather boxes and classes, zero the padding rows, int32 outputs.
* Avoided: ``Loop``/``If`` (TensorRT wants loop-carried shapes fixed), ``NonZero`` (data-dependent
  shapes again), ``ReduceMax`` (opset-dependent signature), ``ScatterElements`` with reduction.

Where the runtimes can differ from ``decode`` (none of these arise for the bundled 160x160
detector, A = 525):

* ``decode`` keeps at most 30,000 candidates (``MAX_NMS``) before NMS; the graph keeps all of
  them (ONNX Runtime) or, on TensorRT, the 5,000 best above ``conf`` per image (2,000 on
  SM 5.3/6.2: ``INMSLayer``'s TopK box limit, NvInfer.h). Only matters with that many
  candidates above ``conf``.
* Equal scores: ``decode`` keeps the lower anchor index first; TensorRT leaves the order of equal
  scores unspecified. IoU is float32 in both runtimes, float64 in ``decode``.
* ``multi_label`` (one box per class above ``conf``) is not built.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from optim.errors import InputError, ModelError

OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_classes")
PREFIX = "optim_nms/"
MIN_OPSET = 13  # Squeeze/Unsqueeze/ReduceSum take axes as an input from 13
MAX_TOPK = 3840  # TensorRT ITopKLayer: "Currently only values of K up to 3840 are supported"
METADATA_KEY = "optim.nms"


@dataclass(frozen=True)
class RawOutput:
    """The raw detection output: its name, class count and anchors (int; str or None where the
    model does not fix them: the graph then reads them at run time)."""

    name: str
    classes: int | None
    anchors: int | str | None
    batch: int | str | None
    elem_type: int


def _dims(vi: onnx.ValueInfoProto) -> list[int | str | None] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]


def _default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def raw_output(model: onnx.ModelProto, output: str | None = None) -> RawOutput:
    """The output holding the raw ``[N, 4 + nc, A]`` layout (the first, or the one named);
    a ModelError saying what is wrong when it is not that layout."""
    outs = list(model.graph.output)
    if not outs:
        raise ModelError("the model has no outputs")
    names = [o.name for o in outs]
    taken = [n for n in OUTPUTS if n in names]
    if taken:
        raise ModelError(f"the model already has output {taken[0]!r}: NMS was added already "
                         "(give the model without it)")
    if output is None:
        vi = outs[0]
    elif output in names:
        vi = outs[names.index(output)]
    else:
        raise ModelError(f"the model has no output {output!r}; its outputs are {', '.join(names)}")
    dims = _dims(vi)
    if dims is None or not all(isinstance(d, int) for d in dims[1:]):
        # a size not recorded (torch.onnx names Concat outputs' sizes "Concatoutput0_dim_1"):
        # shape inference with data propagation usually knows it
        try:
            inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
            found = next((_dims(o) for o in inferred.graph.output if o.name == vi.name), None)
        except Exception:  # noqa: BLE001 - inference failing just means "still unknown"
            found = None
        if found is not None and (dims is None or len(found) == len(dims)):
            dims = found if dims is None else [f if isinstance(f, int) else d for f, d in zip(found, dims)]
    elem = vi.type.tensor_type.elem_type
    what = f"output {vi.name!r}"
    if dims is None:
        raise ModelError(f"{what} has no known shape; a detection output must be [N, 4 + classes, anchors] "
                         "(re-export with output shapes)")
    if len(dims) != 3:
        raise ModelError(f"{what} has shape {_show(dims)}, not a detector's [N, 4 + classes, anchors] "
                         "(add-nms takes YOLOv8-layout detection models)")
    if elem not in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE):
        raise ModelError(f"{what} is {TensorProto.DataType.Name(elem).lower()}, not floating point: "
                         "not a detector's [N, 4 + classes, anchors] output")
    channels, anchors = dims[1], dims[2]
    if isinstance(channels, int) and channels < 5:
        raise ModelError(f"{what} has shape {_show(dims)}: dimension 1 must be 4 + classes (>= 5) "
                         "for a [N, 4 + classes, anchors] detection output")
    if isinstance(anchors, int) and isinstance(channels, int) and anchors < channels:
        raise ModelError(f"{what} has shape {_show(dims)}: fewer anchors than channels, so it looks like "
                         "[N, anchors, 4 + classes] (transposed) or not a detector; add-nms needs "
                         "[N, 4 + classes, anchors] (YOLOv8 layout)")
    return RawOutput(vi.name, channels - 4 if isinstance(channels, int) else None, anchors, dims[0], elem)


def _show(dims: list) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def check_params(max_det: int, conf: float, iou: float) -> None:
    """InputError naming the first bad NMS parameter."""
    if not isinstance(max_det, (int, np.integer)) or not 1 <= max_det <= MAX_TOPK:
        raise InputError(f"max_det (--max-det) must be 1..{MAX_TOPK} (TensorRT's TopK limit), got {max_det}")
    if not (np.isfinite(conf) and 0.0 <= conf < 1.0):
        raise InputError(f"conf (--conf) must be in [0, 1), got {conf}")
    if not (np.isfinite(iou) and 0.0 <= iou <= 1.0):
        raise InputError(f"iou (--iou) must be in [0, 1] (TensorRT's NMS range), got {iou}")


class _Builder:
    """Adds prefixed nodes and initializers to a graph."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.used = {n for node in graph.node for n in (*node.input, *node.output)}
        self.used |= {i.name for i in graph.initializer} | {i.name for i in graph.input}
        self.used |= {o.name for o in graph.output}

    def name(self, base: str) -> str:
        n, k = PREFIX + base, 1
        while n in self.used:
            n, k = f"{PREFIX}{base}_{k}", k + 1
        self.used.add(n)
        return n

    def const(self, base: str, value: np.ndarray) -> str:
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), n))
        return n

    def op(self, op_type: str, inputs: list[str], base: str, n_out: int = 1, out: str | None = None,
           **attrs) -> str | list[str]:
        outs = [out] if out is not None else [self.name(f"{base}" if n_out == 1 else f"{base}_{i}")
                                              for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name(f"{base}_node"), **attrs))
        return outs[0] if n_out == 1 else outs


def with_nms(model: onnx.ModelProto, *, max_det: int = 100, conf: float = 0.25, iou: float = 0.7,
             output: str | None = None, keep_raw: bool = False) -> onnx.ModelProto:
    """A copy of ``model`` with decode + class-aware NMS appended to its raw detection output.

    Outputs ``num_dets`` [N, 1] int32, ``det_boxes`` [N, max_det, 4], ``det_scores`` [N, max_det]
    (float32) and ``det_classes`` [N, max_det] int32; see the module docstring. ``output`` names
    the raw ``[N, 4 + nc, A]`` output (default: the first output). ``keep_raw`` keeps that output
    too (after the four). Bad parameters are InputErrors, an unusable model a ModelError."""
    check_params(max_det, conf, iou)
    opset = _default_opset(model)
    if opset < MIN_OPSET:
        raise ModelError(f"the model uses ONNX opset {opset}; add-nms needs opset >= {MIN_OPSET} "
                         "(re-export it, e.g. optim export --opset 17)")
    raw = raw_output(model, output)
    nc, k = raw.classes, int(max_det)

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    b = _Builder(g)
    i64 = lambda *v: np.array(v, np.int64)

    x = raw.name
    if raw.elem_type != TensorProto.FLOAT:  # ORT's NonMaxSuppression is float32 only
        x = b.op("Cast", [x], "raw_float", to=TensorProto.FLOAT)
    shape = b.op("Shape", [x], "raw_shape")  # [N, 4 + nc, A]

    # decode: xywh -> xyxy ([N, A, 4]), best class and its score ([N, 1, A])
    xywh = b.op("Slice", [x, b.const("zero", i64(0)), b.const("four", i64(4)), b.const("axis1", i64(1))], "xywh")
    scores = b.op("Slice", [x, b.const("four_b", i64(4)), b.const("end", i64(np.iinfo(np.int64).max)),
                            b.const("axis1_b", i64(1))], "scores")  # [N, nc, A]
    xywh_t = b.op("Transpose", [xywh], "xywh_t", perm=[0, 2, 1])  # [N, A, 4]
    xy = b.op("Slice", [xywh_t, b.const("zero_b", i64(0)), b.const("two", i64(2)), b.const("axis2", i64(2))], "xy")
    wh = b.op("Slice", [xywh_t, b.const("two_b", i64(2)), b.const("four_c", i64(4)), b.const("axis2_b", i64(2))], "wh")
    half = b.op("Div", [wh, b.const("two_f", np.array(2.0, np.float32))], "half_wh")
    boxes = b.op("Concat", [b.op("Sub", [xy, half], "x1y1"), b.op("Add", [xy, half], "x2y2")], "boxes", axis=2)
    cls = b.op("ArgMax", [scores], "best_class", axis=1, keepdims=1, select_last_index=0)  # [N, 1, A] int64
    best = b.op("GatherElements", [scores, cls], "best_score", axis=1)  # [N, 1, A]

    # class-aware NMS: each anchor's score in its best class only, the op's per-class NMS
    if nc is not None:
        class_ids = b.const("class_ids", np.arange(nc, dtype=np.int64).reshape(1, nc, 1))
    else:  # class count not fixed in the file: 0 .. nc-1 from the scores' shape at run time
        n_cls = b.op("Gather", [b.op("Shape", [scores], "scores_shape"), b.const("dim1", np.array(1, np.int64))],
                     "n_classes")
        ids = b.op("Range", [b.const("range_start", np.array(0, np.int64)), n_cls,
                             b.const("range_step", np.array(1, np.int64))], "class_range")
        class_ids = b.op("Unsqueeze", [ids, b.const("axes02", i64(0, 2))], "class_ids")
    onehot = b.op("Equal", [cls, class_ids], "is_best")
    minus1 = b.const("minus_one", np.array(-1.0, np.float32))
    nms_scores = b.op("Where", [onehot, scores, minus1], "nms_scores")  # [N, nc, A]
    sel = b.op("NonMaxSuppression", [boxes, nms_scores, b.const("max_per_class", i64(k)),
                                     b.const("iou_threshold", np.array([iou], np.float32)),
                                     b.const("score_threshold", np.array([conf], np.float32))],
               "selected", center_point_box=0)  # [K, 3] (batch, class, anchor)

    # selected list -> fixed-shape [N, A] mask of kept anchors
    batch_anchor = b.op("Gather", [sel, b.const("batch_anchor_cols", i64(0, 2))], "batch_anchor", axis=1)
    # updates of >= 1 per selected row, elementwise from the list itself (no data-dependent shape tensor)
    sel_batch = b.op("Gather", [sel, b.const("col0", np.array(0, np.int64))], "selected_batch", axis=1)  # [K]
    ones = b.op("Cast", [b.op("Add", [sel_batch, b.const("one", np.array(1, np.int64))], "batch_plus_1")],
                "updates", to=TensorProto.FLOAT)
    na = b.op("Gather", [shape, b.const("dims_batch_anchor", i64(0, 2))], "batch_anchors")
    zeros = b.op("ConstantOfShape", [na], "zeros", value=numpy_helper.from_array(np.array([0.0], np.float32)))
    kept = b.op("Greater", [b.op("ScatterND", [zeros, batch_anchor, ones], "kept_f"),
                            b.const("half_f", np.array(0.5, np.float32))], "kept")  # [N, A] bool

    # best max_det kept anchors per image, highest score first
    axes1 = b.const("axes1", i64(1))
    best2 = b.op("Squeeze", [best, axes1], "best_score_2d")
    cls2 = b.op("Squeeze", [cls, axes1], "best_class_2d")
    ranked = b.op("Where", [kept, best2, minus1], "ranked")  # kept scores (> conf >= 0), others -1
    if not (isinstance(raw.anchors, int) and raw.anchors >= k):  # A may be below max_det: pad
        pad_shape = b.op("Concat", [b.op("Gather", [shape, b.const("dim_batch", i64(0))], "batch_dim"),
                                    b.const("pad_cols", i64(k))], "pad_shape", axis=0)
        pad = b.op("ConstantOfShape", [pad_shape], "pad", value=numpy_helper.from_array(np.array([-1.0], np.float32)))
        ranked = b.op("Concat", [ranked, pad], "ranked_padded", axis=1)
    top_scores, top_idx = b.op("TopK", [ranked, b.const("k", i64(k))], "top", n_out=2, axis=1, largest=1, sorted=1)

    count = b.op("ReduceSum", [b.op("Cast", [kept], "kept_i32", to=TensorProto.INT32), axes1], "count", keepdims=1)
    num = b.op("Min", [count, b.const("max_det", np.array([[k]], np.int32))], "num_dets", out=OUTPUTS[0])
    valid = b.op("Less", [b.const("rows", np.arange(k, dtype=np.int32).reshape(1, k)), num], "valid")  # [N, k]
    idx = b.op("Where", [valid, top_idx, b.const("zero_i64", np.array(0, np.int64))], "det_index")
    zero_f = b.const("zero_f", np.array(0.0, np.float32))
    b.op("Where", [valid, top_scores, zero_f], "det_scores", out=OUTPUTS[2])
    classes = b.op("Cast", [b.op("GatherElements", [cls2, idx], "gathered_class", axis=1)], "class_i32",
                   to=TensorProto.INT32)
    b.op("Where", [valid, classes, b.const("zero_i32", np.array(0, np.int32))], "det_classes", out=OUTPUTS[3])
    axes2 = b.const("axes2", i64(2))
    idx4 = b.op("Expand", [b.op("Unsqueeze", [idx, axes2], "det_index_3d"), b.const("expand4", i64(1, 1, 4))],
                "det_index_4")
    gathered = b.op("GatherElements", [boxes, idx4], "gathered_boxes", axis=1)
    b.op("Where", [b.op("Unsqueeze", [valid, axes2], "valid_3d"), gathered, zero_f], "det_boxes", out=OUTPUTS[1])

    g.node.extend(b.nodes)
    g.initializer.extend(b.inits)
    n = raw.batch if raw.batch is not None else "batch"
    new_outs = [helper.make_tensor_value_info(OUTPUTS[0], TensorProto.INT32, [n, 1]),
                helper.make_tensor_value_info(OUTPUTS[1], TensorProto.FLOAT, [n, k, 4]),
                helper.make_tensor_value_info(OUTPUTS[2], TensorProto.FLOAT, [n, k]),
                helper.make_tensor_value_info(OUTPUTS[3], TensorProto.INT32, [n, k])]
    rest = [o for o in g.output if keep_raw or o.name != raw.name]
    del g.output[:]
    g.output.extend(new_outs + rest)
    for p in list(m.metadata_props):
        if p.key == METADATA_KEY:
            m.metadata_props.remove(p)
    m.metadata_props.add(key=METADATA_KEY, value=json.dumps(
        {"max_det": k, "conf": float(conf), "iou": float(iou), "raw_output": raw.name, "classes": nc,
         "raw_kept": bool(keep_raw)}))
    return m
