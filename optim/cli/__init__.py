"""The ``optim`` command line: thin commands over the stage modules."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer

from rich.markup import escape

from optim.console import console, info
from optim.errors import InputError, OptimError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Export, quantize, check, build (TensorRT), benchmark and report vision models (INT8/FP8/FP16/BF16).",
)
_state = {"debug": False}


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False) -> None:
    _state["debug"] = debug


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise InputError(f"{what} must be comma-separated integers, got '{text}'") from None
    if not vals or any(v < 1 for v in vals):
        raise InputError(f"{what} must be positive integers, got '{text}'")
    return vals


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (text or "").split(",") if v.strip())


def _recipe(path: Path | None):
    if path is None:
        return None
    from optim.recipe import load_recipe

    return load_recipe(path)


def _input_spec_from_onnx(path: Path):
    """The input spec of an ONNX file (batch axis dynamic, the rest fixed)."""
    from optim.onnx_tools import graph_inputs, load_onnx
    from optim.recipe import InputSpec

    ins = graph_inputs(load_onnx(path))
    if len(ins) != 1:
        raise InputError(f"{path} has {len(ins)} inputs; optim handles single-input models")
    dims = ins[0].shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in dims):
        raise InputError(f"{path}: input '{ins[0].name}' has non-fixed sizes {list(dims)} besides batch")
    return InputSpec(name=ins[0].name, shape=tuple(int(d) for d in dims))


def _preprocess_for(spec, recipe):
    from optim.recipe import Preprocess

    if recipe is not None:
        return recipe.preprocess
    channels = spec.shape[0] if len(spec.shape) == 3 else 1
    return Preprocess(color="gray" if channels == 1 else "rgb", mean=(0.0,), std=(1.0,))


def _load_data(arg: str, onnx_path: Path, recipe, samples: int | None, labels: Path | None = None):
    from optim.data import prepare, parse_data_arg

    spec = parse_data_arg(arg)
    if labels is not None:
        spec = spec.model_copy(update={"labels": labels.resolve()})
    ispec = _input_spec_from_onnx(onnx_path)
    return prepare(spec, _preprocess_for(ispec, recipe), ispec, samples)


from optim.cli.tuning import RecipeOpt, budget_options  # noqa: E402

_BUDGET = budget_options()


def _fused_op(path: Path):
    from optim.onnx_tools import load_onnx
    from optim.ops.preprocess import op_of

    return op_of(load_onnx(path))


def _load_frames(arg: str, fused, samples: int | None, labels: Path | None):
    """Raw frames for a model with fused preprocessing, and the same frames preprocessed
    on the host by the op's reference (what the FP32 reference model is fed)."""
    from optim.data import load_dataset, parse_data_arg
    from optim.ops.preprocess import as_frames, reference

    op, hwc = fused
    spec = parse_data_arg(arg)
    if labels is not None:
        spec = spec.model_copy(update={"labels": labels.resolve()})
    ds = load_dataset(spec, (hwc[2], op.out_h, op.out_w)).head(samples)
    frames = as_frames(ds.images, hwc, ds.source)
    x = reference(frames, op).astype("float32")
    return frames, x, ds.labels, ds


