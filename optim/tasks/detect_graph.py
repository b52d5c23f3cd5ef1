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

Two forms
---------
``form="ops"`` (the default) does greedy NMS with elementary ops on the ``M`` best candidates;
``form="nms_op"`` uses the ONNX ``NonMaxSuppression`` op. Both give ``decode``'s results on
ONNX Runtime (tests/test_detect_graph.py). TensorRT-RTX parses ``nms_op`` but cannot build it
(its builder has no implementation of ``INMSLayer``: "... has no runners that implement it",
for every compute capability; it ships no EfficientNMS plugin either), while it builds ``ops``
(TensorRT-RTX 1.7, SM75 to SM121: tests/test_nms_rtx.py). The model's ``optim.nms`` metadata
(JSON) records the parameters, ``form``, ``max_candidates`` (``candidates``: the ``M`` used)
and ``builders``, the runtimes that accept the form.

Ops, and why
------------
Only standard ``ai.onnx`` ops (opset >= 13) that both ONNX Runtime and TensorRT's ONNX parser
import. The EfficientNMS_TRT plugin op is avoided on purpose: ONNX Runtime cannot run it, so
the file could not be checked (or used) off TensorRT. Checked against onnx-tensorrt 10.1-GA
(``docs/operators.md``, ``onnxOpImporters.cpp``) and TensorRT 10.16.1 / 11.1.0 ``NvInfer.h``;
the ``ops`` form also by building it with TensorRT-RTX 1.7 (not with TensorRT 10/11: their
builders need a GPU). Constants are one-element or small initializers (TensorRT wants
``axes``, ``K`` and thresholds as initializers; its importer turns volume-1 tensors into scalars).

Both forms:

* ``Cast`` to float32 where the raw output is not (decode and IoU in float32, as ``decode``).
* ``Slice``, ``Transpose``, ``Div``, ``Sub``, ``Add``, ``Concat``: xywh -> xyxy, exactly as
  ``detect_ops.xywh2xyxy`` computes it in float32 (``w / 2`` is exact in both).
* ``ArgMax`` (keepdims, first index on ties, as ``numpy.argmax``) + ``GatherElements``: the
  best class and its score, the exact float the reference uses (no ReduceMax, whose ``axes``
  moved from attribute to input at opset 18).
* ``TopK`` with ``K = max_det`` (an initializer, so the outputs have a fixed ``max_det`` axis)
  and ``sorted = 1`` (the parser's table: "``sorted`` must be 1"; K at most 3840, ITopKLayer)
  on the kept scores (others -1), best first; a ``ConstantOfShape`` pad of -1 columns first
  where fewer than ``max_det`` columns may exist.
* ``ReduceSum`` + ``Min``: ``num_dets``; ``Less`` against a ``0 .. max_det-1`` row: which rows
  are valid; ``Unsqueeze``, ``Expand``, ``GatherElements``, ``Where``, ``Cast``: gather boxes and
  classes, zero the padding rows, int32 outputs.

Form ``ops`` (``M = min(max_candidates, A)``; ``max_candidates`` where A is not fixed, after
``M`` -1 columns are padded on):

* ``Greater``/``Where`` + ``TopK(M)``: the candidates, the ``M`` best scores above ``conf``, best
  first (ONNX TopK: equal scores lower index first, as ``decode``'s stable sort; entries <= conf
  are -1 and invalid). ``decode(max_nms=M)`` is the reference with the same cap (the nms stage's
  check uses it). ``GatherElements``: their boxes and classes.
* ``Gather``/``Unsqueeze``, ``Max``, ``Min``, ``Sub``, ``Mul``, ``Add``, ``Div``: the pairwise IoU
  ``[N, M, M]`` in float32 with ``detect_ops.box_iou``'s formula (intersection clipped at 0,
  areas clipped at 0, union floored at 1e-12). ``Equal`` (classes), ``Greater`` (IoU), ``Less``
  (ranks) and ``And``: ``S[i, j]`` = candidate ``j`` ranks above ``i``, has its class and
  overlaps it by more than ``iou``. No class offsets: only same-class pairs are compared.
