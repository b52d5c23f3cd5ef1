"""Graph edits on Q/DQ models: find the quantized nodes, and take nodes back to high precision.

A *quantized node* is any compute node with at least one input produced by a
DequantizeLinear. ``dequantize_nodes`` rewires the inputs of the named nodes to
the tensors their Q/DQ pairs were fed from (or, for pre-quantized weights, to a
float initializer computed from the integer weight, its scale and zero point),
then drops Q/DQ nodes and initializers nothing uses any more. The calibration
(scales) of every other node is left exactly as it was: nothing is recalibrated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from optim.errors import QuantizeError

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class QuantNode:
    name: str
    op_type: str


def _producers(g: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in g.node for o in n.output}


def quantized_nodes(model: onnx.ModelProto) -> list[QuantNode]:
    """Compute nodes fed by a DequantizeLinear, in graph order."""
    g = model.graph
    dq_out = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
    out = []
    for n in g.node:
        if n.op_type not in QDQ_OPS and any(i in dq_out for i in n.input):
            if not n.name:
                raise QuantizeError(f"a quantized {n.op_type} node has no name; name every node first")
            out.append(QuantNode(n.name, n.op_type))
    return out


def _const(g: onnx.GraphProto, name: str, inits: dict, prod: dict) -> np.ndarray | None:
    if not name:
        return None
    if name in inits:
        return numpy_helper.to_array(inits[name])
    p = prod.get(name)
    if p is not None and p.op_type == "Constant":
        for a in p.attribute:
            if a.name == "value":
                return numpy_helper.to_array(a.t)
    return None


def _dequantized_value(dq: onnx.NodeProto, g, inits, prod) -> np.ndarray:
    q = _const(g, dq.input[0], inits, prod)
    scale = _const(g, dq.input[1], inits, prod)
    zp = _const(g, dq.input[2], inits, prod) if len(dq.input) > 2 else None
    if q is None or scale is None:
        raise QuantizeError(f"cannot read the constant inputs of {dq.name or dq.output[0]}")
    q = q.astype(np.float32)
    scale, zp = _per_axis(dq, scale, np.zeros_like(scale) if zp is None else zp, q.ndim)
    return ((q - zp) * scale).astype(np.float32)


def _per_axis(node: onnx.NodeProto, scale: np.ndarray, zp: np.ndarray, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """A Q/DQ node's scale and zero point as float32, shaped to broadcast against an ``ndim`` tensor
    (per-channel along the node's ``axis``, default 1)."""
    scale, zp = scale.astype(np.float32), zp.astype(np.float32)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * ndim
        shape[next((a.i for a in node.attribute if a.name == "axis"), 1) % ndim] = scale.size
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return scale, zp


def dequantize_nodes(model: onnx.ModelProto, names: set[str] | list[str]) -> onnx.ModelProto:
    """A copy of ``model`` in which the named nodes take their inputs in high precision."""
    names = set(names)
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    g = edited.graph
    known = {n.name for n in g.node}
    missing = names - known
    if missing:
        raise QuantizeError(f"no node named {sorted(missing)[0]!r} in the model")
    prod = _producers(g)
    inits = {i.name: i for i in g.initializer}
    new_inits: dict[str, onnx.TensorProto] = {}
    for node in g.node:
        if node.name not in names:
            continue
        for k, t in enumerate(node.input):
            dq = prod.get(t)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = prod.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[k] = q.input[0]
            elif _original(dq.input[0]) + FP32_SUFFIX in inits:  # FP32's own value, kept by unpack_weights
                node.input[k] = _original(dq.input[0]) + FP32_SUFFIX
            else:  # integer (or fp8) weights stored pre-quantized
                fname = f"{t}__float"
                if fname not in new_inits:
                    new_inits[fname] = numpy_helper.from_array(_dequantized_value(dq, g, inits, prod), fname)
                node.input[k] = fname
    g.initializer.extend(new_inits.values())
    _drop_output_qdq(g, names)
    _prune(g)
    return edited


def _drop_output_qdq(g: onnx.GraphProto, names: set[str]) -> None:
    """A named node whose output is quantized only to be a graph output (ORT's quantizer puts Q/DQ on
    the last Gemm's output) writes that graph output directly: no other node takes that Q/DQ back."""
    outputs = {o.name for o in g.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    for node in [n for n in g.node if n.name in names]:
        for j, t in enumerate(node.output):
            q = readers.get(t, [])
            if t in outputs or len(q) != 1 or q[0].op_type != "QuantizeLinear":
                continue
            dq = readers.get(q[0].output[0], [])
            if len(dq) == 1 and dq[0].op_type == "DequantizeLinear" and dq[0].output[0] in outputs \
                    and not readers.get(dq[0].output[0]):
                node.output[j] = dq[0].output[0]
                g.node.remove(q[0])
                g.node.remove(dq[0])


def _prune(g: onnx.GraphProto) -> None:
    """Drop nodes whose outputs nobody reads, then initializers nobody reads."""
    keep_outputs = {o.name for o in g.output}
    while True:
        used = keep_outputs | {i for n in g.node for i in n.input}
        dead = [n for n in g.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {i for n in g.node for i in n.input} | keep_outputs
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)
    names = {o for n in g.node for o in n.output} | {i.name for i in g.initializer} | {i.name for i in g.input}
    for vi in [v for v in g.value_info if v.name not in names]:
        g.value_info.remove(vi)


QUANTIZED_SUFFIX = "_quantized"  # ONNX Runtime's name for a weight it stored as integers
FP32_SUFFIX = "__fp32"  # FP32's value of an int32 bias, beside it (unpack_weights)


def unpack_weights(model: onnx.ModelProto, fp32: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` in which integer weights ONNX Runtime's quantizer stored pre-quantized
    (``W_quantized`` -> DequantizeLinear) are computed from the FP32 model's own ``W`` through a
    QuantizeLinear with the same scale and zero point, and the names of those ``W``.

    The same integers result, but taking a node back to high precision (``dequantize_nodes``) then
    gives it FP32's weights rather than their 8-bit values, so the budget can reach FP32 again.
    int32 biases stay integers (no QuantizeLinear makes int32); FP32's values ride along as
    unused initializers ``B__fp32``, which ``dequantize_nodes`` takes for a node it takes back."""
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    g = edited.graph
    originals = {i.name: i for i in fp32.graph.initializer}
    inits = {i.name: i for i in g.initializer}
    done: list[str] = []
    for dq in [n for n in g.node if n.op_type == "DequantizeLinear"]:
        packed = inits.get(dq.input[0])
        name = _original(dq.input[0])
        src = originals.get(name) if name else None
        if packed is None or src is None or packed.data_type not in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) \
                or list(src.dims) != list(packed.dims) or name in inits:
            continue
        g.initializer.append(src)
        q = onnx.helper.make_node("QuantizeLinear", [name, *dq.input[1:]], [f"{dq.input[0]}__unpacked"],
                                  name=f"{name}_QuantizeLinear__unpacked")
        q.attribute.extend(a for a in dq.attribute if a.name == "axis")
        g.node.insert(list(g.node).index(dq), q)
        dq.input[0] = q.output[0]
        done.append(name)
    _prune(g)
    have = {i.name for i in g.initializer}
    for dq in [n for n in g.node if n.op_type == "DequantizeLinear"]:  # int32 biases: FP32's values beside them
        name = _original(dq.input[0])
        if name and name in originals and name + FP32_SUFFIX not in have and dq.input[0] in have:
            t = onnx.TensorProto()
            t.CopyFrom(originals[name])
            t.name = name + FP32_SUFFIX
            g.initializer.append(t)
            have.add(t.name)
    return edited, done


def _original(name: str) -> str:
    """``W`` for ONNX Runtime's ``W_quantized`` ("" for other names)."""
    return name[: -len(QUANTIZED_SUFFIX)] if name.endswith(QUANTIZED_SUFFIX) else ""


def pack_weights(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """The inverse of ``unpack_weights`` for the weights ``names`` still fed to a QuantizeLinear:
    the integers computed once (round half to even, saturated, as QuantizeLinear does) and stored
    as ``W_quantized``, so the file keeps ONNX Runtime's compact form."""
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    g = edited.graph
    inits = {i.name: i for i in g.initializer}
    prod = _producers(g)
    wanted = set(names)
    for q in [n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] in wanted]:
        w = numpy_helper.to_array(inits[q.input[0]]).astype(np.float32)
        scale = _const(g, q.input[1], inits, prod)
        zp = _const(g, q.input[2], inits, prod) if len(q.input) > 2 else None
        if scale is None or zp is None:
            continue
        s, z = _per_axis(q, scale, zp, w.ndim)
        info = np.iinfo(zp.dtype)
        ints = np.clip(np.rint(w / s) + z, info.min, info.max).astype(zp.dtype)
        packed = numpy_helper.from_array(ints, q.input[0] + QUANTIZED_SUFFIX)
        for n in g.node:
            for k, t in enumerate(n.input):
                if t == q.output[0]:
                    n.input[k] = packed.name
        g.initializer.append(packed)
        g.node.remove(q)
    _prune(g)
    return edited
