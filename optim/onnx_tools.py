"""Small helpers over ONNX graphs: safe loading, I/O description, dtype and Q/DQ inspection."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from optim.artifacts import atomic_path
from optim.errors import ModelError, first_line

ELIGIBLE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
FLOAT8_TYPES = {
    onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E4M3FNUZ,
    onnx.TensorProto.FLOAT8E5M2, onnx.TensorProto.FLOAT8E5M2FNUZ,
}


def load_onnx(path: Path, *, check: bool = True) -> onnx.ModelProto:
    """Load and (optionally) check an ONNX file; any failure is a one-line ModelError."""
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"{path} is a directory, not an ONNX file: give the .onnx file itself")
    if not path.is_file():
        raise ModelError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path))
    except onnx.checker.ValidationError as exc:  # external data that lies outside the model's folder
        raise ModelError(f"{path}: {first_line(exc).rstrip('.')}; optim reads a model's external data only from its own "
                         "folder: move the data file beside the model and fix its location") from None
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelError(f"{path} is not a readable ONNX model (corrupt or truncated?): "
                         f"{first_line(exc)}") from None
    if not model.graph.node:
        raise ModelError(f"{path} is not a usable ONNX model: its graph has no nodes")
    if check:
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as exc:
            raise ModelError(f"{path} fails the ONNX checker: {first_line(exc)}") from None
    return model


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    with atomic_path(Path(path)) as tmp:
        onnx.save(model, str(tmp))


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | str, ...]
    elem_type: int

    @property
    def dtype_name(self) -> str:
        return onnx.TensorProto.DataType.Name(self.elem_type).lower()


def _info(vi: onnx.ValueInfoProto) -> TensorInfo:
    t = vi.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                 for d in t.shape.dim)
    return TensorInfo(vi.name, dims, t.elem_type)


def show_dim(d: int | str | None, limit: int = 20) -> str:
    """A tensor size for a message: ints as they are, ``?`` for unknown, short names as they are.

    Shape inference (onnxslim, ``data_prop``) writes symbolic sizes as whole expressions, hundreds
    of characters long; past ``limit`` one is shown as ``f(height, width)`` (the names it depends
    on), a long plain name cut to ``limit`` with ``...``, else ``?``."""
    if d is None or d == "":
        return "?"
    d = str(d)
    if len(d) <= limit:
        return d
    if re.fullmatch(r"[A-Za-z_][\w.:]*", d):  # one long name, not an expression
        return d[:limit - 3] + "..."
    names = list(dict.fromkeys(re.findall(r"[A-Za-z_]\w*", d)))
    short = f"f({', '.join(names)})"
    return short if names and len(short) <= 2 * limit else "?"


def show_dims(dims) -> str:
    """``[N, 84, f(height, width)]``: a shape for a message, each size through ``show_dim``."""
    return "[" + ", ".join(show_dim(d) for d in dims) + "]"


def graph_inputs(model: onnx.ModelProto) -> list[TensorInfo]:
    inits = {i.name for i in model.graph.initializer}
    return [_info(v) for v in model.graph.input if v.name not in inits]


def single_input(inputs, where: str) -> tuple[str, int | str | None, tuple[int, ...]]:
    """The one input optim feeds: (name, batch dim, one sample's fixed shape).

    ``inputs`` are objects with ``name`` and ``shape`` (ONNX ``TensorInfo``, ORT ``NodeArg``).
    A model with several inputs, or with sizes other than the batch axis that are not fixed,
    is a ModelError naming ``where``."""
    if len(inputs) != 1:
        raise ModelError(f"{where} has {len(inputs)} inputs; optim handles single-input models")
    inp = inputs[0]
    shape = list(inp.shape or [])
    rest = shape[1:]
    if not rest:
        raise ModelError(f"{where}: input '{inp.name}' has no sizes besides the batch axis; optim takes "
                         "models whose input is a batch of samples of a fixed shape (e.g. [N, 3, 224, 224])")
    if not all(isinstance(d, int) and d > 0 for d in rest):
        shown = [d if isinstance(d, int) else show_dim(d) for d in rest]
        raise ModelError(f"{where}: input '{inp.name}' has non-fixed sizes {shown} besides the batch axis; "
                         + fix_sizes_hint(rest))
    return inp.name, (shape[0] if shape else None), tuple(int(d) for d in rest)


def fix_sizes_hint(rest) -> str:
    """How to give a model whose per-sample sizes ``rest`` are not all fixed the sizes optim needs."""
    example = [d if isinstance(d, int) and d > 0 else 640 for d in rest]
    return (f"optim needs them fixed: name the file in a recipe (model.source: onnx:FILE) with the sizes it "
            f"was made for as input.shape (e.g. input: {{shape: {example}}}) and use optim run (or optim export "
            "--recipe R.yaml -o FIXED.onnx to write a copy with fixed sizes for optim quantize/check/bench/build), "
            "or re-export the model with only the batch axis dynamic")


def graph_outputs(model: onnx.ModelProto) -> list[TensorInfo]:
    return [_info(v) for v in model.graph.output]


def tensor_types(model: onnx.ModelProto) -> set[int]:
    """Element types used anywhere in the graph (initializers, value_info, casts, Q/DQ)."""
    g = model.graph
    types = {i.data_type for i in g.initializer}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        types.add(vi.type.tensor_type.elem_type)
    for node in g.node:
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to":
                types.add(a.i)
            if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                types.add(a.t.data_type)
    return types


def has_float8(model: onnx.ModelProto) -> bool:
    return bool(tensor_types(model) & FLOAT8_TYPES)


def has_bfloat16(model: onnx.ModelProto) -> bool:
    return onnx.TensorProto.BFLOAT16 in tensor_types(model)


@dataclass(frozen=True)
class Coverage:
    """How many compute nodes (Conv/Gemm/MatMul) take a dequantized input."""

    quantized: int
    eligible: int
    by_op: dict[str, tuple[int, int]]
    qdq_dtypes: tuple[str, ...]
    #: the Conv/Gemm/MatMul nodes left unquantized, in graph order (a tool skipped them, or exclusions)
    unquantized: tuple[str, ...] = ()

    @property
    def fraction(self) -> float:
        return self.quantized / self.eligible if self.eligible else 0.0

    def as_dict(self) -> dict:
        return {"quantized": self.quantized, "eligible": self.eligible,
                "fraction": round(self.fraction, 4),
                "by_op": {k: {"quantized": q, "eligible": e} for k, (q, e) in self.by_op.items()},
                "qdq_dtypes": list(self.qdq_dtypes), "unquantized": list(self.unquantized)}


def quant_coverage(model: onnx.ModelProto) -> Coverage:
    g = model.graph
    dq_outputs = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
    inits = {i.name: i for i in g.initializer}
    const_types = {}
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    const_types[n.output[0]] = a.t.data_type
    qdtypes: set[str] = set()
    for n in g.node:
        if n.op_type == "QuantizeLinear" and len(n.input) > 2:
            zp = n.input[2]
            dt = inits[zp].data_type if zp in inits else const_types.get(zp)
            if dt is not None:
                qdtypes.add(onnx.TensorProto.DataType.Name(dt).lower())
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:  # pre-quantized weights
            qdtypes.add(onnx.TensorProto.DataType.Name(inits[n.input[0]].data_type).lower())
        if n.op_type == "QuantizeLinear":
            for a in n.attribute:
                if a.name == "output_dtype" and a.i:
                    qdtypes.add(onnx.TensorProto.DataType.Name(a.i).lower())
    total: Counter[str] = Counter()
    quant: Counter[str] = Counter()
    left: list[str] = []
    for k, n in enumerate(g.node):
        if n.op_type in ELIGIBLE_OPS:
            total[n.op_type] += 1
            if any(i in dq_outputs for i in n.input[:2]):
                quant[n.op_type] += 1
            else:
                left.append(n.name or f"{n.op_type} #{k}")
    by_op = {op: (quant[op], total[op]) for op in sorted(total)}
    return Coverage(sum(quant.values()), sum(total.values()), by_op, tuple(sorted(qdtypes)), tuple(left))


def name_some(names, limit: int = 5) -> str:
    """``a, b, c`` or, past ``limit`` names, ``a, b, c, d, e and 7 more``."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return f"{shown} and {len(names) - limit} more" if len(names) > limit else shown
