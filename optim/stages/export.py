"""Stage 1: PyTorch -> FP32 ONNX with a dynamic batch axis, simplified, checked, verified.

``OnnxFromTorch``: export with the TorchScript exporter (``dynamo=False``), simplify
with onnxslim, run the ONNX checker and strict shape inference, then run the ONNX
in ONNX Runtime and PyTorch on the same random inputs at two batch sizes. The file
is renamed into place only when every check passed.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from optim.artifacts import atomic_path, write_json
from optim.executor import StageOutput
from optim.errors import ExportError, InputError, first_line
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
    them ``output_0, output_1, ...`` as before; an explicit list of the wrong length is an
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
                err = np.abs(r.astype(np.float64) - g)
                worst_abs = max(worst_abs, float(err.max()))
                worst_rel = max(worst_rel, float((err / (np.abs(r) + 1e-12)).max()))
                if not np.all(err <= s.atol + s.rtol * np.abs(r)):
                    raise ExportError(
                        f"ONNX differs from PyTorch at batch {b}: max abs error {err.max():.3g} "
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


NAME = "export"
TOOLS = ("torch", "torchvision", "onnx", "onnxslim", "onnxruntime")


class Settings(Strict):
    """What the FP32 model is made from (the weights file is an input artifact, hashed)."""

    source: str
    kwargs: dict = {}
    weights: str | None = None  # the user's path, for the record; not part of what is exported
    input: InputSpec
    export: ExportSettings = ExportSettings()


def run(inputs: list, settings: Settings, ctx) -> StageOutput:
    """``inputs``: the weights file, if any. Writes the FP32 ONNX to ``ctx.out`` and
    ``export.json`` beside it."""
    from optim.console import info
    from optim.sources import load_model

    weights = inputs[0].path if inputs else None
    # bundled models load their own weights file (an input here only so that the key hashes it)
    model = load_model(settings.source, Path(settings.weights) if settings.weights else None, **settings.kwargs)
    rep = onnx_from_torch(model, settings.input, settings.export, ctx.out)
    info(f"export verified vs PyTorch at batches {rep.verify_batches}: max abs error "
         f"{rep.max_abs_error:.3g}, max rel error {rep.max_rel_error:.3g}")
    write_json(ctx.side("export", "export.json"), {**rep.as_dict(), "path": ctx.out.name})
    return StageOutput({**settings.export.model_dump(mode="json"), "source": settings.source,
                        "weights": str(settings.weights or weights)}, rep)