* ``Loop`` (trip count ``M``, with a condition): greedy NMS as a fixed point, ``keep = valid and
  no kept j with S[i, j]``, ``Mul`` + ``ReduceSum`` over ``j`` (a count, exact in float32), from
  ``keep = valid``. ``S`` is strictly triangular, so ``keep[i]`` depends on ``keep[j < i]`` only:
  after ``t`` steps entries ``0 .. t`` are final, the fixed point is unique and is greedy NMS,
  ``M`` steps always reach it, and a step that changes nothing means it was reached; the
  condition (``Sub``, ``Abs``, ``ReduceSum``, ``Greater``) stops the loop there (one step more than
  the longest chain of suppressions; exact without it too). The carried ``[N, M]`` keep keeps
  its shape, as TensorRT requires. No ``MatMul``: TensorRT-RTX cannot compile an FP32 GEMM for
  Turing (SM75) inside the loop.

Form ``nms_op``:

* ``Equal`` (against a ``0 .. nc-1`` initializer; ``Shape``/``Gather``/``Range``/``Unsqueeze``
  where the file does not fix nc) + ``Where``: a ``[N, nc, A]`` score tensor holding each
  anchor's score in its best class only (-1 elsewhere, never above ``conf >= 0``).
* ``NonMaxSuppression`` (TensorRT: FP32/FP16, ``INMSLayer``) with all ``nc`` classes: the op's
  own per-class NMS is class-aware NMS, so the reference's offset trick (shift each class's
  boxes by ``class * offset``, one-class NMS) is not needed. It would also cost accuracy here:
  both runtimes compute IoU in float32, where a 40,000-pixel offset leaves ~0.004 px of
  coordinate precision, enough to flip boxes whose IoU is near the threshold.
  ``max_output_boxes_per_class = max_det``, ``score_threshold = conf`` (kept when score > conf,
  like ``decode``), ``iou_threshold = iou``.
* ``ScatterND`` (no ``reduction``: TensorRT rejects that attribute) of ``batch + 1`` (``Gather``,
  ``Add``, ``Cast``: >= 1, elementwise, so no shape tensor depends on NMS's output) at the
  selected ``(batch, anchor)`` pairs into a ``ConstantOfShape`` zero ``[N, A]`` mask, then
  ``Greater`` 0.5: turns NMS's data-dependent ``[K, 3]`` list into fixed-shape tensors. Each
  anchor is selected in one class at most, so no index repeats.

Avoided: ``NonZero`` (data-dependent shapes), ``ReduceMax`` (opset-dependent signature),
``ScatterElements`` with reduction, ``If``.

Where the runtimes can differ from ``decode`` (none of these arise for the bundled 160x160
detector, A = 525):

* Candidates: ``decode`` keeps at most 30,000 (``MAX_NMS``) by default before NMS. Form ``ops``
  keeps ``M`` (the same in ``decode(max_nms=M)``). Form ``nms_op`` keeps all of them on ONNX
  Runtime and, on TensorRT, the 5,000 best above ``conf`` per image (2,000 on SM 5.3/6.2:
  ``INMSLayer``'s TopK box limit, NvInfer.h). Only matters with that many above ``conf``.
* IoU is float32 in the graph, float64 in ``decode``: a pair whose IoU is within float32
  rounding of ``iou`` may go the other way (a GPU may also fuse the arithmetic differently).
* Equal scores: ``decode`` and form ``ops`` on ONNX Runtime keep the lower anchor index first;
  TensorRT leaves the order of equal scores unspecified (its TopK and NMS).
* ``multi_label`` (one box per class above ``conf``) is not built.
* Cost of form ``ops``: ``[N, M, M]`` float tensors (4 MB per image at ``M = 1024``) and up to
  ``M`` cheap loop steps (usually a handful).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from optim.errors import InputError, ModelError
from optim.onnx_tools import show_dims

OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_classes")
PREFIX = "optim_nms/"
MIN_OPSET = 13  # Squeeze/Unsqueeze/ReduceSum take axes as an input from 13
MAX_TOPK = 3840  # TensorRT ITopKLayer: "Currently only values of K up to 3840 are supported"
METADATA_KEY = "optim.nms"
FORMS = ("ops", "nms_op")  # the default first
MAX_CANDIDATES = 1024  # form "ops": boxes above conf that enter NMS, best first
# which builders accept each form (the nms_op form: TensorRT-RTX has no INMSLayer implementation)
BUILDERS = {"ops": "ONNX Runtime, TensorRT 10/11, TensorRT-RTX",
            "nms_op": "ONNX Runtime, TensorRT 10/11 (not TensorRT-RTX)"}


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
    tensor_type = vi.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor_type.shape.dim]


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
    return show_dims(dims)  # symbolic sizes can be long expressions: shown short


def check_params(max_det: int, conf: float, iou: float, form: str = FORMS[0],
                 max_candidates: int = MAX_CANDIDATES) -> None:
    """InputError naming the first bad NMS parameter."""
    if form not in FORMS:
        raise InputError(f"form (--form) must be one of {', '.join(FORMS)}, got {form!r}")
    if not isinstance(max_candidates, (int, np.integer)) or not 1 <= max_candidates <= MAX_TOPK:
        raise InputError(f"max_candidates must be 1..{MAX_TOPK} (TensorRT's TopK limit), got {max_candidates}")
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
        name, k = PREFIX + base, 1
        while name in self.used:
            name, k = f"{PREFIX}{base}_{k}", k + 1
        self.used.add(name)
        return name

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], base: str, n_out: int = 1, out: str | None = None,
           **attrs) -> str | list[str]:
        outs = [out] if out is not None else [self.name(f"{base}" if n_out == 1 else f"{base}_{i}")
                                              for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name(f"{base}_node"), **attrs))
        return outs[0] if n_out == 1 else outs


