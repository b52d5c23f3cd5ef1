"""Stage 1: PyTorch -> FP32 ONNX with a dynamic batch axis, simplified, checked, verified.

``OnnxFromTorch``: export with the TorchScript exporter (``dynamo=False``), simplify
with onnxslim, run the ONNX checker and strict shape inference, then run the ONNX
in ONNX Runtime and PyTorch on the same random inputs at two batch sizes. The file
is renamed into place only when every check passed.

``onnx_from_file`` (a recipe's ``model.source: onnx:PATH``, e.g. a user's own YOLOv8
export): the FP32 ONNX file is taken as it is. Its single input must be the recipe's
``input`` (name, float32, per-sample shape; sizes it leaves symbolic besides the batch,
such as an Ultralytics ``dynamic=True`` export's height and width, are fixed to the
recipe's). A fixed batch axis is made symbolic when the graph then runs at another batch
size and gives each sample the output it gives alone; otherwise the file is refused with
how to re-export it. Then the ONNX checker (full: strict shape inference) runs, and ONNX
Runtime checks that a batch gives the same outputs as its samples one by one. There is
no PyTorch to verify against. The file is copied into place (rewritten only when a size
was fixed or the batch made dynamic) when every check passed.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from optim.artifacts import atomic_path, write_json
from optim.executor import StageOutput
from optim.errors import ExportError, InputError, ModelError, first_line
from optim.onnx_tools import graph_inputs, graph_outputs
from optim.settings import ExportSettings, InputSpec, Strict
from optim.sources import LoadedModel


@dataclass
class ExportReport:
    path: str
    opset: int
    verify_batches: list[int]
    max_abs_error: float
    max_rel_error: float
    atol: float
    rtol: float
    nodes: int
    seconds: float
    #: what the errors are against: "pytorch", or the note of an ONNX-file source
    verified_against: str = "pytorch"
    #: what was changed in an ONNX-file source (fixed sizes, batch made dynamic)
    changes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _torch_export(model: LoadedModel, spec: InputSpec, s: ExportSettings, out: Path) -> None:
    import torch

    batch = max(2, spec.batch.min) if spec.batch.max >= 2 else 1
    dummy = torch.zeros((batch, *spec.shape), dtype=torch.float32)
    try:
        with torch.no_grad():
            n_out = len(_as_tuple(model.module(dummy)))
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"{model.source} does not accept an input of shape {list(dummy.shape)}: "
                          f"{first_line(exc)}") from None
    names = _output_names(s, n_out)
    axes = {spec.name: {0: "batch"}, **{n: {0: "batch"} for n in names}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model.module, (dummy,), str(out), dynamo=False, opset_version=s.opset,
                              input_names=[spec.name], output_names=names, dynamic_axes=axes,
                              do_constant_folding=True)
        except Exception as exc:
            raise ExportError(f"torch.onnx.export failed for {model.source}: "
                              f"{first_line(exc)}") from None


def _output_names(s: ExportSettings, n_out: int) -> list[str]:
    """One ONNX output name per model output.

    Names may be given as a list or as one comma-separated string (``--output-name
    boxes,scores``). The default name ("output",) on a model with several outputs numbers
    them ``output_0, output_1, ...``; an explicit list of the wrong length is an
    error, raised before anything is written.
    """
    names = [n.strip() for name in s.output_names for n in name.split(",") if n.strip()]
    if len(names) == n_out:
        if len(set(names)) != len(names):
            raise InputError(f"output names must differ from each other, got {', '.join(names)}")
        return names
    if tuple(s.output_names) == ExportSettings.model_fields["output_names"].default:
        return [f"output_{i}" for i in range(n_out)]
    outputs = "1 output" if n_out == 1 else f"{n_out} outputs"
    given = "1 output name" if len(names) == 1 else f"{len(names)} output names"
    raise InputError(f"the model returns {outputs} but {given} {'was' if len(names) == 1 else 'were'} "
                     f"given ({', '.join(names) or 'none'}); pass one name per output, "
                     "comma-separated, e.g. --output-name boxes,scores")


def _as_tuple(out) -> tuple:
    import torch

    if isinstance(out, torch.Tensor):
        return (out,)
    if isinstance(out, (tuple, list)):
        return tuple(out)
    raise ExportError(f"the model returned {type(out).__name__}; optim exports models that "
                      "return a tensor or a tuple of tensors")


def _check(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
        onnx.shape_inference.infer_shapes_path(str(path), str(path), strict_mode=True)
    except Exception as exc:
        raise ExportError(f"exported ONNX fails the checker: {first_line(exc)}") from None


def _errors(ref: np.ndarray, got: np.ndarray, s: ExportSettings) -> tuple[float, float, bool]:
    """Max abs and max rel error of ``got`` against ``ref``, and whether every element is within
    ``s.atol + s.rtol * |ref|`` (the one tolerance both verifications use)."""
    err = np.abs(ref.astype(np.float64) - got)
    return (float(err.max(initial=0.0)), float((err / (np.abs(ref) + 1e-12)).max(initial=0.0)),
            bool(np.all(err <= s.atol + s.rtol * np.abs(ref))))


def _verify(model: LoadedModel, path: Path, spec: InputSpec, s: ExportSettings) -> tuple[float, float]:
    import torch

    from optim.backends.onnxruntime import OrtRunner

    rng = np.random.default_rng(s.seed)
    worst_abs = worst_rel = 0.0
    with OrtRunner(path) as runner:
        for b in s.verify_batches:
            if not spec.batch.min <= b <= spec.batch.max:
                raise ExportError(f"verify batch {b} is outside the input batch range "
                                  f"{spec.batch.min}..{spec.batch.max}")
            x = rng.standard_normal((b, *spec.shape)).astype(np.float32)
            with torch.no_grad():
                ref = [t.detach().numpy() for t in _as_tuple(model.module(torch.from_numpy(x)))]
            got = list(runner.infer({spec.name: x}).values())
            for r, g in zip(ref, got):
                if r.shape != g.shape:
                    raise ExportError(f"ONNX output shape {list(g.shape)} != PyTorch {list(r.shape)} "
                                      f"at batch {b}")
                e_abs, e_rel, ok = _errors(r, g, s)
                worst_abs, worst_rel = max(worst_abs, e_abs), max(worst_rel, e_rel)
                if not ok:
                    raise ExportError(
                        f"ONNX differs from PyTorch at batch {b}: max abs error {e_abs:.3g} "
                        f"exceeds atol {s.atol:g} + rtol {s.rtol:g} * |ref|")
    return worst_abs, worst_rel


def onnx_from_torch(model: LoadedModel, spec: InputSpec, settings: ExportSettings,
                    out: Path) -> ExportReport:
    """Export, simplify, check and verify; write ``out`` atomically."""
    import onnx

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="optim-export-") as tmpd:
        raw = Path(tmpd) / "raw.onnx"
        _torch_export(model, spec, settings, raw)
        proto = onnx.load(str(raw))
        if settings.simplify:
            import onnxslim

            try:
                proto = onnxslim.slim(proto)
            except Exception as exc:
                raise ExportError(f"onnxslim failed: {first_line(exc)}") from None
        proto.producer_name = "optim"
        onnx.save(proto, str(raw))
        _check(raw)
        ins = graph_inputs(onnx.load(str(raw)))
        if len(ins) != 1 or not isinstance(ins[0].shape[0], str):
            raise ExportError("exported ONNX lost its dynamic batch axis")
        max_abs, max_rel = _verify(model, raw, spec, settings)
        with atomic_path(out) as tmp:
            tmp.write_bytes(raw.read_bytes())
    final = onnx.load(str(out))
    assert graph_outputs(final)
    return ExportReport(str(out), settings.opset, list(settings.verify_batches), max_abs, max_rel,
                        settings.atol, settings.rtol, len(final.graph.node),
                        round(time.perf_counter() - t0, 2))


NO_TORCH = "source is an ONNX file: no PyTorch to verify against"
REEXPORT = ("re-export it with one (Ultralytics: model.export(format='onnx', dynamic=True); "
            "torch.onnx.export: dynamic_axes={{'{inp}': {{0: 'batch'}}, '{out}': {{0: 'batch'}}}})")


def _dims(shape: tuple) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _fit_input(proto, src: Path, spec: InputSpec) -> tuple[list[str], int | None]:
    """Check the file's single input against the recipe's; fix symbolic sizes besides the batch.

    Returns the changes made and the fixed batch size (None when the batch axis is symbolic)."""
    import onnx

    from optim.onnx_tools import graph_inputs

    ins = graph_inputs(proto)
    want = _dims(("batch", *spec.shape))
    if len(ins) != 1:
        raise ModelError(f"{src} has {len(ins)} inputs ({', '.join(i.name for i in ins)}); optim takes "
                         f"models with one input, the recipe's '{spec.name}' {want}")
    got = ins[0]
    if got.name != spec.name:
        raise ModelError(f"{src}: its input is '{got.name}' {_dims(got.shape)} but the recipe's input is "
                         f"'{spec.name}' {want}: set input.name: {got.name} in the recipe")
    if got.elem_type != onnx.TensorProto.FLOAT:
        raise ModelError(f"{src}: input '{got.name}' is {got.dtype_name}; optim takes an FP32 model (float "
                         "input): re-export it in FP32 (Ultralytics: without half=True)")
    if len(got.shape) != 1 + len(spec.shape) or any(
            isinstance(d, int) and d != w for d, w in zip(got.shape[1:], spec.shape)):
        raise ModelError(f"{src}: input '{got.name}' has shape {_dims(got.shape)} but the recipe's input.shape "
                         f"is {list(spec.shape)} (per sample, {want} with the batch): make them agree")
    value = next(v for v in proto.graph.input if v.name == got.name)
    dims = value.type.tensor_type.shape.dim
    changes = []
    for d, size in zip(list(dims)[1:], spec.shape):
        if not d.HasField("dim_value"):
            changes.append(f"input size '{d.dim_param or '?'}' fixed to {size}")
            d.dim_value = size
    batch = got.shape[0] if isinstance(got.shape[0], int) and got.shape[0] > 0 else None
    if batch is None and not dims[0].dim_param:
        dims[0].dim_param = "batch"  # an unnamed symbolic axis: name it
    if batch is not None:
        out = proto.graph.output
        bad = [o.name for o in out if not o.type.tensor_type.shape.dim
               or o.type.tensor_type.shape.dim[0].dim_value not in (0, batch)]
        if bad:
            raise ModelError(f"{src}: input '{got.name}' has a fixed batch size {batch} and output '{bad[0]}' does "
                             f"not start with that axis; optim needs a dynamic batch axis: "
                             + REEXPORT.format(inp=got.name, out=bad[0]))
        dims[0].dim_param = "batch"
        for o in out:
            o.type.tensor_type.shape.dim[0].dim_param = "batch"
        changes.append(f"fixed batch size {batch} made dynamic")
    if changes:  # stale intermediate shapes would contradict the new ones
        del proto.graph.value_info[:]
    return changes, batch


def _verify_batch(model: bytes, src: Path, spec: InputSpec, s: ExportSettings,
                  fixed_batch: int | None) -> tuple[int, float, float]:
    """Run a batch and its first and last samples alone in ORT: outputs must have the batch axis
    first and agree per sample. Returns (batch, max abs error, max rel error)."""
    from optim.backends.onnxruntime import OrtRunner

    b = max((2, *s.verify_batches))
    x = np.random.default_rng(s.seed).random((b, *spec.shape), dtype=np.float32)
    out0 = ""
    worst_abs = worst_rel = 0.0
    try:
        import onnxruntime as ort

        quiet = ort.RunOptions()
        quiet.log_severity_level = 4  # a failing run is reported below, on one line

        with OrtRunner(model, label=str(src)) as runner:
            sess = runner.session
            names = [o.name for o in sess.get_outputs()]
            out0 = names[0]

            def infer(a: np.ndarray) -> dict[str, np.ndarray]:
                return dict(zip(names, sess.run(None, {spec.name: a}, quiet)))

            whole = infer(x)
            for i in (0, b - 1):
                alone = infer(x[i:i + 1])
                for name, r in alone.items():
                    g = whole[name]
                    if g.ndim == 0 or g.shape[0] != b or g.shape[1:] != r.shape[1:]:
                        raise ValueError(f"output '{name}' has shape {list(g.shape)} at batch {b} and "
                                         f"{list(r.shape)} at batch 1")
                    e_abs, e_rel, ok = _errors(r[0], g[i], s)
                    worst_abs, worst_rel = max(worst_abs, e_abs), max(worst_rel, e_rel)
                    if not ok:
                        raise ValueError(f"sample {i} of a batch of {b} gives output '{name}' {e_abs:.3g} "
                                         "away from the same sample alone")
    except ModelError:
        raise
    except Exception as exc:  # ours (ValueError) or onnxruntime's own exception types
        msg = first_line(exc)
        if fixed_batch is not None:
            raise ModelError(f"{src}: input '{spec.name}' has a fixed batch size {fixed_batch} and the graph does "
                             f"not run at other batch sizes ({msg}); optim needs a dynamic batch axis: "
                             + REEXPORT.format(inp=spec.name, out=out0 or "output")) from None
        raise ModelError(f"{src} does not run correctly in ONNX Runtime at batch {b}: {msg}") from None
    return b, worst_abs, worst_rel


def _has_external_data(src: Path) -> bool:
    import onnx
    from onnx.external_data_helper import uses_external_data

    proto = onnx.load(str(src), load_external_data=False)
    return any(uses_external_data(t) for t in proto.graph.initializer)


def onnx_from_file(src: Path, spec: InputSpec, settings: ExportSettings, out: Path) -> ExportReport:
    """A user's FP32 ONNX file as the run's FP32 model: checked, fitted to the recipe's input,
    verified for batch independence in ORT, written to ``out`` atomically."""
    import onnx

    from optim.onnx_tools import load_onnx

    t0 = time.perf_counter()
    src = Path(src)
    proto = load_onnx(src, check=False)  # a missing, corrupt or empty file: one-line ModelError
    changes, fixed_batch = _fit_input(proto, src, spec)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ModelError(f"{src} fails the ONNX checker: {first_line(exc)}") from None
    data = proto.SerializeToString()
    b, max_abs, max_rel = _verify_batch(data, src, spec, settings, fixed_batch)
    with atomic_path(out) as tmp:
        if changes or _has_external_data(src):
            tmp.write_bytes(data)  # with external data, what was loaded goes into the one file
        else:
            tmp.write_bytes(src.read_bytes())
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    note = f"{NO_TORCH}; batch {b} gives each sample's batch-1 output in ONNX Runtime"
    return ExportReport(str(out), opset, [1, b], max_abs, max_rel, settings.atol, settings.rtol,
                        len(proto.graph.node), round(time.perf_counter() - t0, 2), note, changes)


NAME = "export"
SUMMARY = "PyTorch -> FP32 ONNX (dynamic batch, verified against PyTorch)"
TOOLS = ("torch", "torchvision", "onnx", "onnxslim", "onnxruntime")


class Settings(Strict):
    """What the FP32 model is made from (the weights file is an input artifact, hashed)."""

    source: str
    kwargs: dict = {}
    weights: str | None = None  # the user's path, for the record; not part of what is exported
    input: InputSpec
    export: ExportSettings = ExportSettings()


def run(inputs: list, settings: Settings, ctx) -> StageOutput:
    """``inputs``: the weights file, if any (for an ``onnx:`` source, the ONNX file). Writes the
    FP32 ONNX to ``ctx.out`` and ``export.json`` beside it."""
    from optim.console import info
    from optim.sources import load_model

    if settings.source.startswith("onnx:"):
        return _run_onnx_file(inputs, settings, ctx)
    weights = inputs[0].path if inputs else None
    # bundled models load their own weights file (an input here only so that the key hashes it)
    model = load_model(settings.source, Path(settings.weights) if settings.weights else None, **settings.kwargs)
    rep = onnx_from_torch(model, settings.input, settings.export, ctx.out)
    info(f"export verified vs PyTorch at batches {rep.verify_batches}: max abs error "
         f"{rep.max_abs_error:.3g}, max rel error {rep.max_rel_error:.3g}")
    write_json(ctx.side("export", "export.json"), {**rep.as_dict(), "path": ctx.out.name})
    return StageOutput({**settings.export.model_dump(mode="json"), "source": settings.source,
                        "weights": str(settings.weights or weights)}, rep)


def _run_onnx_file(inputs: list, settings: Settings, ctx) -> StageOutput:
    from optim.console import info

    src = Path(inputs[0].path) if inputs else Path(settings.source.split(":", 1)[1])
    if settings.weights or settings.kwargs:
        raise InputError(f"model.{'weights' if settings.weights else 'kwargs'} does not apply to an ONNX-file "
                         f"source ({settings.source}): the file holds the weights; remove it from the recipe")
    rep = onnx_from_file(src, settings.input, settings.export, ctx.out)
    for change in rep.changes:
        info(f"export: {src.name}: {change}")
    info(f"export: {rep.verified_against} (max abs error {rep.max_abs_error:.3g}); "
         f"ONNX checker passed, opset {rep.opset}, {rep.nodes} nodes")
    write_json(ctx.side("export", "export.json"), {**rep.as_dict(), "path": ctx.out.name, "source": str(src)})
    return StageOutput({"source": settings.source, "opset": rep.opset, "changes": rep.changes,
                        "verified_against": rep.verified_against}, rep)