@app.command()
def export(
    model: Annotated[Optional[str], typer.Argument(help="torchvision:NAME, package.module:factory or bundled:NAME.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="ONNX file to write.")] = Path("model.fp32.onnx"),
    weights: Annotated[Optional[Path], typer.Option(help="Trained weights: .safetensors or a state-dict checkpoint (never unpickled).")] = None,
    input_shape: Annotated[Optional[str], typer.Option(help="Per-sample input shape, e.g. 3,224,224.")] = None,
    input_name: Annotated[str, typer.Option(help="Name of the ONNX input.")] = "input",
    batch_min: Annotated[int, typer.Option(help="Smallest batch size.")] = 1,
    batch_max: Annotated[int, typer.Option(help="Largest batch size.")] = 256,
    opset: Annotated[int, typer.Option(help="ONNX opset (>= 17).")] = 17,
    output_name: Annotated[str, typer.Option(help="Name of the ONNX output.")] = "output",
    atol: Annotated[float, typer.Option(help="Absolute tolerance vs PyTorch.")] = 1e-4,
    rtol: Annotated[float, typer.Option(help="Relative tolerance vs PyTorch.")] = 1e-3,
    recipe: RecipeOpt = None,
) -> None:
    """Export a PyTorch model to a verified FP32 ONNX with a dynamic batch axis."""
    from optim.stages.export import onnx_from_torch
    from optim.recipe import BatchRange, ExportSettings, InputSpec
    from optim.sources import load_model

    r = _recipe(recipe)
    if r is not None:
        model = model or r.model.source
        weights = weights or r.model.weights
        spec, settings, kwargs = r.input, r.export, r.model.kwargs
    else:
        if model is None or input_shape is None:
            raise InputError("give MODEL and --input-shape (or --recipe)")
        spec = InputSpec(name=input_name, shape=_ints(input_shape, "--input-shape"),
                         batch=BatchRange(min=batch_min, opt=batch_min, max=batch_max))
        vb = tuple(sorted({batch_min, min(batch_max, max(batch_min, 4))}))
        settings = ExportSettings(opset=opset, output_names=(output_name,), atol=atol, rtol=rtol,
                                  verify_batches=vb)
        kwargs = {}
    if model is None:
        raise InputError("give MODEL (or a --recipe that names one)")
    loaded = load_model(model, weights, **kwargs)
    if not loaded.trained:
        info("[yellow]note[/]: no trained weights given; the model has random weights")
    rep = onnx_from_torch(loaded, spec, settings, output)
    info(f"wrote {output}: opset {rep.opset}, {rep.nodes} nodes, dynamic batch "
         f"{spec.batch.min}..{spec.batch.max}")
    info(f"verified vs PyTorch at batches {rep.verify_batches}: max abs error {rep.max_abs_error:.3g}, "
         f"max rel error {rep.max_rel_error:.3g} (tolerance atol {rep.atol:g}, rtol {rep.rtol:g})")


@app.command()
def quantize(
    onnx_path: Annotated[Path, typer.Argument(metavar="ONNX", help="FP32 ONNX model.")],
    precision: Annotated[str, typer.Option(help="int8, fp8, fp16 or bf16.")],
    target: Annotated[str, typer.Option(help="tensorrt (modelopt Q/DQ) or onnxruntime (ORT CPU integer kernels; int8 only).")] = "tensorrt",
    calib: Annotated[Optional[str], typer.Option(help="Calibration data: .npz/.npy, IDX file, image folder, spec .yaml.")] = None,
    calib_samples: Annotated[int, typer.Option(help="Use the first N calibration samples.")] = 256,
    method: Annotated[str, typer.Option(help="Calibration: max, entropy, percentile (onnxruntime target).")] = "entropy",
    exclude_nodes: Annotated[Optional[str], typer.Option(help="Comma-separated node names (regex) to keep unquantized.")] = None,
    exclude_op_types: Annotated[Optional[str], typer.Option(help="Comma-separated op types to keep unquantized.")] = None,
    high_precision: Annotated[str, typer.Option(help="Precision outside quantized ops: fp32 or fp16.")] = "fp32",
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Output ONNX (default: beside the input).")] = None,
    recipe: RecipeOpt = None,
    max_drop: _BUDGET["max_drop"] = None,
    tune_data: _BUDGET["tune_data"] = None,
    tune_samples: _BUDGET["tune_samples"] = 1024,
    metric: _BUDGET["metric"] = "auto",
    max_excluded: _BUDGET["max_excluded"] = None,
) -> None:
    """Quantize (INT8/FP8, explicit Q/DQ) or convert (FP16/BF16) an FP32 ONNX model.

    With --max-drop, the nodes that cost most are taken back to high precision until
    the model loses at most that many points against FP32 on the tuning data."""
    from pydantic import ValidationError

    from optim.stages.quantize import quantize_onnx
    from optim.recipe import QuantizeSettings, RecipeError, validation_message

    try:
        qs = QuantizeSettings(precision=precision, target=target, method=method,
                              exclude_nodes=_names(exclude_nodes), exclude_op_types=_names(exclude_op_types),
                              high_precision=high_precision)
    except ValidationError as exc:
        raise RecipeError(validation_message("bad option", exc)) from None
    if max_drop is not None and (qs.precision not in ("int8", "fp8") or qs.target != "tensorrt"):
        raise InputError("--max-drop works on INT8/FP8 models placed for tensorrt")
    r = _recipe(recipe)
    x = None
    if qs.precision in ("int8", "fp8"):
        if calib is None and r is not None:
            from optim.data import prepare

            x, _, ds = prepare(r.calibration.data, r.preprocess, r.input, calib_samples)
        elif calib is None:
            raise InputError(f"{qs.precision} needs calibration data: pass --calib (or --recipe)")
        else:
            x, _, ds = _load_data(calib, onnx_path, r, calib_samples)
        info(f"calibrating with {len(x)} samples from {ds.source}")
    out = output or onnx_path.with_name(f"{onnx_path.name.removesuffix('.onnx').removesuffix('.fp32')}.{qs.tag}.onnx")
    if max_drop is not None:
        from optim.cli.tuning import _tuning_settings, quantize_with_budget

        if max_drop < 0:
            raise InputError("--max-drop must be >= 0 points")
        s = _tuning_settings(metric, tune_samples, max_excluded, min(256, tune_samples))
        if tune_data is not None:
            tx, ty, tds = _load_data(tune_data, onnx_path, r, tune_samples)
        elif r is not None:
            from optim.data import prepare

            tx, ty, tds = prepare((r.tuning and r.tuning.data) or r.calibration.data, r.preprocess,
                                  r.input, tune_samples)
        elif calib is not None:
            tx, ty, tds = _load_data(calib, onnx_path, r, tune_samples)
        else:
            raise InputError("--max-drop needs tuning data: pass --tune-data (or --calib / --recipe)")
        quantize_with_budget(onnx_path, qs, out, x, (tx, ty, s), max_drop)
        return
    rep = quantize_onnx(onnx_path, qs, out, x)
    cov = rep.coverage
    cov_txt = f"; {cov['quantized']}/{cov['eligible']} Conv/Gemm/MatMul quantized" if cov else ""
    info(f"wrote {out} ({rep.tool}{', ' + rep.method if rep.method else ''}{cov_txt}, {rep.seconds:.1f} s)")


@app.command()
def check(
    candidate: Annotated[Path, typer.Argument(help="ONNX model, or TensorRT engine (.plan), to check.")],
    reference: Annotated[Path, typer.Option(help="The FP32 reference ONNX.")],
    data: Annotated[str, typer.Option(help="Evaluation data: .npz/.npy, IDX, image folder, spec .yaml, synthetic:N.")],
    labels: Annotated[Optional[Path], typer.Option(help="Labels .npy/IDX file when the data carries none.")] = None,
    samples: Annotated[Optional[int], typer.Option(help="Use the first N samples.")] = None,
    batch_size: Annotated[int, typer.Option(help="Inference batch size.")] = 256,
    max_top1_drop: Annotated[Optional[float], typer.Option(help="Gate: most top-1 points the candidate may lose.")] = None,
    min_cosine: Annotated[Optional[float], typer.Option(help="Gate: least mean cosine similarity to FP32.")] = None,
    min_top1_agreement: Annotated[Optional[float], typer.Option(help="Gate: least top-1 agreement with FP32, in %.")] = None,
    max_abs_error: Annotated[Optional[float], typer.Option(help="Gate: largest absolute output error.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the result as JSON here.")] = None,
    recipe: RecipeOpt = None,
) -> None:
    """Compare a candidate with the FP32 reference: output deltas, task accuracy, gates."""
    from optim.artifacts import write_json
    from optim.stages.check import check_candidate, raise_on_failures
    from optim.recipe import CheckSettings, Gates

    r = _recipe(recipe)
    fused = None if candidate.suffix in (".plan", ".engine") else _fused_op(candidate)
    if fused is None:
        x, y, ds = _load_data(data, reference, r, samples, labels)
        frames = None
    else:  # the candidate takes raw frames; the reference gets them preprocessed on the host
        frames, x, y, ds = _load_frames(data, fused, samples, labels)
    gates = Gates(max_top1_drop=max_top1_drop, min_cosine=min_cosine,
                  min_top1_agreement=min_top1_agreement, max_abs_error=max_abs_error)
    res = check_candidate(candidate, reference, x, y, CheckSettings(batch_size=batch_size), gates,
                          data=ds.source, candidate_x=frames)
    for name, d in res.outputs.items():
        agree = f", top-1 agreement {d['top1_agreement']:.2f}%" if "top1_agreement" in d else ""
        print(f"{name}: max abs {d['max_abs_error']:.4g}, mean abs {d['mean_abs_error']:.4g}, "
              f"cosine {d['cosine']:.6f} (min {d['min_cosine']:.6f}){agree}")
    if res.accuracy:
        a = res.accuracy
        print(f"task accuracy on {res.samples} labelled samples: top-1 {a['top1']:.2f}% "
              f"({a['top1_delta']:+.2f} pts vs FP32 {a['reference_top1']:.2f}%), top-5 {a['top5']:.2f}% "
              f"({a['top5_delta']:+.2f} pts)")
    print(f"method: {res.method}")
    for g in res.gates:
        print(g.line(res.tag))
    if json_out:
        write_json(json_out, res.as_dict())
    raise_on_failures([res])


@app.command()
def bench(
    models: Annotated[list[Path], typer.Argument(help="ONNX models or TensorRT engines (.plan), measured one after another.")],
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,64",
    warmup: Annotated[int, typer.Option(help="Untimed runs per batch size.")] = 5,
    iterations: Annotated[int, typer.Option(help="Timed runs per batch size.")] = 30,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads (default: all cores).")] = None,
    backend: Annotated[str, typer.Option(help="auto (ONNX: ORT CPU, .plan: TensorRT), ort-cuda, ort-tensorrt.")] = "auto",
    cuda_graph: Annotated[bool, typer.Option(help="Engines: replay a captured CUDA graph.")] = False,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write results as JSON here.")] = None,
) -> None:
    """Latency (median/p90/p99) and throughput per batch size: ORT CPU, TensorRT engines, ORT GPU providers."""
    from optim.artifacts import write_json
    from optim.stages.bench import bench_model
    from optim.recipe import BenchSettings
    from optim.backends.select import BACKENDS, ENGINE_SUFFIXES

    if backend not in BACKENDS:
        raise InputError(f"unknown --backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    s = BenchSettings(batch_sizes=_ints(batch_sizes, "--batch-sizes"), warmup=warmup,
                      iterations=iterations, threads=threads, cuda_graph=cuda_graph)
    results = []
    for m in models:
        if m.suffix in ENGINE_SUFFIXES or backend not in ("auto", "cpu"):
            from optim.stages.bench_gpu import bench_gpu

            results.append(bench_gpu(m, s, backend=backend))
        else:
            results.append(bench_model(m, s))
    base = {}
    print(f"{'model':<36} {'batch':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'samples/s':>10} {'x first':>8}")
    for res in results:
        if res.skipped:
            print(f"{Path(res.model).name:<36} not run: {res.skipped}")
            continue
        for t in res.timings:
            base.setdefault(t.batch, t.throughput)
            print(f"{Path(res.model).name:<36} {t.batch:>5} {t.median_ms:>9.3f} {t.p90_ms:>9.3f} "
                  f"{t.p99_ms:>9.3f} {t.throughput:>10.1f} {t.throughput / base[t.batch]:>8.2f}")
    for res in results:
        print(f"{Path(res.model).name}: {res.method}")
    if json_out:
        write_json(json_out, [r.as_dict() for r in results])


@app.command()
def build(
    onnx_path: Annotated[Path, typer.Argument(metavar="ONNX", help="ONNX model: FP32, INT8/FP8 Q/DQ or FP16/BF16 AutoCast.")],
    target: Annotated[str, typer.Option(help="Target GPU.")] = "h100",
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Engine file (default: beside the ONNX, .TARGET.plan).")] = None,
    precision: Annotated[Optional[str], typer.Option(help="FP32 ONNX only: fp16 or bf16 by builder flag (weakly typed). Other models take theirs from the graph.")] = None,
    batch: Annotated[Optional[str], typer.Option(help="Optimization profile batch sizes min,opt,max (default 1,1,256).")] = None,
    tf32: Annotated[bool, typer.Option(help="Let FP32 layers use TF32 tensor cores.")] = False,
    opt_level: Annotated[int, typer.Option(help="Builder optimization level 0-5.")] = 3,
    workspace_mib: Annotated[Optional[int], typer.Option(help="Workspace memory limit in MiB.")] = None,
    hardware_compat: Annotated[str, typer.Option(help="none (target architecture only) or ampere_plus.")] = "none",
    version_compatible: Annotated[bool, typer.Option(help="An engine later TensorRT versions can load.")] = False,
    plugin: Annotated[Optional[list[Path]], typer.Option(help="Plugin library loaded before parsing (repeatable).")] = None,
    timing_cache: Annotated[Optional[Path], typer.Option(help="Timing cache file (default: timing.cache beside the engine).")] = None,
    recipe: Annotated[Optional[Path], typer.Option("--recipe", help="Take the build settings and batch range from this recipe.")] = None,
) -> None:
    """Build a TensorRT engine (.plan) for the target GPU, with its manifest and per-layer JSON."""
    from pydantic import ValidationError

    from optim.stages.build import engine_from_onnx
    from optim.recipe import BatchRange, BuildSettings, RecipeError, validation_message

    r = _recipe(recipe)
    try:
        if r is not None:
            settings, brange = r.build, r.input.batch
        else:
            settings = BuildSettings(tf32=tf32, optimization_level=opt_level, workspace_mib=workspace_mib,
                                     hardware_compatibility=hardware_compat, version_compatible=version_compatible,
                                     plugins=tuple(p.resolve() for p in plugin or ()))
            b = _ints(batch, "--batch") if batch else (1, 1, 256)
            if len(b) != 3:
                raise InputError(f"--batch takes min,opt,max, got '{batch}'")
            brange = BatchRange(min=b[0], opt=b[1], max=b[2])
    except ValidationError as exc:
        raise RecipeError(validation_message("bad option", exc)) from None
    if precision is not None and precision not in ("fp16", "bf16"):
        raise InputError(f"--precision takes fp16 or bf16 (for an FP32 ONNX), got '{precision}'")
    stem = onnx_path.name.removesuffix(".onnx") + (f".{precision}" if precision else "")
    out = output or onnx_path.with_name(f"{stem}.{target}.plan")
    cache = timing_cache or out.with_name("timing.cache")
    rep = engine_from_onnx(onnx_path, out, settings, target, batch=brange, precision=precision, timing_cache=cache,
                           sample_shape=r.input.shape if r is not None else None)
    m = rep.manifest
    plan, summary = m["plan"], m["layer_summary"]
    typing = "strongly typed" if plan["strongly_typed"] else "builder flags " + "+".join(plan["flags_on"])
    info(escape(f"wrote {out} ({m['bytes'] / 1024:.1f} KB, {rep.seconds:.1f} s): TensorRT {m['tensorrt']} on "
                f"{m['gpu']['name']}, {plan['precision']} {typing}, profile {plan['profile']['min'][0]}/"
                f"{plan['profile']['opt'][0]}/{plan['profile']['max'][0]}"))
    info(escape(f"layers by input precision: {summary.get('by_input_precision')} ({m['layers']}); manifest "
                f"{out.name}.json; timing cache {cache} "
                f"({'reused' if (m['timing_cache'] or {}).get('reused') else 'new'})"))
    for note in rep.notes:
        info(f"[yellow]note[/]: {escape(note)}")


@app.command()
def doctor(
    target: Annotated[str, typer.Option(help="Target GPU to judge the build stage against.")] = "h100",
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """What this machine has, which stages can run here, and the command for each missing piece."""
    from optim import doctor as doc
    from optim.backends.engine_compat import target as get_target
    from optim.machine import probe

    t = get_target(target)
    m = probe()
    print(json.dumps(doc.as_dict(m, t), indent=2) if json_out else doc.render(m, t), end="" if not json_out else "\n")


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A run folder, e.g. artifacts/NAME.")]) -> None:
    """Write report.{md,html,json,png} for a run folder and print the table."""
    from optim.artifacts import MANIFEST, RunDir
    from optim.stages.report import write_report

    paths = write_report(run_dir)
    if (Path(run_dir) / MANIFEST).is_file():  # keep the run's manifest true to the files
        rd = RunDir(run_dir)
        for k, p in paths.items():
            old = rd.manifest.artifacts.get(f"report.{k}")
            rd.record(f"report.{k}", p.name, "report", parents=old.parents if old else [])
    print(paths["md"].read_text())
    info("wrote " + ", ".join(str(p) for p in paths.values()))


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML, e.g. recipes/fashion_resnet.yaml.")],
    force: Annotated[bool, typer.Option(help="Redo every stage, ignoring the cache.")] = False,
    out_root: Annotated[Path, typer.Option(help="Runs go to OUT_ROOT/<recipe name>/.")] = Path("artifacts"),
    weights: Annotated[Optional[Path], typer.Option(help="Trained weights for the recipe's model.")] = None,
    eval_samples: Annotated[Optional[int], typer.Option(help="Evaluate on the first N samples only.")] = None,
    calib_samples: Annotated[Optional[int], typer.Option(help="Calibrate on the first N samples only.")] = None,
    precisions: Annotated[Optional[str], typer.Option(help="Only these entries, e.g. fp32,int8-tensorrt,fp16.")] = None,
    bench_iterations: Annotated[Optional[int], typer.Option(help="Timed runs per batch size.")] = None,
) -> None:
    """Run every stage of a recipe: export, quantize, check, bench, build (TensorRT, where it can), report."""
    from optim.pipeline import Pipeline

    r = _apply_overrides(_recipe(recipe), weights, eval_samples, calib_samples, precisions, bench_iterations)
    Pipeline(r, recipe, out_root=out_root, force=force).run()


def _apply_overrides(r, weights, eval_samples, calib_samples, precisions, bench_iterations):
    upd = {}
    if weights is not None:
        upd["model"] = r.model.model_copy(update={"weights": weights.resolve()})
    if eval_samples is not None:
        upd["evaluation"] = r.evaluation.model_copy(update={"samples": eval_samples})
    if calib_samples is not None:
        upd["calibration"] = r.calibration.model_copy(update={"samples": calib_samples})
    if bench_iterations is not None:
        upd["bench"] = r.bench.model_copy(update={"iterations": bench_iterations})
    if precisions is not None:
        wanted = set(_names(precisions)) | {"fp32"}
        known = {r.settings_for(c).tag for c in r.precisions}
        unknown = wanted - known
        if unknown:
            raise InputError(f"--precisions names {sorted(unknown)}, not in the recipe ({sorted(known)})")
        upd["precisions"] = tuple(c for c in r.precisions if r.settings_for(c).tag in wanted)
    return r.model_copy(update=upd) if upd else r


from optim.cli.plugins import register as _register_plugins  # noqa: E402
from optim.cli.tuning import register as _register_tuning  # noqa: E402

_register_tuning(app, _load_data)
_register_plugins(app)


def main() -> None:
    try:
        app()
    except OptimError as exc:
        if _state["debug"]:
            traceback.print_exc()
            if exc.detail:
                console.print(exc.detail, markup=False)
        console.print(f"[red]error:[/] {escape(str(exc))}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]: nothing half-written was left behind")
        sys.exit(130)
    except Exception as exc:  # a bug in optim or a dependency: one line, unless --debug
        if _state["debug"]:
            traceback.print_exc()
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        console.print(f"[red]internal error:[/] {type(exc).__name__}: {escape(first)} "
                      "(rerun with --debug for the traceback)")
        sys.exit(1)