def with_nms(model: onnx.ModelProto, *, max_det: int = 100, conf: float = 0.25, iou: float = 0.7,
             output: str | None = None, keep_raw: bool = False, form: str = "ops",
             max_candidates: int = MAX_CANDIDATES) -> onnx.ModelProto:
    """A copy of ``model`` with decode + class-aware NMS appended to its raw detection output.

    Outputs ``num_dets`` [N, 1] int32, ``det_boxes`` [N, max_det, 4], ``det_scores`` [N, max_det]
    (float32) and ``det_classes`` [N, max_det] int32; see the module docstring. ``output`` names
    the raw ``[N, 4 + nc, A]`` output (default: the first output). ``keep_raw`` keeps that output
    too (after the four). ``form``: ``"ops"`` (greedy NMS from elementary ops on the best
    ``max_candidates`` boxes above ``conf``; builds on TensorRT-RTX too) or ``"nms_op"`` (the ONNX
    NonMaxSuppression op; ``max_candidates`` unused). Bad parameters are InputErrors, an unusable
    model a ModelError."""
    check_params(max_det, conf, iou, form, max_candidates)
    opset = _default_opset(model)
    if opset < MIN_OPSET:
        raise ModelError(f"the model uses ONNX opset {opset}; add-nms needs opset >= {MIN_OPSET} "
                         "(re-export it, e.g. optim export --opset 17)")
    raw = raw_output(model, output)
    nc, k = raw.classes, int(max_det)

    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    b = _Builder(graph)

    x = raw.name
    if raw.elem_type != TensorProto.FLOAT:  # float32 decode and IoU, whatever the model's precision
        x = b.op("Cast", [x], "raw_float", to=TensorProto.FLOAT)

    # decode: xywh -> xyxy ([N, A, 4]), best class and its score ([N, 1, A])
    xywh = b.op("Slice", [x, b.const("zero", _i64(0)), b.const("four", _i64(4)), b.const("axis1", _i64(1))], "xywh")
    scores = b.op("Slice", [x, b.const("four_b", _i64(4)), b.const("end", _i64(np.iinfo(np.int64).max)),
                            b.const("axis1_b", _i64(1))], "scores")  # [N, nc, A]
    xywh_t = b.op("Transpose", [xywh], "xywh_t", perm=[0, 2, 1])  # [N, A, 4]
    xy = b.op("Slice", [xywh_t, b.const("zero_b", _i64(0)), b.const("two", _i64(2)), b.const("axis2", _i64(2))], "xy")
    wh = b.op("Slice", [xywh_t, b.const("two_b", _i64(2)), b.const("four_c", _i64(4)), b.const("axis2_b", _i64(2))],
              "wh")
    half = b.op("Div", [wh, b.const("two_f", np.array(2.0, np.float32))], "half_wh")
    boxes = b.op("Concat", [b.op("Sub", [xy, half], "x1y1"), b.op("Add", [xy, half], "x2y2")], "boxes", axis=2)
    cls = b.op("ArgMax", [scores], "best_class", axis=1, keepdims=1, select_last_index=0)  # [N, 1, A] int64
    best = b.op("GatherElements", [scores, cls], "best_score", axis=1)  # [N, 1, A]
    axes1 = b.const("axes1", _i64(1))
    best2 = b.op("Squeeze", [best, axes1], "best_score_2d")  # [N, A]
    cls2 = b.op("Squeeze", [cls, axes1], "best_class_2d")  # [N, A]
    minus1 = b.const("minus_one", np.array(-1.0, np.float32))

    if form == "nms_op":
        kept = _nms_op(b, x, scores, cls, boxes, minus1, nc, k, conf, iou)
        ranked = b.op("Where", [kept, best2, minus1], "ranked")  # kept scores (> conf >= 0), others -1
        count = b.op("ReduceSum", [b.op("Cast", [kept], "kept_i32", to=TensorProto.INT32), axes1], "count",
                     keepdims=1)
        width = raw.anchors if isinstance(raw.anchors, int) else None
        cand_boxes, cand_cls, candidates = boxes, cls2, None
    else:
        ranked, count, cand_boxes, cand_cls, width = _nms_ops(b, best2, cls2, boxes, minus1, raw.anchors, conf, iou,
                                                             int(max_candidates))
        candidates = width
    _outputs(b, ranked, count, cand_boxes, cand_cls, width, k)

    graph.node.extend(b.nodes)
    graph.initializer.extend(b.inits)
    n = raw.batch if raw.batch is not None else "batch"
    new_outs = [helper.make_tensor_value_info(OUTPUTS[0], TensorProto.INT32, [n, 1]),
                helper.make_tensor_value_info(OUTPUTS[1], TensorProto.FLOAT, [n, k, 4]),
                helper.make_tensor_value_info(OUTPUTS[2], TensorProto.FLOAT, [n, k]),
                helper.make_tensor_value_info(OUTPUTS[3], TensorProto.INT32, [n, k])]
    rest = [o for o in graph.output if keep_raw or o.name != raw.name]
    del graph.output[:]
    graph.output.extend(new_outs + rest)
    for prop in list(result.metadata_props):
        if prop.key == METADATA_KEY:
            result.metadata_props.remove(prop)
    result.metadata_props.add(key=METADATA_KEY, value=json.dumps(
        {"max_det": k, "conf": float(conf), "iou": float(iou), "raw_output": raw.name, "classes": nc,
         "raw_kept": bool(keep_raw), "form": form,
         "max_candidates": int(max_candidates) if form == "ops" else None, "candidates": candidates,
         "builders": BUILDERS[form]}))
    return result


