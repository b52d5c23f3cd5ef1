"""Small models built in code."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TINY_SHAPE = (3, 16, 16)


def tiny_cnn(seed: int = 0):
    """Wide enough (32 channels) that FP8 quantizes its convolutions."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 5),
    ).eval()


def identity_model(channels: int, anchors, *, dtype=TensorProto.FLOAT, opset: int = 17,
                   out_shape=None) -> onnx.ModelProto:
    """A model whose output ``output0`` is its input ``raw``: any raw values can be fed."""
    shape = ["batch", channels, anchors] if out_shape is None else out_shape
    g = helper.make_graph([helper.make_node("Identity", ["raw"], ["output0"])], "raw_passthrough",
                          [helper.make_tensor_value_info("raw", dtype, shape)],
                          [helper.make_tensor_value_info("output0", dtype, shape)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def precision_model(kind: str) -> onnx.ModelProto:
    """x[n, 8] -> (fp16/bf16 cast round trip, or int8/fp8 Q/DQ) -> Gemm -> y[n, 4]."""
    w = numpy_helper.from_array(np.ones((4, 8), np.float32), "W")
    inits, nodes, src = [w], [], "x"
    if kind in ("fp16", "bf16"):
        to = TensorProto.FLOAT16 if kind == "fp16" else TensorProto.BFLOAT16
        nodes += [helper.make_node("Cast", ["x"], ["xh"], to=to), helper.make_node("Cast", ["xh"], ["xf"], to=1)]
        src = "xf"
    elif kind in ("int8", "fp8"):
        zp_type = TensorProto.INT8 if kind == "int8" else TensorProto.FLOAT8E4M3FN
        inits += [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                  helper.make_tensor("zp", zp_type, [], [0])]
        nodes += [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xf"])]
        src = "xf"
    nodes.append(helper.make_node("Gemm", [src, "W"], ["y"], transB=1))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
