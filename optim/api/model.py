"""``optim.export`` (PyTorch -> verified FP32 ONNX) and ``optim.build`` (ONNX -> TensorRT or TensorRT-RTX engine)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from optim.api.common import (PathLike, as_path, as_recipe, flag, in_private_tmp, ints, names, or_recipe, output_label,
                              settings_of)
from optim.errors import InputError

if TYPE_CHECKING:
    from optim.recipe import Recipe
    from optim.settings import BuildSettings, ExportSettings
    from optim.stages.build import BuildReport
    from optim.stages.export import ExportReport


# -- export -----------------------------------------------------------------------------------------
@in_private_tmp
def export(model: str | Any | None = None, *, output: PathLike = "model.fp32.onnx", input_shape: Sequence[int] | str | None = None,
           weights: PathLike | None = None, recipe: PathLike | Recipe | None = None,
           settings: ExportSettings | None = None, input_name: str = "input", batch_min: int = 1,
           batch_max: int = 256, opset: int = 17, output_names: str | Sequence[str] = ("output",),
           atol: float = 1e-4, rtol: float = 1e-3, flags: bool = False) -> ExportReport:
    """A PyTorch model to a verified FP32 ONNX with a dynamic batch axis, as ``optim export``.

    ``model``: ``bundled:NAME``, ``torchvision:NAME``, ``package.module:factory`` ... (as MODEL), or a
    ``torch.nn.Module`` itself; ``recipe``: take the model, input and export settings from it (a
    recipe's ``onnx:PATH`` model is checked and copied: ``verified_against`` says so). A model named
    without trained weights gets a note saying so. ``flags``: messages name the arguments as the
    ``optim export`` options (``--input-shape``), for the command itself."""
    from optim.artifacts import check_output_file, stage_writes
    from optim.settings import BatchRange, ExportSettings, InputSpec
    from optim.stages.export import onnx_from_file, onnx_from_torch

    out = as_path(output, "output")
    check_output_file(out, flag("output", flags))
    r = as_recipe(recipe)
    if r is not None:
        model = model if model is not None else r.model.source
        weights = weights if weights is not None else r.model.weights
        spec, s, kwargs = r.input, settings or r.export, r.model.kwargs
    else:
        if model is None or input_shape is None:
            raise InputError(f"give {flag('model', flags)} and {flag('input_shape', flags)} "
                             f"(or {or_recipe(flags)})")
        shape = ints(input_shape, flag("input_shape", flags))
        spec = settings_of(InputSpec, None, "input", name=input_name, shape=shape,
                         batch=settings_of(BatchRange, None, "batch", min=batch_min, opt=batch_min, max=batch_max))
        vb = tuple(sorted({batch_min, min(batch_max, max(batch_min, 4))}))
        s = settings_of(ExportSettings, settings, "settings", opset=opset, output_names=names(output_names),
                      atol=atol, rtol=rtol, verify_batches=vb)
        kwargs = {}
    if model is None:
        raise InputError(f"give {flag('model', flags)} (or a {flag('recipe', flags)} that names one)")
    with stage_writes("export"):
        if r is not None and isinstance(model, str) and model.startswith("onnx:"):  # the recipe's own ONNX file
            return onnx_from_file(Path(model.split(":", 1)[1]), spec, s, out)
        return onnx_from_torch(_torch_model(model, weights, kwargs, flags), spec, s, out)


def _torch_model(model: str | Any, weights: PathLike | None, kwargs: Mapping[str, Any], flags: bool):
    """The model to export as a ``LoadedModel``: built from its source string (with a note on its
    weights), or a ``torch.nn.Module`` as given."""
    from optim.sources import LoadedModel, load_model

    if isinstance(model, str):
        path = as_path(weights, "weights")
        loaded = load_model(model, path, **kwargs)
        _weights_note(model, path, loaded.trained, flags)
        return loaded
    if hasattr(model, "state_dict") and callable(getattr(model, "eval", None)):  # a torch.nn.Module
        return LoadedModel(model.eval(), f"python:{type(model).__name__}", "given")
    raise InputError(f"model must be a source string (bundled:NAME, torchvision:NAME, package.module:"
                     f"factory) or a torch.nn.Module, got {type(model).__name__}")


def _weights_note(source: str, weights: Path | None, trained: bool, flags: bool) -> None:
    """A note when the model's accuracy means nothing (random weights) or its weights are the factory's."""
    from optim.console import info
    from optim.sources import trained_weights_reason

    reason = trained_weights_reason(source, weights)
    if reason:  # what a run's report says too (its "not meaningful" column)
        info(f"[yellow]note[/]: {reason}")
    elif not trained:  # a factory may load its own weights: optim cannot tell
        info(f"[yellow]note[/]: no {flag('weights', flags)} given; the model has whatever weights its factory "
             "gives it")


# -- build ------------------------------------------------------------------------------------------
@in_private_tmp
def build(onnx: PathLike, *, target: str = "h100", output: PathLike | None = None, precision: str | None = None,
          batch: Sequence[int] | str | None = None, settings: BuildSettings | None = None,
          recipe: PathLike | Recipe | None = None, tf32: bool = False, opt_level: int = 3,
          workspace_mib: int | None = None, hardware_compat: str = "none", version_compatible: bool = False,
          plugins: Sequence[PathLike] = (), timing_cache: PathLike | None = None, flags: bool = False) -> BuildReport:
    """A TensorRT engine (``.plan``) and its manifest, as ``optim build``: ``target="h100"`` (TensorRT, on
    an H100: BackendUnavailable elsewhere) or ``"rtx"`` (TensorRT-RTX for sm86/89/120, built here
    without a GPU). ``batch``: the profile's min,opt,max (default 1,1,256). Output: beside the ONNX,
    ``NAME.TARGET.plan``; the timing cache: ``timing.cache`` beside the engine. ``flags``: messages name
    the arguments as the ``optim build`` options (``--batch``), for the command itself."""
    from optim.artifacts import check_output_file, stage_writes
    from optim.settings import BuildSettings
    from optim.stages.build import engine_from_onnx

    src = as_path(onnx, "onnx")  # a missing or unreadable file: the stages' own errors
    r = as_recipe(recipe)
    if r is not None:
        s, brange = settings or r.build, r.input.batch
    else:
        s = settings_of(BuildSettings, settings, "settings", tf32=tf32, optimization_level=opt_level,
                      workspace_mib=workspace_mib, hardware_compatibility=hardware_compat,
                      version_compatible=version_compatible, plugins=tuple(Path(p).resolve() for p in plugins))
        brange = _batch_range(batch, flags)
    if precision is not None and precision not in ("fp16", "bf16"):
        raise InputError(f"{flag('precision', flags)} takes fp16 or bf16 (for an FP32 ONNX), got '{precision}'")
    stem = src.name.removesuffix(".onnx") + (f".{precision}" if precision else "")
    out = as_path(output, "output") or src.with_name(f"{stem}.{target}.plan")
    cache = as_path(timing_cache, "timing_cache") or out.with_name("timing.cache")
    check_output_file(out, output_label("output", output, "engine (beside the ONNX)", flags))
    check_output_file(cache, output_label("timing_cache", timing_cache, "timing cache (beside the engine)", flags))
    with stage_writes("build"):
        return engine_from_onnx(src, out, s, target, batch=brange, precision=precision, timing_cache=cache,
                                sample_shape=r.input.shape if r is not None else None)


def _batch_range(batch: Sequence[int] | str | None, flags: bool):
    """The optimization profile's batch sizes: ``batch`` as min,opt,max, or 1,1,256."""
    from optim.settings import BatchRange

    name = flag("batch", flags)
    b = (1, 1, 256) if batch is None else ints(batch, name)
    if len(b) != 3:
        raise InputError(f"{name} takes min,opt,max, got {repr(batch) if isinstance(batch, str) else list(b)}")
    return settings_of(BatchRange, None, "batch", min=b[0], opt=b[1], max=b[2])
