"""Run a BF16 ONNX model on a CPU that has no BF16 kernels, by emulation.

ONNX Runtime's CPU provider has no bfloat16 Conv/Gemm kernels, so a BF16 model
does not load there. This rewrites it into an FP32 graph that rounds every
tensor the BF16 model would hold in bfloat16 to bfloat16 precision (a Cast to
bfloat16 and back after each BF16-producing node; BF16 weights are widened
exactly). Arithmetic inside each op is then FP32, which is how GPU tensor cores
accumulate BF16 products. The numbers describe BF16 accuracy; the timings of the
rewritten graph do not describe BF16 speed, and the runner says so.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from optim.backends.onnxruntime import OrtRunner

BF16 = TensorProto.BFLOAT16
FLOAT = TensorProto.FLOAT


def _widen(t: TensorProto) -> TensorProto:
    arr = numpy_helper.to_array(t).astype(np.float32)  # ml_dtypes bfloat16 -> exact fp32
    return numpy_helper.from_array(arr, t.name)


def emulate_bf16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return an FP32 model that rounds to bfloat16 wherever ``model`` stores bfloat16."""
    model = onnx.shape_inference.infer_shapes(model)
    g = model.graph
    bf16_tensors = {v.name for v in list(g.value_info) + list(g.output) + list(g.input)
                    if v.type.tensor_type.elem_type == BF16}
    bf16_tensors |= {i.name for i in g.initializer if i.data_type == BF16}
    for i, init in enumerate(g.initializer):
        if init.data_type == BF16:
            g.initializer[i].CopyFrom(_widen(init))
    new_nodes = []
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type == BF16:
                    a.t.CopyFrom(_widen(a.t))
            new_nodes.append(node)
            continue
        if node.op_type == "Cast":
            to = next(a for a in node.attribute if a.name == "to")
            if to.i == BF16:
                # fp32 -> bf16 becomes a rounding round trip that stays fp32
                mid = f"{node.output[0]}__bf16"
                new_nodes.append(helper.make_node("Cast", [node.input[0]], [mid], to=BF16,
                                                  name=f"{node.name}__round"))
                new_nodes.append(helper.make_node("Cast", [mid], [node.output[0]], to=FLOAT,
                                                  name=f"{node.name}__widen"))
                continue
            if node.input[0] in bf16_tensors and to.i == FLOAT:
                new_nodes.append(helper.make_node("Identity", [node.input[0]], [node.output[0]],
                                                  name=node.name))
                continue
        outs = [o for o in node.output if o in bf16_tensors]
        if not outs:
            new_nodes.append(node)
            continue
        renamed = {o: f"{o}__fp32" for o in outs}
        node.output[:] = [renamed.get(o, o) for o in node.output]
        for a in node.attribute:  # e.g. ConstantOfShape value
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == BF16:
                a.t.CopyFrom(_widen(a.t))
        new_nodes.append(node)
        for o in outs:
            mid = f"{o}__bf16"
            new_nodes.append(helper.make_node("Cast", [renamed[o]], [mid], to=BF16, name=f"{o}__round"))
            new_nodes.append(helper.make_node("Cast", [mid], [o], to=FLOAT, name=f"{o}__widen"))
    del g.node[:]
    g.node.extend(new_nodes)
    for vi in list(g.input) + list(g.output):
        if vi.type.tensor_type.elem_type == BF16:
            vi.type.tensor_type.elem_type = FLOAT
    del g.value_info[:]
    return model


class Bf16EmulationRunner(OrtRunner):
    name = "onnxruntime-cpu-bf16-emulation"
    timing_meaningful = False
    timing_note = "BF16 emulated in FP32 on CPU (no BF16 kernels): timing not meaningful"

    def __init__(self, model: onnx.ModelProto, *, threads: int | None = None, label: str = "") -> None:
        super().__init__(emulate_bf16(model).SerializeToString(), threads=threads, label=label)
        self.method = (f"{self.method}; BF16 emulated: FP32 arithmetic, every BF16 tensor "
                       "rounded to bfloat16")