def _i64(*v: int) -> np.ndarray:
    return np.array(v, np.int64)


def _nms_op(b: _Builder, x: str, scores: str, cls: str, boxes: str, minus1: str, nc: int | None, k: int,
            conf: float, iou: float) -> str:
    """Form ``nms_op``: the NonMaxSuppression op; the [N, A] bool mask of kept anchors."""
    # class-aware NMS: each anchor's score in its best class only, the op's per-class NMS
    if nc is not None:
        class_ids = b.const("class_ids", np.arange(nc, dtype=np.int64).reshape(1, nc, 1))
    else:  # class count not fixed in the file: 0 .. nc-1 from the scores' shape at run time
        n_cls = b.op("Gather", [b.op("Shape", [scores], "scores_shape"), b.const("dim1", np.array(1, np.int64))],
                     "n_classes")
        ids = b.op("Range", [b.const("range_start", np.array(0, np.int64)), n_cls,
                             b.const("range_step", np.array(1, np.int64))], "class_range")
        class_ids = b.op("Unsqueeze", [ids, b.const("axes02", _i64(0, 2))], "class_ids")
    onehot = b.op("Equal", [cls, class_ids], "is_best")
    nms_scores = b.op("Where", [onehot, scores, minus1], "nms_scores")  # [N, nc, A]
    sel = b.op("NonMaxSuppression", [boxes, nms_scores, b.const("max_per_class", _i64(k)),
                                     b.const("iou_threshold", np.array([iou], np.float32)),
                                     b.const("score_threshold", np.array([conf], np.float32))],
               "selected", center_point_box=0)  # [K, 3] (batch, class, anchor)

    # selected list -> fixed-shape [N, A] mask of kept anchors
    batch_anchor = b.op("Gather", [sel, b.const("batch_anchor_cols", _i64(0, 2))], "batch_anchor", axis=1)
    # updates of >= 1 per selected row, elementwise from the list itself (no data-dependent shape tensor)
    sel_batch = b.op("Gather", [sel, b.const("col0", np.array(0, np.int64))], "selected_batch", axis=1)  # [K]
    ones = b.op("Cast", [b.op("Add", [sel_batch, b.const("one", np.array(1, np.int64))], "batch_plus_1")],
                "updates", to=TensorProto.FLOAT)
    shape = b.op("Shape", [x], "raw_shape")  # [N, 4 + nc, A]
    na = b.op("Gather", [shape, b.const("dims_batch_anchor", _i64(0, 2))], "batch_anchors")
    zeros = b.op("ConstantOfShape", [na], "zeros", value=numpy_helper.from_array(np.array([0.0], np.float32)))
    return b.op("Greater", [b.op("ScatterND", [zeros, batch_anchor, ones], "kept_f"),
                            b.const("half_f", np.array(0.5, np.float32))], "kept")  # [N, A] bool


