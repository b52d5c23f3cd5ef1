"""The fused input-preprocessing op: uint8 NHWC frames -> normalised NCHW float.

    out[n, oc, oy, ox] = (v * scale - mean[oc]) / std[oc]

where v is the input pixel (no resize when the output size equals the frame size,
otherwise a bilinear sample with half-pixel centres) of input channel
``2 - oc`` for BGR frames and ``oc`` otherwise. The arithmetic lives in
``csrc/preprocess/preprocess.h`` (shared by the CUDA kernel and the CPU library);
``reference`` below is an independent NumPy statement of the same formula.

The ONNX node: op_type ``OptimPreprocess``, domain ``ai.onnx.contrib`` (where
onnxruntime-extensions looks), with ``plugin_namespace="optim"`` and
``plugin_version="1"`` so that TensorRT's ONNX parser finds the plugin. The graph
input stays uint8 (the bytes the host copies); a Cast to float32 in front of the node
runs on the device, because TensorRT hands plugins no uint8 tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from optim.errors import InputError

OP_TYPE = "OptimPreprocess"
DOMAIN = "ai.onnx.contrib"
NAMESPACE = "optim"
VERSION = "1"


@dataclass(frozen=True)
class PreprocessOp:
    out_h: int
    out_w: int
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    channel_order: str = "RGB"  # of the input frames; the output is always RGB order
    out_dtype: str = "float32"  # or "float16"

    def __post_init__(self) -> None:
        if self.out_h < 1 or self.out_w < 1:
            raise InputError(f"preprocess output size must be positive, got {self.out_h}x{self.out_w}")
        if self.channel_order not in ("RGB", "BGR"):
            raise InputError(f"channel_order must be RGB or BGR, got {self.channel_order!r}")
        if self.out_dtype not in ("float32", "float16"):
            raise InputError(f"out_dtype must be float32 or float16, got {self.out_dtype!r}")
        if any(s == 0 for s in self.std) or not (1 <= len(self.mean) <= 3 and len(self.std) == len(self.mean)):
            raise InputError("preprocess mean/std need 1 or 3 values each, and std must be non-zero")

    def channels(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """mean/std as float32 arrays for ``c`` channels (a single value is broadcast)."""
        mean = np.resize(np.asarray(self.mean, np.float32), c)
        std = np.resize(np.asarray(self.std, np.float32), c)
        return mean, std

    def attributes(self) -> dict:
        return {
            "scale": float(self.scale), "mean": ",".join(repr(float(value)) for value in self.mean),
            "std": ",".join(repr(float(s)) for s in self.std), "out_h": int(self.out_h),
            "out_w": int(self.out_w), "out_dtype": self.out_dtype, "channel_order": self.channel_order,
            "plugin_namespace": NAMESPACE, "plugin_version": VERSION,
        }

    @classmethod
    def from_attributes(cls, attrs: dict) -> PreprocessOp:
        def floats(v) -> tuple[float, ...]:
            v = v.decode() if isinstance(v, bytes) else v
            return tuple(float(x) for x in str(v).split(",") if x.strip())

        def text(v) -> str:
            return v.decode() if isinstance(v, bytes) else str(v)

        return cls(out_h=int(attrs["out_h"]), out_w=int(attrs["out_w"]), scale=float(attrs["scale"]),
                   mean=floats(attrs["mean"]), std=floats(attrs["std"]),
                   channel_order=text(attrs.get("channel_order", "RGB")),
                   out_dtype=text(attrs.get("out_dtype", "float32")))


def _axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices i0, i1 and weights f for a bilinear resize with half-pixel centres."""
    s = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * np.float32(n_in / n_out) - np.float32(0.5)
    s = np.maximum(s, np.float32(0.0))
    i0 = np.minimum(np.floor(s).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (s - i0.astype(np.float32)).astype(np.float32)


def reference(frames: np.ndarray, op: PreprocessOp) -> np.ndarray:
    """NumPy statement of the op, float32 arithmetic in the kernel's order."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] not in (1, 3):
        raise InputError(f"frames must be uint8 (N,H,W,C) with C 1 or 3, got {frames.dtype} {frames.shape}")
    n, h, w, c = frames.shape
    x = frames.astype(np.float32)
    if c == 3 and op.channel_order == "BGR":
        x = x[..., ::-1]
    if (op.out_h, op.out_w) != (h, w):
        y0, y1, fy = _axis(h, op.out_h)
        x0, x1, fx = _axis(w, op.out_w)
        fy, fx = fy[None, :, None, None], fx[None, None, :, None]
        one = np.float32(1.0)
        p00, p01 = x[:, y0][:, :, x0], x[:, y0][:, :, x1]
        p10, p11 = x[:, y1][:, :, x0], x[:, y1][:, :, x1]
        x = (one - fy) * ((one - fx) * p00 + fx * p01) + fy * ((one - fx) * p10 + fx * p11)
    mean, std = op.channels(c)
    out = ((x * np.float32(op.scale) - mean) / std).astype(np.float32).transpose(0, 3, 1, 2)
    out = np.ascontiguousarray(out)
    return out.astype(np.float16) if op.out_dtype == "float16" else out


def make_node(op: PreprocessOp, inp: str, out: str, name: str = "optim_preprocess") -> onnx.NodeProto:
    return helper.make_node(OP_TYPE, [inp], [out], name=name, domain=DOMAIN, **op.attributes())


def prepend(model: onnx.ModelProto, op: PreprocessOp, frame_hw: tuple[int, int],
            frame_input: str = "frames") -> onnx.ModelProto:
    """A copy of ``model`` whose single float input is fed by the op from uint8 NHWC frames."""
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    g = edited.graph
    inits = {i.name for i in g.initializer}
    ins = [i for i in g.input if i.name not in inits]
    if len(ins) != 1:
        raise InputError(f"fused preprocessing needs a single-input model, this one has {len(ins)}")
    old = ins[0]
    dims = old.type.tensor_type.shape.dim
    if len(dims) != 4 or not all(d.HasField("dim_value") for d in dims[1:]):
        raise InputError("fused preprocessing needs an NCHW input with fixed C, H, W")
    c, h, w = (d.dim_value for d in dims[1:])
    if (h, w) != (op.out_h, op.out_w) or c not in (1, 3):
        raise InputError(f"the model wants {c}x{h}x{w} but the op makes {op.out_h}x{op.out_w} "
                         "(and 1 or 3 channels)")
    in_type = old.type.tensor_type.elem_type
    if in_type not in (TensorProto.FLOAT, TensorProto.FLOAT16):
        raise InputError("fused preprocessing feeds a float32 or float16 model input")
    batch = dims[0].dim_param or (str(dims[0].dim_value) if dims[0].dim_value else "batch")
    new_in = helper.make_tensor_value_info(frame_input, TensorProto.UINT8, [batch, frame_hw[0], frame_hw[1], c])
    as_float = f"{frame_input}__float"
    nodes = [helper.make_node("Cast", [frame_input], [as_float], to=TensorProto.FLOAT, name="optim_frames_to_float")]
    if op.out_dtype == "float32" and in_type == TensorProto.FLOAT:
        nodes.append(make_node(op, as_float, old.name))
    else:  # a Cast gives the model the type it takes (float16 results are float16-exact)
        mid = f"{old.name}__preprocessed"
        nodes += [make_node(op, as_float, mid),
                  helper.make_node("Cast", [mid], [old.name], to=in_type, name="optim_preprocess_cast")]
    g.input.remove(old)
    g.input.insert(0, new_in)
    for node in reversed(nodes):
        g.node.insert(0, node)
    if not any(o.domain == DOMAIN for o in edited.opset_import):
        edited.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return edited


def has_op(model: onnx.ModelProto) -> bool:
    return any(n.op_type == OP_TYPE and n.domain == DOMAIN for n in model.graph.node)


def op_of(model: onnx.ModelProto) -> tuple[PreprocessOp, tuple[int, int, int]] | None:
    """The model's preprocessing op and the (H, W, C) of the frames it takes, if it has one."""
    node = next((n for n in model.graph.node if n.op_type == OP_TYPE and n.domain == DOMAIN), None)
    if node is None:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    feed = node.input[0]
    cast = next((n for n in model.graph.node if n.op_type == "Cast" and feed in n.output), None)
    if cast is not None:  # the uint8 frames input is cast to float in front of the op
        feed = cast.input[0]
    vi = next(i for i in model.graph.input if i.name == feed)
    dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    return PreprocessOp.from_attributes(attrs), (dims[1], dims[2], dims[3])


def as_frames(images: np.ndarray, hwc: tuple[int, int, int], source: str) -> np.ndarray:
    """Raw uint8 images as NHWC frames of exactly ``hwc``, or a one-line DataError."""
    from optim.errors import DataError

    if images.dtype != np.uint8:
        raise DataError(f"{source}: a model with fused preprocessing takes raw uint8 frames, "
                        f"but the data is {images.dtype}")
    frames = images[..., None] if images.ndim == 3 else images
    if frames.ndim != 4 or tuple(frames.shape[1:]) != tuple(hwc):
        raise DataError(f"{source}: frames are {list(frames.shape[1:])} but the model takes "
                        f"{list(hwc)} (H, W, C)")
    return np.ascontiguousarray(frames)
