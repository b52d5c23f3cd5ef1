"""Stage: one precision's model carried over to another input size, for timing there.

A fully convolutional model (a YOLO detector) exported at 160x160 and at 640x640 from the
same PyTorch module has the same nodes, the same tensor names and the same weights; only
a few constants depend on the size (the anchor grid and strides of the decode, the sizes
of a Resize). So a quantized or converted model made at the recipe's size becomes the same
model at another size by swapping those constants for the other export's: its Q/DQ
placement and scales (calibrated at the recipe's size), its FP16/BF16 casts and its
exclusions are kept as they are, and no calibration runs at the new size.

``carry_over`` refuses, naming the difference, when the two exports differ in anything but
constant values (other ops, other attributes) or when a variant node no longer takes the
size-dependent constant its FP32 node took (a tool renamed or folded it): then the variant
cannot be moved and the report says so.
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper
from pydantic import Field

from optim.artifacts import Artifact
from optim.errors import ModelError
from optim.executor import StageContext, StageOutput
from optim.onnx_tools import load_onnx, save_onnx
from optim.settings import Strict

NAME = "resize"
SUMMARY = "each entry carried over to another input size"
TOOLS = ("onnx",)


class Settings(Strict):
    shape: tuple[int, ...] = Field(description="one sample's input shape at the new size, e.g. [3, 640, 640]")


def _attrs(n: onnx.NodeProto) -> tuple:
    return tuple(a.SerializeToString(deterministic=True) for a in n.attribute)


def size_constants(base: onnx.ModelProto, other: onnx.ModelProto) -> dict[tuple[str, int], onnx.TensorProto]:
    """The constant inputs whose values differ between two exports of one model at two sizes, by
    (node name, input index) in ``base``: the exporter and its simplifier may name or share
    constants differently at two sizes (two equal anchor grids folded into one), so nodes are
    paired by position and constants by where they are used.

    ModelError if the exports differ in anything else (other ops, other attributes)."""
    if len(base.graph.node) != len(other.graph.node) or any(
            (a.op_type, len(a.input), _attrs(a)) != (b.op_type, len(b.input), _attrs(b))
            for a, b in zip(base.graph.node, other.graph.node)):
        raise ModelError("the model exported at the two sizes differs in its nodes, not only in "
                         "size-dependent constants: it cannot be carried over (is it fully convolutional?)")
    ia = {t.name: t for t in base.graph.initializer}
    ib = {t.name: t for t in other.graph.initializer}
    changed = {}
    for a, b in zip(base.graph.node, other.graph.node):
        for j, (x, y) in enumerate(zip(a.input, b.input)):
            if (x in ia) != (y in ib):
                raise ModelError(f"node {a.name} takes a constant at one size and a computed tensor at the "
                                 "other: the model cannot be carried over")
            if x in ia and ia[x].SerializeToString() != _renamed(ib[y], x).SerializeToString():
                if not a.name:
                    raise ModelError("a size-dependent constant feeds an unnamed node: cannot carry it over")
                changed[(a.name, j)] = ib[y]
    return changed


def _renamed(t: onnx.TensorProto, name: str) -> onnx.TensorProto:
    out = onnx.TensorProto()
    out.CopyFrom(t)
    out.name = name
    return out


def _set_dims(vi: onnx.ValueInfoProto, like: onnx.ValueInfoProto) -> None:
    """``vi``'s dims become ``like``'s (its element type stays)."""
    dims = vi.type.tensor_type.shape.dim
    del dims[:]
    for d in like.type.tensor_type.shape.dim:
        new = dims.add()
        new.CopyFrom(d)


def carry_over(variant: onnx.ModelProto, base: onnx.ModelProto, other: onnx.ModelProto) -> onnx.ModelProto:
    """``variant`` (made from ``base``) with ``base``'s size-dependent constants set to ``other``'s.

    Each such constant input of a variant node (found by the node's name, which quantizers and
    converters keep; the constant may have been renamed, or cast by a Cast node) gets a new
    initializer with the other size's value, in the variant's type."""
    changed = size_constants(base, other)
    out = onnx.ModelProto()
    out.CopyFrom(variant)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    nodes = {n.name: n for n in g.node if n.name}
    producers = {o: n for n in g.node for o in n.output}
    base_inits = {t.name: t for t in base.graph.initializer}
    base_inputs = {n.name: list(n.input) for n in base.graph.node if n.name}
    for k, ((node_name, j), new) in enumerate(sorted(changed.items())):
        was = base_inits[base_inputs[node_name][j]]
        if new.data_type == was.data_type and len(was.dims) == 4 and node_name.endswith(("Conv", "Gemm")):
            raise ModelError("the two exports differ in their weights (a model built with new random weights "
                             "each time?): give trained weights to time it at other sizes")
        node = nodes.get(node_name)
        target = node if node is not None and j < len(node.input) else None
        slot = j
        if target is not None and target.input[slot] in producers and producers[target.input[slot]].op_type == "Cast":
            target, slot = producers[target.input[slot]], 0  # a converter cast the constant: set what it casts
        old = inits.get(target.input[slot]) if target is not None else None
        if old is None or tuple(old.dims) != tuple(was.dims):
            raise ModelError(f"the model no longer feeds node {node_name} the size-dependent constant "
                             f"'{was.name}' (its quantizer or converter changed it): it cannot be carried over")
        value = numpy_helper.to_array(new).astype(onnx.helper.tensor_dtype_to_np_dtype(old.data_type))
        name = f"{old.name}__size{k}"
        g.initializer.append(numpy_helper.from_array(value, name))
        target.input[slot] = name
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    ins, outs = {v.name: v for v in other.graph.input}, {v.name: v for v in other.graph.output}
    for vi in g.input:
        if vi.name in ins:
            _set_dims(vi, ins[vi.name])
    for vi in g.output:
        if vi.name in outs:
            _set_dims(vi, outs[vi.name])
    del g.value_info[:]
    try:
        out = onnx.shape_inference.infer_shapes(out)
        onnx.checker.check_model(out)
    except Exception as exc:
        raise ModelError(f"the carried-over model fails the ONNX checker: {str(exc).splitlines()[0]}") from None
    return out


def run(inputs: list[Artifact], settings: Settings, ctx: StageContext) -> StageOutput:
    """``inputs``: the variant, the FP32 model it was made from, the FP32 model at the new size."""
    variant, base, other = inputs
    carried = carry_over(load_onnx(variant.path), load_onnx(base.path), load_onnx(other.path))
    save_onnx(carried, ctx.out)
    return StageOutput({"shape": list(settings.shape), "from": variant.path.name})
