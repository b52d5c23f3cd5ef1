"""Which nodes of a YOLO-style detector are its head's decode (kept in high precision by ``keep_head``).

The decode follows the head's last convolutions: DFL softmax and its fixed 1x1 Conv, sigmoid,
box arithmetic around the anchors, and the final Concat of pixel boxes (0..640) with scores
(0..1), on which one INT8 scale rounds every score to 0. Two ways to find it:

* by name (``head_nodes``): the node that makes the raw output names the head module
  (``/head/Concat_9`` here, ``/model.22/Concat_5`` in an Ultralytics export); the decode is
  every node directly in that module plus its ``dfl`` sub-module. The branch convolutions
  live deeper (``/model.22/cv2.0/...``) and stay quantizable.
* by structure (``head_by_structure``), when the output node names no module (a top-level
  ``/Concat``, or names stripped): walk back from the raw output through every producer,
  stopping at each convolution that does not follow a softmax (a branch's last Conv: it stays
  quantizable) and at ``Shape`` (a shape says nothing about values). A Conv fed by a softmax
  (through Reshape/Transpose) is the DFL expectation and belongs to the decode.

``find_head`` tries the name, then the structure, and says in ``Head.note`` when it used the
structure or found nothing.
"""

from __future__ import annotations

import re
from typing import Any

from optim.tasks.base import Head

#: ops that pass a tensor through unchanged in value (between a DFL softmax and its Conv)
_RESHAPES = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"}
#: a decode found by structure holding more than this share of the graph's nodes is not a head
_MAX_SHARE = 0.5


def _model(model: Any):
    import onnx

    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        return onnx.load(str(model), load_external_data=False)
    return model


def _output_node(model):
    producers = {o: n for n in model.graph.node for o in n.output}
    return (producers.get(model.graph.output[0].name) if model.graph.output else None), producers


def head_nodes(model: Any) -> tuple[str, ...]:
    """Patterns of the head's decode found by the output node's module name; () when it names none."""
    model = _model(model)
    node, _ = _output_node(model)
    if node is None or "/" not in node.name.strip("/"):
        return ()
    prefix = re.escape(node.name[: node.name.rindex("/") + 1])
    return (f"^{prefix}[^/]+$", f"^{prefix}dfl/.*")


def _follows_softmax(node, producers) -> bool:
    seen = 0
    while node is not None and seen < 8:
        src = producers.get(node.input[0]) if node.input else None
        if src is None:
            return False
        if src.op_type == "Softmax":
            return True
        if src.op_type not in _RESHAPES:
            return False
        node, seen = src, seen + 1
    return False


def head_by_structure(model: Any) -> list[Any]:
    """The decode's nodes found from the graph's structure (see the module doc); [] when the walk
    reaches a graph input, finds no convolution, or takes in most of the graph."""
    model = _model(model)
    out, producers = _output_node(model)
    if out is None:
        return []
    graph_inputs = {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer}
    kept: dict[int, Any] = {}
    stops = 0
    todo = [out]
    while todo:
        node = todo.pop()
        if id(node) in kept:
            continue
        if node.op_type == "Conv" and not _follows_softmax(node, producers):
            stops += 1  # a branch convolution: quantizable, and the decode starts after it
            continue
        kept[id(node)] = node
        if node.op_type == "Shape":
            continue
        for name in node.input:
            if name in graph_inputs:
                return []  # no convolution between the input and the output on this path
            if name in producers:
                todo.append(producers[name])
    nodes = list(kept.values())

    def computing(ns) -> int:  # a dynamic-H/W export's many Constants are not the decode's bulk
        return sum(n.op_type != "Constant" for n in ns)

    if not stops or computing(nodes) > _MAX_SHARE * computing(model.graph.node) or any(not n.name for n in nodes):
        return []
    return nodes


def find_head(model: Any) -> Head:
    """The head's decode: by module name, else by structure (with a note saying so), else none."""
    model = _model(model)
    by_name = head_nodes(model)
    if by_name:
        return Head(by_name)
    out, _ = _output_node(model)
    where = f"'{out.name or out.op_type}'" if out is not None else "no node"
    nodes = head_by_structure(model)
    if not nodes:
        return Head((), f"the raw output comes from {where}, which names no head module, and no decode after "
                        "convolutions was found in the graph: nothing kept back (name the nodes with "
                        "quantize.exclude_nodes / --exclude-nodes)")
    ops = ", ".join(dict.fromkeys(n.op_type for n in nodes if n.op_type not in ("Constant", "Shape", "Gather",
                                                                                  "Unsqueeze")))
    return Head(tuple(f"^{re.escape(n.name)}$" for n in nodes),
                f"the raw output comes from {where}, which names no head module: kept the {len(nodes)} nodes "
                f"between the last convolutions and the output by the graph's structure ({ops})")