def _pad_columns(b: _Builder, x: str, cols: int, base: str) -> str:
    """``x`` [N, C] float with ``cols`` columns of -1 appended (N read at run time)."""
    n = b.op("Slice", [b.op("Shape", [x], f"{base}_shape"), b.const(f"{base}_s0", _i64(0)),
                       b.const(f"{base}_s1", _i64(1)), b.const(f"{base}_sa", _i64(0))], f"{base}_batch")
    pad_shape = b.op("Concat", [n, b.const(f"{base}_cols", _i64(cols))], f"{base}_pad_shape", axis=0)
    pad = b.op("ConstantOfShape", [pad_shape], f"{base}_pad",
               value=numpy_helper.from_array(np.array([-1.0], np.float32)))
    return b.op("Concat", [x, pad], f"{base}_padded", axis=1)


def _nms_ops(b: _Builder, best2: str, cls2: str, boxes: str, minus1: str, anchors: int | str | None, conf: float,
             iou: float, max_candidates: int) -> tuple[str, str, str, str, int]:
    """Form ``ops``: exact greedy class-aware NMS on the best ``M`` candidates above ``conf``.

    Returns the candidates' kept scores (others -1) [N, M], the kept count [N, 1] int32, the
    candidates' boxes [N, M, 4] and classes [N, M] int64, and ``M``."""
    # candidates: the M best scores above conf, best first (equal scores: lower anchor first)
    conf_c = b.const("conf", np.array(conf, np.float32))
    above = b.op("Where", [b.op("Greater", [best2, conf_c], "above_conf"), best2, minus1], "above_scores")  # [N, A]
    # n_cand: M, the number of candidates that enter NMS
    if isinstance(anchors, int):
        n_cand = min(max_candidates, anchors)
    else:  # A read at run time: M -1 columns make TopK(M) valid for any A
        n_cand = max_candidates
        above = _pad_columns(b, above, n_cand, "cand")
    cand_scores, cand_idx = b.op("TopK", [above, b.const("m", _i64(n_cand))], "candidates", n_out=2, axis=1, largest=1,
                                 sorted=1)  # [N, M]
    valid = b.op("Greater", [cand_scores, conf_c], "cand_valid")  # [N, M] bool; pad columns are -1
    idx = b.op("Where", [valid, cand_idx, b.const("zero_i64_c", np.array(0, np.int64))], "cand_index")  # in range
    axes1, axes2 = b.const("axes1_c", _i64(1)), b.const("axes2_c", _i64(2))
    idx4 = b.op("Expand", [b.op("Unsqueeze", [idx, axes2], "cand_index_3d"), b.const("expand4_c", _i64(1, 1, 4))],
                "cand_index_4")
    cbox = b.op("GatherElements", [boxes, idx4], "cand_boxes", axis=1)  # [N, M, 4]
    ccls = b.op("GatherElements", [cls2, idx], "cand_classes", axis=1)  # [N, M] int64

    # pairwise IoU [N, M, M] in float32, as detect_ops.box_iou: row i, column j
    coord = [b.op("Gather", [cbox, b.const(f"coord{c}", np.array(c, np.int64))], f"cand_{n}", axis=2)
             for c, n in enumerate(("x1", "y1", "x2", "y2"))]  # each [N, M]
    rows = [b.op("Unsqueeze", [c, axes2], f"{c.rsplit('/', 1)[-1]}_i") for c in coord]  # [N, M, 1]
    cols = [b.op("Unsqueeze", [c, axes1], f"{c.rsplit('/', 1)[-1]}_j") for c in coord]  # [N, 1, M]
    zero_f = b.const("zero_f_c", np.array(0.0, np.float32))
    iw = b.op("Max", [b.op("Sub", [b.op("Min", [rows[2], cols[2]], "min_x2"),
                                   b.op("Max", [rows[0], cols[0]], "max_x1")], "overlap_w"), zero_f], "inter_w")
    ih = b.op("Max", [b.op("Sub", [b.op("Min", [rows[3], cols[3]], "min_y2"),
                                   b.op("Max", [rows[1], cols[1]], "max_y1")], "overlap_h"), zero_f], "inter_h")
    inter = b.op("Mul", [iw, ih], "inter")  # [N, M, M]
    area = b.op("Mul", [b.op("Max", [b.op("Sub", [coord[2], coord[0]], "w"), zero_f], "w_pos"),
                        b.op("Max", [b.op("Sub", [coord[3], coord[1]], "h"), zero_f], "h_pos")], "area")  # [N, M]
    union = b.op("Sub", [b.op("Add", [b.op("Unsqueeze", [area, axes2], "area_i"),
                                      b.op("Unsqueeze", [area, axes1], "area_j")], "area_sum"), inter], "union")
    iou_m = b.op("Div", [inter, b.op("Max", [union, b.const("eps", np.array(1e-12, np.float32))], "union_pos")],
                 "iou")
    # S[i, j]: candidate j ranks above i, has i's class, and overlaps it by more than iou
    order = np.arange(n_cand, dtype=np.int64)
    above_i = b.op("Less", [b.const("rank_j", order.reshape(1, n_cand)), b.const("rank_i", order.reshape(n_cand, 1))],
                   "ranks_above")  # [M, M], j < i
    same = b.op("Equal", [b.op("Unsqueeze", [ccls, axes2], "cls_i"), b.op("Unsqueeze", [ccls, axes1], "cls_j")],
                "same_class")
    overlap = b.op("Greater", [iou_m, b.const("iou_threshold", np.array(iou, np.float32))], "overlaps")
    sup = b.op("Cast", [b.op("And", [b.op("And", [overlap, same], "same_overlap"), above_i], "suppresses")],
               "suppresses_f", to=TensorProto.FLOAT)  # [N, M, M] 0/1

    # greedy NMS as a fixed point: keep = valid & no kept j suppresses i. S is strictly triangular,
    # so entry i is final after i iterations: M iterations reach the unique fixed point, and an
    # iteration that changes nothing means it was reached (the loop's condition stops there).
    valid_f = b.op("Cast", [valid], "cand_valid_f", to=TensorProto.FLOAT)  # [N, M] 0/1
    it, c_in, keep_in = b.name("loop_iter"), b.name("loop_cond_in"), b.name("loop_keep_in")
    c_out, keep_out = b.name("loop_cond_out"), b.name("loop_keep_out")
    body = _Builder(b.graph)
    body.used = b.used  # one namespace: subgraph names never shadow outer ones
    keep_j = body.op("Unsqueeze", [keep_in, body.const("axes1_l", _i64(1))], "keep_j")  # [N, 1, M]
    hits = body.op("ReduceSum", [body.op("Mul", [sup, keep_j], "kept_suppressors"), body.const("axes2_l", _i64(2))],
                   "hits", keepdims=0)  # [N, M]: kept candidates suppressing i (a count, exact in float32)
    body.op("Where", [body.op("Greater", [hits, body.const("half_hit", np.array(0.5, np.float32))], "hit"),
                      body.const("zero_keep", np.array(0.0, np.float32)), valid_f], "keep", out=keep_out)
    changed = body.op("ReduceSum", [body.op("Abs", [body.op("Sub", [keep_out, keep_in], "keep_diff")],
                                            "keep_change"), body.const("axes01", _i64(0, 1))],
                      "changes", keepdims=0)
    body.op("Greater", [changed, body.const("half_change", np.array(0.5, np.float32))], "changed", out=c_out)
    body_graph = helper.make_graph(
        body.nodes, "optim_nms_greedy",
        [helper.make_tensor_value_info(it, TensorProto.INT64, []),
         helper.make_tensor_value_info(c_in, TensorProto.BOOL, []),
         helper.make_tensor_value_info(keep_in, TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(c_out, TensorProto.BOOL, []),
         helper.make_tensor_value_info(keep_out, TensorProto.FLOAT, None)],
        initializer=body.inits)
    keep = b.op("Loop", [b.const("trip_count", np.array(n_cand, np.int64)), b.const("true", np.array(True)), valid_f],
                "greedy_keep", body=body_graph)  # [N, M] 0/1
    ranked = b.op("Where", [b.op("Greater", [keep, b.const("half_keep", np.array(0.5, np.float32))], "kept"),
                            cand_scores, minus1], "ranked")  # [N, M]
    count = b.op("Cast", [b.op("ReduceSum", [keep, axes1], "count_f", keepdims=1)], "count", to=TensorProto.INT32)
    return ranked, count, cbox, ccls, n_cand


def _outputs(b: _Builder, ranked: str, count: str, boxes: str, classes: str, width: int | None, k: int) -> None:
    """The four outputs from the kept scores ``ranked`` [N, C] (others -1, never above conf),
    the kept count [N, 1] int32, and boxes [N, C, 4] / classes [N, C] of the same columns
    (``width``: C, None where not fixed)."""
    if width is None or width < k:  # fewer columns than max_det (maybe): pad
        ranked = _pad_columns(b, ranked, k if width is None else k - width, "rank")
    top_scores, top_idx = b.op("TopK", [ranked, b.const("k", _i64(k))], "top", n_out=2, axis=1, largest=1, sorted=1)
    num = b.op("Min", [count, b.const("max_det", np.array([[k]], np.int32))], "num_dets", out=OUTPUTS[0])
    valid = b.op("Less", [b.const("rows", np.arange(k, dtype=np.int32).reshape(1, k)), num], "valid")  # [N, k]
    idx = b.op("Where", [valid, top_idx, b.const("zero_i64", np.array(0, np.int64))], "det_index")
    zero_f = b.const("zero_f", np.array(0.0, np.float32))
    b.op("Where", [valid, top_scores, zero_f], "det_scores", out=OUTPUTS[2])
    cls = b.op("Cast", [b.op("GatherElements", [classes, idx], "gathered_class", axis=1)], "class_i32",
               to=TensorProto.INT32)
    b.op("Where", [valid, cls, b.const("zero_i32", np.array(0, np.int32))], "det_classes", out=OUTPUTS[3])
    axes2 = b.const("axes2", _i64(2))
    idx4 = b.op("Expand", [b.op("Unsqueeze", [idx, axes2], "det_index_3d"), b.const("expand4", _i64(1, 1, 4))],
                "det_index_4")
    gathered = b.op("GatherElements", [boxes, idx4], "gathered_boxes", axis=1)
    b.op("Where", [b.op("Unsqueeze", [valid, axes2], "valid_3d"), gathered, zero_f], "det_boxes", out=OUTPUTS[1])
