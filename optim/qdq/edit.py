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
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    q = q.astype(np.float32)
    scale = scale.astype(np.float32)
    zp = np.zeros_like(scale) if zp is None else zp.astype(np.float32)
    if scale.ndim == 1 and scale.size > 1:  # per-channel along `axis`
        shape = [1] * q.ndim
        shape[axis % q.ndim] = scale.size
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((q - zp) * scale).astype(np.float32)


def dequantize_nodes(model: onnx.ModelProto, names: set[str] | list[str]) -> onnx.ModelProto:
    """A copy of ``model`` in which the named nodes take their inputs in high precision."""
    names = set(names)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
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
            else:  # integer (or fp8) weights stored pre-quantized
                fname = f"{t}__float"
                if fname not in new_inits:
                    new_inits[fname] = numpy_helper.from_array(_dequantized_value(dq, g, inits, prod), fname)
                node.input[k] = fname
    g.initializer.extend(new_inits.values())
    _prune(g)
    return m


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
