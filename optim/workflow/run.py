"""``optim run``: a recipe's stages, in order, through the executor.

Layout of ``artifacts/<recipe name>/`` (every path named by ``optim.runfolder.RunLayout``; run.json is
``optim.runfolder.RunInfo``)::

    model.fp32.onnx  model.<tag>.onnx ...    the deployable models
    export.json  quantize/<tag>.json  tune/<tag>.json  check/<tag>.json  bench/<tag>.json
    model.<tag>.h100.plan (+ .plan.json manifest, .layers.json)   TensorRT engines, where
    gpu/build/<tag>.json  gpu/check/<tag>.json  gpu/bench/<tag>.json  TensorRT and a GPU are
    model.<tag>.nms.onnx                      with decode + NMS in the graph (a detection recipe's nms)
    model.<tag>.rtx.plan (+ .plan.json)  engines/rtx/<name>.json   TensorRT-RTX engines (build.extra_targets),
    model.<tag>.nms.rtx.plan  sizes/<size>/model.<tag>[.nms].rtx.plan   built without a GPU
    sizes/<size>/model.<tag>.onnx  bench/<size>/<tag>.json   at the other input sizes (bench.sizes)
    timing.cache  study/calibration.json  run.json  report.{md,html,json,png}
    manifest.json                             sha256, stage, parents, settings, versions, host

This module only decides which stage gets which inputs and settings; the executor
derives every cache key and records every file. Without TensorRT or a GPU the
H100 engine stages are skipped with one line saying why; TensorRT-RTX engines are built
wherever tensorrt-rtx is installed (``optim.workflow.engines``).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from optim import data as data_mod
from optim.artifacts import Artifact, Data, host_info, sha256_file
from rich.markup import escape

from optim.backends import machine
from optim.backends.engine_compat import build_blocker, target
from optim.console import info, warn
from optim.executor import Executor
from optim.recipe import Recipe
from optim.runlock import RunLock
from optim.settings import DataSpec, QuantizeOptions, QuantizeSettings
from optim.sources import BUNDLED, WEIGHTS_DIR, trained_weights_reason
from optim.backends import cpu, get_backend
from optim.errors import BackendUnavailable, BuildError, ModelError, OptimError, first_line
from optim.stages.quantize import scheme
from optim.workflow.engines import OfflineEngines
from optim.workflow.sizes import Sizes
from optim.runfolder import Entry, RunInfo, RunLayout
from optim.runfolder.info import BatchInfo, GpuInfo, InputInfo
from optim.runfolder.layout import GPU
from optim.stages import bench, build, check, export, fuse, nms, study
from optim.stages.quantize import stage as quantize
from optim.stages.report import stage as report
from optim.stages.tune import stage as tune
from optim.stages.check import CheckResult, raise_on_failures
from optim.tasks import get_task

FP32 = RunLayout.model("fp32")
_CALIB_DEFAULTS = {k: QuantizeOptions.model_fields[k].default for k in ("method", "percentile")}


class Workflow:
    def __init__(self, recipe: Recipe, recipe_path: Path, out_root: Path = Path("artifacts"),
                 force: bool = False, wait: bool = True) -> None:
        self.recipe = recipe
        self.wait = wait
        self.recipe_path = Path(recipe_path)
        self.ex = Executor(Path(out_root) / recipe.name, force=force)
        self.task = get_task(recipe.task)
        self.notes: list[str] = []
        self.families: list[str] = [cpu.PRIMARY]
        self.cpu_not_run: dict[str, str] = {}  # result name (TAG@family) -> why that backend did not run it
        self.sizes = Sizes(self)  # the recipe's other input sizes (bench.sizes)
        self.offline = OfflineEngines(self)  # engines built without a GPU (build.extra_targets: TensorRT-RTX)
        self.nms_files: dict[str, str] = {}  # entry -> its deployable with decode + NMS in the graph
        self._data: dict[str, Data] = {}

    # -- data --------------------------------------------------------------------------------
    def data(self, name: str, spec: DataSpec, samples: int | None) -> Data:
        """Model inputs (and labels, and raw frames when preprocessing is fused) for a data spec."""
        key = f"{name}:{samples}"
        if key in self._data:
            return self._data[key]
        r = self.recipe
        op = r.preprocess_op()
        if op is None:
            x, y, ds = data_mod.prepare(spec, r.preprocess, r.input, samples, self.task)
            frames = None
        else:
            hwc = (*r.fused_preprocess.frame, r.input.shape[0])
            frames, x, y, ds = data_mod.prepare_frames(spec, op, hwc, samples, self.task)
            x = data_mod.validate_inputs(x, r.input, ds.source)
        desc = spec.description or ds.source
        if name == "evaluation" and ds.total is not None:
            desc += f" (first {len(x)} of {ds.total})"
        d = Data.of(f"data/{name}", x, y, frames, desc)
        info(f"{name}: {len(x)} samples from {ds.source}" + ("" if y is not None else " (no labels)"))
        self._data[key] = d
        return d

    def calibration(self) -> Data:
        r = self.recipe
        return self.data("calibration", r.calibration.data, r.calibration.samples)

    def tuning(self) -> Data:
        r = self.recipe
        t = r.tuning
        spec = (t.data if t is not None else None) or r.calibration.data
        return self.data("tuning", spec, t.samples if t is not None else r.calibration.samples)

    # -- stages ------------------------------------------------------------------------------
    def source_artifact(self) -> Artifact | None:
        """The file the FP32 model is made from (weights, or the user's ONNX), hashed into the export key."""
        r = self.recipe
        if r.model.source.startswith("onnx:"):  # the user's own ONNX file: its bytes are part of the key
            return Artifact.of_file(Path(r.model.source.split(":", 1)[1]), "onnx-source", "onnx")
        weights = r.model.weights
        if weights is None and r.model.source.startswith("bundled:"):
            name = r.model.source.split(":", 1)[1]
            if name in BUNDLED:
                weights = WEIGHTS_DIR / BUNDLED[name][1]
        return Artifact.of_file(weights, "weights", "weights") if weights and Path(weights).is_file() else None

    def export_settings(self) -> export.Settings:
        r = self.recipe
        return export.Settings(source=r.model.source, kwargs=r.model.kwargs, input=r.input, export=r.export,
                               weights=str(r.model.weights) if r.model.weights else None)

    def export(self) -> Artifact:
        inputs = [a for a in (self.source_artifact(),) if a is not None]
        return self.ex.step(export, "fp32", FP32, inputs, self.export_settings(), tag="fp32")

    def budgeted(self, qs: QuantizeSettings) -> bool:
        r = self.recipe
        return qs.tag in r.tuned_tags() and r.tuning.budget_for(qs.tag) is not None

    def quantize(self, qs: QuantizeSettings, fp32: Artifact) -> Artifact:
        tag = Entry.of(qs, budget=not self.budgeted(qs)).tag
        calibrated = qs.precision in ("int8", "fp8")
        qs = scheme.resolve(qs)  # onnxruntime INT8: the format this CPU's integer kernels compute exactly
        if not calibrated:  # calibration options do not apply: keep them out of the key
            qs = qs.model_copy(update=_CALIB_DEFAULTS)
        else:
            qs = self.task_exclusions(qs, fp32)
        if qs.int8_scheme is not None:
            info(f"{qs.tag}: {qs.int8_scheme.label()}: {qs.int8_scheme.reason}")
        inputs = [fp32, self.calibration()] if calibrated else [fp32]
        return self.ex.step(quantize, tag, RunLayout.model(tag), inputs, qs, tag=tag)

    def task_exclusions(self, qs: QuantizeSettings, fp32: Artifact) -> QuantizeSettings:
        """The task's output-head nodes kept in high precision (``quantize.keep_head``, default: the task's)."""
        qs, head = self.task.keep_head(qs, fp32.path)
        if head.note:
            warn(f"{qs.tag}: keep_head: {head.note}")
            note = f"{qs.tag}: keep_head: {head.note}."
            if note not in self.notes:
                self.notes.append(note)
        return qs

    def tune(self, qs: QuantizeSettings, raw: Artifact, fp32: Artifact) -> Artifact | None:
        """Sensitivity (+ budget) for one entry; the budgeted model, or None without a budget."""
        t = self.recipe.tuning
        budget = self.budgeted(qs)
        # the budget holds on every CPU backend of the run; a ranking alone runs on ONNX Runtime
        s = tune.Settings(task=self.task.name, samples=t.samples, sensitivity=t.sensitivity,
                          sensitivity_samples=t.sensitivity_samples, max_drop=t.budget_for(qs.tag),
                          metric=t.metric, max_excluded=t.max_excluded,
                          backends=tuple(self.families) if budget else (cpu.PRIMARY,))
        rel = RunLayout.model(qs.tag) if budget else RunLayout.tune(qs.tag)
        name = qs.tag if budget else RunLayout.record_name(rel)
        out = self.ex.step(tune, name, rel, [raw, fp32, self.tuning()], s, tag=qs.tag,
                           kind="onnx" if budget else "result")
        return out if budget else None

    def study(self, fp32: Artifact) -> None:
        r = self.recipe
        if r.calibration_study is None:
            return
        # the study sets the calibration method itself: the recipe's is not part of its key
        opts = r.quantize.model_copy(update=_CALIB_DEFAULTS)
        if r.calibration_study.target == "onnxruntime":  # the INT8 format this CPU class gets, in the key
            opts = opts.model_copy(update={"ort_int8": scheme.ort_int8_scheme(choice=opts.ort_int8).format})
        s = study.Settings(task=self.task.name, study=r.calibration_study, quantize=opts)
        self.ex.step(study, RunLayout.record_name(RunLayout.STUDY), RunLayout.STUDY,
                     [fp32, self.calibration(), self.tuning()], s, kind="result")

    def with_nms(self, model: Artifact, evaluation: Data) -> Artifact:
        """The entry with decode + NMS in its graph (a deployable beside the raw-output model, which
        the checks and benches use), verified against optim's decode on evaluation images."""
        rel = RunLayout.variant(model.path.name, "nms")
        return self.ex.step(nms, f"{model.name}.nms", rel, [model, evaluation.head(nms.CHECK_IMAGES)],
                            self.recipe.nms, tag=model.tag)

    def fuse(self, model: Artifact) -> Artifact:
        r = self.recipe
        s = fuse.Settings.of(r.preprocess_op(), r.fused_preprocess.frame)
        rel = RunLayout.variant(model.path.name, "frames")
        return self.ex.step(fuse, f"{model.name}.frames", rel, [model], s, tag=model.tag)

    def check_settings(self, tag: str) -> check.Settings:
        r = self.recipe
        # the un-budgeted model is shown for comparison, not deployed: it is not gated
        gates = r.gates_for(tag) if not Entry.parse(tag).comparison else None
        random = trained_weights_reason(r.model.source, r.model.weights) is not None
        return check.settings_for(self.task.name, gates, batch_size=r.check.batch_size, threads=r.check.threads,
                                  warnings=("random weights",) if random else ())

    def cpu_families(self) -> list[str]:
        """The CPU backends of this run: the recipe's ``backends``, else every one installed here."""
        have = cpu.installed()
        wanted = list(self.recipe.backends) if self.recipe.backends is not None else have
        for f in wanted:
            if f not in have:
                backend = get_backend(f)
                why = f"{backend.package or f} is not installed here ({backend.install or 'pip install ' + f})"
                self.ex.skip(f"check and bench on {f}", "", why)
                self.notes.append(f"CPU backend {f}: not run: {why}.")
        return [f for f in wanted if f in have]

    def check(self, model: Artifact, fp32: Artifact, evaluation: Data, prefix: str = "",
              family: str = cpu.PRIMARY) -> CheckResult | None:
        """One entry checked on one backend; None (and the reason kept) where a secondary CPU
        backend cannot run the file."""
        tag, name = model.tag, cpu.result_name(model.tag, family)
        src, backend = cpu.route(family, tag, model, fp32)
        s = self.check_settings(tag).model_copy(update={"backend": backend})
        rel = RunLayout.check(tag if prefix else name, gpu=bool(prefix))
        try:
            a = self.ex.step(check, RunLayout.record_name(rel), rel, [src, fp32, evaluation],
                             s, kind="result", tag=tag)
        except (BackendUnavailable, ModelError) as exc:
            if family == cpu.PRIMARY or prefix:
                raise
            self.cpu_not_run[name] = first_line(exc)
            self.ex.skip("check", name, escape(first_line(exc)))
            return None
        res = CheckResult.load(a.path)
        res.tag = name  # a failed gate names the backend too (the file keeps the entry's tag)
        gate_txt = "" if not res.gates else ("; gates passed" if res.passed else "; [red]GATE FAILED[/]")
        info(f"  {'engine ' if prefix else ''}{name}: {res.summary()}{gate_txt}")
        return res

    def bench_all(self, models: dict[str, Artifact], fp32: Artifact, families: list[str]) -> None:
        """CPU benches of every entry on every CPU backend, measured together: if one must be
        measured again, all are, so that the report never compares timings taken at different times."""
        jobs = []
        main = self.recipe.bench.at_recipe_size()  # the other sizes: sizes.Sizes.bench
        for family in families:
            for t, model in models.items():
                name = cpu.result_name(t, family)
                if name in self.cpu_not_run:
                    continue
                src, backend = cpu.route(family, t, model, fp32)
                s = main if family == cpu.PRIMARY else bench.Settings(**main.model_dump(), backend=backend)
                jobs.append((name, src, s, t))
        stale = [n for n, src, s, _ in jobs
                 if self.ex.cached(bench, RunLayout.record_name(RunLayout.bench(n)), [src], s) is None]
        if stale and len(stale) < len(jobs) and not self.ex.force:
            info(f"bench: {', '.join(stale)} changed; measuring every entry again, side by side")
        for name, src, s, t in jobs:
            rel = RunLayout.bench(name)
            self.ex.step(bench, RunLayout.record_name(rel), rel, [src], s, kind="result", tag=t,
                         force=bool(stale))

    # -- TensorRT engines: build, check and bench each, or say once why not -----------------
    def build_settings(self, precision: str | None, shape: tuple[int, ...] | None = None) -> build.Settings:
        """The recipe's build settings, plus optim's own TensorRT plugin when models carry its op
        (``shape``: one sample's input shape, when not the recipe's: an engine at a ``bench.sizes`` size)."""
        r = self.recipe
        s = r.build
        shape = tuple(shape or r.input.shape)
        if r.fused_preprocess is not None:
            from optim.ops.plugins import LIBRARIES, find

            lib = find("tensorrt")
            if lib is None:
                raise BuildError(f"the models take frames through OptimPreprocess, but {LIBRARIES['tensorrt'][0]} "
                                 "is not built: TENSORRT_ROOT=/path/to/TensorRT bash scripts/build_plugins.sh")
            s = s.model_copy(update={"plugins": (*s.plugins, lib)})
            shape = (*r.fused_preprocess.frame, r.input.shape[0])
        s = s.model_copy(update={"extra_targets": ()})  # which targets are built is not an engine's setting
        return build.Settings(build=s, precision=precision, batch=r.input.batch, target=r.target_gpu,
                              sample_shape=shape)

    def not_built_reason(self, tag: str) -> str:
        """Why an entry gets no TensorRT engine (it is not in ``Recipe.build_tags``)."""
        e = Entry.parse(tag)
        if e.comparison:  # first: an onnxruntime entry's -nobudget model is named as the comparison it is
            return "the entry without its budget is a comparison, not a deployable"
        if e.cpu_placed:
            return ("placed for ONNX Runtime on CPU: TensorRT's parser refuses its int32-bias Q/DQ, so no builder "
                    "is given this file")
        return "not in build.precisions"


    def engines(self, models: dict[str, Artifact], fp32: Artifact, evaluation: Data,
                sized: dict[str, dict[str, Artifact]] | None = None) -> tuple[list[CheckResult], dict[str, str], list[str]]:
        """Build, check and bench an engine per entry where TensorRT and a GPU are; else say why, once."""
        r = self.recipe
        wanted = r.build_tags()
        not_run = {t: self.not_built_reason(t) for t in models if t not in wanted}
        here = machine.probe()
        why = build_blocker(here, target(r.target_gpu), r.build.hardware_compatibility)
        if why:
            self.ex.skip("build (TensorRT engines) and GPU bench", "", escape(why))
            self.notes.append(f"TensorRT build and GPU bench: not run: {why}.")
            return [], {**not_run, **{t: why for t in wanted}}, []
        results, failures = [], []
        for t in wanted:
            src, precision = models[t], None
            if t in ("fp16", "bf16") and r.build.fp16_bf16 == "builder_flags":
                src, precision = models["fp32"], t
            name = Entry.parse(t).engine_name(r.target_gpu)
            try:
                s = self.build_settings(precision)
                plugins = [Artifact.of_file(p, f"plugin:{p.name}", "plugin") for p in s.build.plugins if p.is_file()]
                src = dataclasses.replace(src, tag=t)
                engine = self.ex.step(build, name, RunLayout.model(t, engine=r.target_gpu), [src, *plugins], s,
                                      kind="engine", tag=t)
            except OptimError as exc:
                info(f"[red]failed[/] build {name}: {escape(str(exc))}")
                not_run[t] = f"build failed: {exc}"
                failures.append(f"build {name} failed: {exc}")
                continue
            results.append(self.check(engine, fp32, evaluation, prefix=GPU))
            rel = RunLayout.bench(t, gpu=True)
            self.ex.step(bench, RunLayout.record_name(rel), rel, [engine],
                         r.bench.at_recipe_size(), kind="result", tag=t)
            failures += self.sizes.engines(t, precision, (sized or {}), not_run)
        gpu = here.gpu
        self.notes.append(f"GPU columns: TensorRT {here.tensorrt} engines for {target(r.target_gpu).name}, checked "
                        f"against the ONNX Runtime CPU FP32 reference and timed on {gpu.name} ({gpu.sm}) with "
                        "CUDA events (device time, input already on the GPU).")
        return results, not_run, failures

    # -- the whole run -----------------------------------------------------------------------
    def run(self) -> dict[str, Path]:
        """Every stage, holding the run folder's lock (one writer; see ``optim.runlock``)."""
        self.t0 = time.perf_counter()
        with RunLock(self.ex.root, wait=self.wait) as lock:
            self.ex = Executor(self.ex.root, force=self.ex.force)  # the manifest as the lock found it
            if lock.note:
                info(lock.note)
                self.notes.append(lock.note)
            return self._run()

    def _run(self) -> dict[str, Path]:
        r = self.recipe
        manifest = self.ex.rd.manifest
        manifest.recipe, manifest.recipe_sha256 = str(self.recipe_path), sha256_file(self.recipe_path)
        manifest.target_gpu = f"{r.target_gpu} ({target(r.target_gpu).sm})"
        info(f"[bold]optim run[/] {r.name} -> {self.ex.root}")
        fp32 = self.export()
        models = {"fp32": fp32}
        self.families = self.cpu_families()  # the budget scores each variant on every one of them
        tuned = set(r.tuned_tags())
        for qs in (r.settings_for(c) for c in r.precisions if c.precision != "fp32"):
            raw = self.quantize(qs, fp32)
            models[raw.tag] = raw
            if qs.tag in tuned:
                out = self.tune(qs, raw, fp32)
                if out is not None:
                    models[qs.tag] = out
        if any(c.precision in ("int8", "fp8") for c in r.precisions):
            self.study(fp32)
        if r.fused_preprocess is not None:  # every deployable takes raw frames
            models = {t: self.fuse(a) for t, a in models.items()}
            info(f"fused preprocessing: every model takes uint8 frames "
                 f"{list(r.fused_preprocess.frame) + [r.input.shape[0]]} (NHWC) through OptimPreprocess")
        evaluation = self.data("evaluation", r.evaluation.data, r.evaluation.samples)
        nms_models: dict[str, Artifact] = {}
        if r.nms:
            nms_models = {t: self.with_nms(a, evaluation) for t, a in models.items()}
            self.nms_files = {t: a.path.name for t, a in nms_models.items()}
            self.notes.append(f"Deployables with decode + NMS in the graph (max_det {r.nms.max_det}, conf {r.nms.conf:g}, "
                              f"iou {r.nms.iou:g}; outputs num_dets, det_boxes, det_scores, det_classes): "
                              f"{', '.join(self.nms_files.values())}; each gave optim's own decode + NMS, box for box, "
                              f"on the first {nms.CHECK_IMAGES} evaluation images. The table scores the raw-output files.")
        results = [res for f in self.families for a in models.values()
                   if (res := self.check(a, fp32, evaluation, family=f)) is not None]
        self.bench_all(models, fp32, self.families)
        sized = self.sizes.bench(models, fp32, self.families)
        gpu_results, gpu_not_run, build_failures = self.engines(models, fp32, evaluation, sized)
        build_failures += self.offline.build_all(models, nms_models, sized, evaluation)
        self.notes.append(f"CPU timings ({', '.join(self.families)}) are measured side by side in one run on "
                          "this host's CPU; they do not predict TensorRT/GPU speed. INT8/FP8 files placed for "
                          "TensorRT run slower than FP32 in ONNX Runtime on a CPU by design.")
        paths = self.report(models, evaluation, gpu_not_run)
        raise_on_failures(results + gpu_results, strict=r.check.strict)
        if build_failures:
            more = f" (+{len(build_failures) - 1} more)" if len(build_failures) > 1 else ""
            raise BuildError(build_failures[0] + more)
        return paths

    def report(self, models: dict[str, Artifact], evaluation: Data,
               gpu_not_run: dict[str, str]) -> dict[str, Path]:
        r = self.recipe
        reason = trained_weights_reason(r.model.source, r.model.weights)
        if reason is None and evaluation.labels is None:
            reason = "the evaluation data has no labels: only fidelity to FP32 was measured"
        files = {t: a.path.name for t, a in models.items()}
        RunInfo(
            recipe=r.name, description=r.description, task=r.task, tags=list(files), files=files,
            accuracy_meaningful=reason is None, accuracy_reason=reason or "",
            notes=self.notes, host=host_info(), tools=self.ex.versions,
            gpu=GpuInfo(target=r.target_gpu, not_run=gpu_not_run),
            backends=self.families, cpu_not_run=self.cpu_not_run,
            sizes=[z.label for z in r.bench.sizes], size_not_run=self.sizes.not_run,
            nms_files=self.nms_files, nms=r.nms.model_dump() if r.nms else None,
            engines=self.offline.cells,
            generated=time.strftime("%Y-%m-%dT%H:%M:%S%z"), manifest=RunLayout.MANIFEST,
            batch=BatchInfo(**r.input.batch.model_dump()),
            input=InputInfo(name=r.input.name, shape=tuple(r.input.shape)),
        ).save(self.ex.rd.path(RunLayout.RUN_JSON))
        self.ex.rd.record("run", RunLayout.RUN_JSON, "run", kind="result")
        md = RunLayout.report("md")
        self.ex.step(report, md, md, list(models.values()), None, kind="report", cache=False)
        self.ex.rd.manifest.notes = self.notes
        self.ex.rd.save()
        run_info, rows = report.collect(self.ex.root)
        print("\n".join(report.summary_lines(run_info, rows)))  # the full table is in the files
        paths = {k: self.ex.rd.path(RunLayout.report(k)) for k in ("md", "html", "png", "sensitivity.png", "json")
                 if self.ex.rd.path(RunLayout.report(k)).is_file()}
        for p in paths.values():
            print(f"wrote {p}")
        print(f"optim run {r.name}: {time.perf_counter() - self.t0:.0f} s in all")
        return paths
