"""``optim run``: every stage of a recipe, cached by content hashes.

Layout of ``artifacts/<recipe name>/``::

    model.fp32.onnx  model.<tag>.onnx ...    the deployable models
    export.json  quantize/<tag>.json  check/<tag>.json  bench/<tag>.json
    model.<tag>.h100.plan (+ .plan.json manifest, .layers.json)   TensorRT engines, where
    gpu/build/<tag>.json  gpu/check/<tag>.json  gpu/bench/<tag>.json  TensorRT and a GPU are
    timing.cache                              TensorRT timing cache, reused by later builds
    run.json                                  what the report needs to know about the run
    report.{md,html,json,png}
    manifest.json                             sha256, stage, parents, settings, versions, host

A stage's cache key hashes its inputs' sha256, its settings and the tool
versions; if the manifest holds an intact artifact with the same key, the stage
is skipped and the console says "cached". Without TensorRT or a GPU, the build and
GPU bench stages are skipped with one line saying why, and the report says "not run".
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from optim import data as data_mod
from optim import machine
from optim.artifacts import RunDir, host_info, sha256_array, sha256_file, sha256_json, tool_versions, write_json
from optim.stages.bench import bench_model
from optim.stages.check import CheckResult, apply_gates, output_deltas, raise_on_failures, run_model, topk_accuracy
from optim.console import console, info, skipped
from optim.backends.engine_compat import target
from optim.pipeline_engines import FP32, GPU, EngineStages
from optim.pipeline_tuning import NOBUDGET, TuningStages
from optim.recipe import Gates, QuantizeSettings, Recipe
from optim.stages.report import write_report
from optim.sources import BUNDLED, WEIGHTS_DIR, trained_weights_reason


class Pipeline(EngineStages, TuningStages):
    def __init__(self, recipe: Recipe, recipe_path: Path, out_root: Path = Path("artifacts"),
                 force: bool = False) -> None:
        self.recipe = recipe
        self.recipe_path = Path(recipe_path)
        self.rd = RunDir(Path(out_root) / recipe.name)
        self.force = force
        self.versions = tool_versions()
        self.notes: list[str] = []
        self._ref: tuple[dict[str, np.ndarray], str] | None = None

    # -- caching -----------------------------------------------------------------------------
    def _key(self, stage: str, key_parts: dict[str, Any]) -> str:
        return sha256_json({"stage": stage, **key_parts, "optim": self.versions.get("optim")})

    def _stage(self, name: str, rel: str, stage: str, key_parts: dict[str, Any],
               make: Callable[[Path], dict[str, Any] | None], parents: list[str],
               force: bool = False) -> str:
        """Run ``make(path)`` unless an intact artifact with the same key exists; return its sha."""
        key = self._key(stage, key_parts)
        rec = None if self.force or force else self.rd.cached(name, key)
        if rec is not None:
            info(f"[dim]cached[/] {stage} {name} ({rel})")
            return rec.sha256
        t0 = time.perf_counter()
        settings = make(self.rd.path(rel)) or {}
        rec = self.rd.record(name, rel, stage, parents=parents, settings=settings, key=key,
                             seconds=time.perf_counter() - t0)
        info(f"[green]done[/] {stage} {name} ({rel}, {time.perf_counter() - t0:.1f} s)")
        return rec.sha256

    # -- data --------------------------------------------------------------------------------
    _frames: np.ndarray | None = None  # evaluation frames, when preprocessing is fused

    def prepare(self, spec, samples: int | None):
        """(model inputs, labels, data set, raw frames or None) for a data spec.

        With ``fused_preprocess`` the images must be raw uint8 frames of the recipe's frame
        size; the model inputs are those frames preprocessed by the op's own arithmetic."""
        r = self.recipe
        op = r.preprocess_op()
        if op is None:
            x, y, ds = data_mod.prepare(spec, r.preprocess, r.input, samples)
            return x, y, ds, None
        from optim.ops.preprocess import as_frames, reference

        ds = data_mod.load_dataset(spec, r.input.shape).head(samples)
        frames = as_frames(ds.images, (*r.fused_preprocess.frame, r.input.shape[0]), ds.source)
        x = data_mod.validate_inputs(reference(frames, op).astype(np.float32), r.input, ds.source)
        return x, ds.labels, ds, frames

    def fuse(self, tag: str, rel: str, sha: str) -> tuple[str, str]:
        """``model.<tag>.frames.onnx``: the model behind the OptimPreprocess op."""
        from optim.onnx_tools import load_onnx, save_onnx
        from optim.ops.preprocess import prepend

        r = self.recipe
        op = r.preprocess_op()
        out = rel.removesuffix(".onnx") + ".frames.onnx"
        key = {"model": sha, "op": op.attributes(), "frame": list(r.fused_preprocess.frame)}

        def make(path: Path) -> dict[str, Any]:
            save_onnx(prepend(load_onnx(self.rd.path(rel)), op, r.fused_preprocess.frame), path)
            return {"op": op.attributes(), "frame": list(r.fused_preprocess.frame)}

        return out, self._stage(f"{tag}.frames", out, "fuse", key, make, parents=[tag])

    # -- stages ------------------------------------------------------------------------------
    def export(self) -> str:
        r = self.recipe
        weights = r.model.weights
        if weights is None and r.model.source.startswith("bundled:"):
            name = r.model.source.split(":", 1)[1]
            if name in BUNDLED:
                weights = WEIGHTS_DIR / BUNDLED[name][1]
        wsha = sha256_file(weights) if weights and Path(weights).is_file() else str(weights)
        key = {"source": r.model.source, "weights": wsha, "kwargs": r.model.kwargs,
               "input": r.input.model_dump(mode="json"), "settings": r.export.model_dump(mode="json"),
               "torch": self.versions.get("torch"), "onnx": self.versions.get("onnx")}

        def make(path: Path) -> dict[str, Any]:
            from optim.stages.export import onnx_from_torch
            from optim.sources import load_model

            model = load_model(r.model.source, r.model.weights, **r.model.kwargs)
            rep = onnx_from_torch(model, r.input, r.export, path)
            info(f"export verified vs PyTorch at batches {rep.verify_batches}: max abs error "
                 f"{rep.max_abs_error:.3g}, max rel error {rep.max_rel_error:.3g}")
            write_json(self.rd.path("export.json"), {**rep.as_dict(), "path": FP32})
            self.rd.record("export", "export.json", "export", parents=["fp32"])
            return {**r.export.model_dump(mode="json"), "source": r.model.source,
                    "weights": str(r.model.weights or weights)}

        return self._stage("fp32", FP32, "export", key, make, parents=[])

    def quantize(self, qs: QuantizeSettings, fp32_sha: str, calib: np.ndarray, calib_hash: str,
                 tag: str = "") -> str:
        tag = tag or qs.tag
        rel = f"model.{tag}.onnx"
        needs_calib = qs.precision in ("int8", "fp8")
        key = {"parent": fp32_sha, "settings": qs.model_dump(mode="json"),
               "calib": calib_hash if needs_calib else None,
               "tools": [self.versions.get(k) for k in ("nvidia-modelopt", "onnxruntime", "onnx")]}

        def make(path: Path) -> dict[str, Any]:
            from optim.stages.quantize import quantize_onnx

            with console.status(f"quantize {qs.tag} ..."):
                rep = quantize_onnx(self.rd.path(FP32), qs, path, calib if needs_calib else None)
            rep.path = rel
            if rep.coverage:
                cov = rep.coverage
                info(f"{tag}: {cov['quantized']}/{cov['eligible']} Conv/Gemm/MatMul nodes quantized "
                     f"({', '.join(cov['qdq_dtypes'])})")
            write_json(self.rd.path(f"quantize/{tag}.json"), rep.as_dict())
            self.rd.record(f"quantize/{tag}", f"quantize/{tag}.json", "quantize", parents=[tag])
            return qs.model_dump(mode="json")

        return self._stage(tag, rel, "quantize", key, make, parents=["fp32"])

    def reference(self, x: np.ndarray) -> tuple[dict[str, np.ndarray], str]:
        if self._ref is None:
            self._ref = run_model(self.rd.path(FP32), x, self.recipe.check, "reference fp32")
        return self._ref

    def check(self, tag: str, rel: str, sha: str, fp32_sha: str, x: np.ndarray,
              labels: np.ndarray | None, eval_hash: str, data_desc: str, prefix: str = "") -> CheckResult:
        r = self.recipe
        # the un-budgeted model is shown for comparison, not deployed: it is not gated
        gates = Gates() if tag.endswith(NOBUDGET) else r.gates_for(tag)
        out = f"{prefix}check/{tag}.json"
        frames = self._frames
        key = {"candidate": sha, "reference": fp32_sha, "eval": eval_hash, "frames": sha256_array(frames),
               "labels": sha256_array(labels), "settings": r.check.model_dump(mode="json"),
               "gates": gates.model_dump(mode="json"), "ort": self.versions.get("onnxruntime")}

        def make(path: Path) -> dict[str, Any]:
            from optim.stages.check import check_candidate

            ref = self.reference(x)
            if tag == "fp32" and not prefix and frames is None:
                res = CheckResult("fp32", rel, rel, len(x), ref[1], ref[1],
                                  {k: output_deltas(v, v) for k, v in ref[0].items()}, data=data_desc)
                if labels is not None:
                    acc = topk_accuracy(next(iter(ref[0].values())), labels)
                    res.accuracy = {**acc, "reference_top1": acc["top1"], "reference_top5": acc["top5"],
                                    "top1_delta": 0.0, "top5_delta": 0.0}
                res.gates = apply_gates(res, gates)
            else:
                res = check_candidate(self.rd.path(rel), self.rd.path(FP32), x, labels, r.check, gates,
                                      tag=tag, ref_outputs=ref, data=data_desc, candidate_x=frames)
                res.candidate, res.reference = rel, FP32
            write_json(path, res.as_dict())
            return {"gates": gates.model_dump(mode="json"), **r.check.model_dump(mode="json")}

        self._stage(f"{prefix}check/{tag}", out, "check", key, make,
                    parents=[self._engine_name(tag) if prefix else tag, "fp32"])
        res = CheckResult.from_dict(json.loads(self.rd.path(out).read_text()))
        self._say_check(res, "engine " if prefix else "")
        return res

    @staticmethod
    def _say_check(res: CheckResult, what: str = "") -> None:
        first = next(iter(res.outputs.values()))
        acc = res.accuracy
        acc_txt = (f"top-1 {acc['top1']:.2f}% ({acc['top1_delta']:+.2f} pts)" if acc else "no labels")
        agree = first.get("top1_agreement")
        gate_txt = "" if not res.gates else ("; gates passed" if res.passed else "; [red]GATE FAILED[/]")
        info(f"  {what}{res.tag}: {acc_txt}, cosine {first['cosine']:.5f}"
             + (f", top-1 agreement {agree:.2f}%" if agree is not None else "") + gate_txt)

    def _bench_key(self, sha: str, gpu: machine.Gpu | None = None) -> dict[str, Any]:
        return {"model": sha, "settings": self.recipe.bench.model_dump(mode="json"), "host": host_info(),
                "ort": self.versions.get("onnxruntime"), "gpu": [gpu.name, gpu.sm] if gpu else None}

    def bench_all(self, files: dict[str, str], shas: dict[str, str]) -> None:
        """CPU benches of every entry, measured together: if one must be measured again, all are,
        so that the report never compares timings taken at different times."""
        stale = [t for t in files
                 if self.rd.cached(f"bench/{t}", self._key("bench", self._bench_key(shas[t]))) is None]
        if stale and len(stale) < len(files) and not self.force:
            info(f"bench: {', '.join(stale)} changed; measuring every entry again, side by side")
        for t in files:
            self.bench(t, files[t], shas[t], force=bool(stale))

    def bench(self, tag: str, rel: str, sha: str, gpu: machine.Gpu | None = None, force: bool = False) -> None:
        s = self.recipe.bench
        prefix = GPU if gpu else ""
        key = self._bench_key(sha, gpu)

        def make(path: Path) -> dict[str, Any]:
            if gpu:
                from optim.stages.bench_gpu import bench_gpu

                res = bench_gpu(self.rd.path(rel), s, tag=tag)
            else:
                res = bench_model(self.rd.path(rel), s, tag=tag)
            res.model = rel
            if res.skipped:
                skipped(f"bench {tag}", res.skipped)
            else:
                info("  " + ", ".join(f"b{t.batch}: p50 {t.median_ms:.2f} ms, {t.throughput:.1f}/s"
                                      for t in res.timings))
            write_json(path, res.as_dict())
            return s.model_dump(mode="json")

        self._stage(f"{prefix}bench/{tag}", f"{prefix}bench/{tag}.json", "bench", key, make,
                    parents=[self._engine_name(tag) if gpu else tag], force=force)

    # -- the whole run -----------------------------------------------------------------------
    def run(self) -> dict[str, Path]:
        r = self.recipe
        m = self.rd.manifest
        m.recipe, m.recipe_sha256 = str(self.recipe_path), sha256_file(self.recipe_path)
        m.target_gpu = f"{r.target_gpu} ({target(r.target_gpu).sm})"
        info(f"[bold]optim run[/] {r.name} -> {self.rd.root}")
        fp32_sha = self.export()

        settings = [r.settings_for(c) for c in r.precisions]
        quantized = [s for s in settings if s.precision != "fp32"]
        calib = calib_hash = None
        if any(s.precision in ("int8", "fp8") for s in quantized):
            calib, _, cds, _ = self.prepare(r.calibration.data, r.calibration.samples)
            calib_hash = sha256_array(calib)
            info(f"calibration: {len(calib)} samples from {cds.source}")
        x, labels, eds, self._frames = self.prepare(r.evaluation.data, r.evaluation.samples)
        eval_hash = sha256_array(x)
        eval_desc = r.evaluation.data.description or eds.source
        if eds.total is not None:
            eval_desc += f" (first {len(x)} of {eds.total})"
        info(f"evaluation: {len(x)} samples from {eds.source}"
             + ("" if labels is not None else " (no labels: fidelity to FP32 only)"))

        files = {"fp32": FP32}
        shas = {"fp32": fp32_sha}
        tuned = set(r.tuned_tags())
        for qs in quantized:
            raw = self.raw_tag(qs)
            shas[raw] = self.quantize(qs, fp32_sha, calib, calib_hash, tag=raw)
            files[raw] = f"model.{raw}.onnx"
            if qs.tag in tuned:
                sha = self.tune(qs, shas[raw], fp32_sha)
                if sha is not None:
                    shas[qs.tag], files[qs.tag] = sha, f"model.{qs.tag}.onnx"
        self.study(fp32_sha, calib, calib_hash, x, labels)
        if r.fused_preprocess is not None:  # every deployable takes raw frames
            for t in list(files):
                files[t], shas[t] = self.fuse(t, files[t], shas[t])
            info(f"fused preprocessing: every model takes uint8 frames "
                 f"{list(r.fused_preprocess.frame) + [r.input.shape[0]]} (NHWC) through OptimPreprocess")

        results = [self.check(t, files[t], shas[t], fp32_sha, x, labels, eval_hash, eval_desc)
                   for t in files]
        self.bench_all(files, shas)
        gpu_results, gpu_not_run, build_failures = self.engines(
            files, shas, (fp32_sha, x, labels, eval_hash, eval_desc))

        self.notes.append("Timings are ONNX Runtime on this host's CPU, measured side by side in one "
                          "run; they do not predict TensorRT/GPU speed. INT8/FP8 files placed for "
                          "TensorRT run slower than FP32 in ORT CPU by design.")
        reason = trained_weights_reason(r.model.source, r.model.weights)
        if reason is None and labels is None:
            reason = "the evaluation data has no labels: only fidelity to FP32 was measured"
        fp32_check = results[0]
        run_info = {
            "recipe": r.name, "description": r.description, "tags": list(files), "files": files,
            "accuracy_meaningful": reason is None, "accuracy_reason": reason or "",
            "reference_method": fp32_check.method, "reference_accuracy": fp32_check.accuracy,
            "notes": self.notes, "host": host_info(), "tools": self.versions,
            "gpu": {"target": r.target_gpu, "not_run": gpu_not_run},
            "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "manifest": "manifest.json",
        }
        write_json(self.rd.path("run.json"), run_info)
        self.rd.record("run", "run.json", "run")
        paths = write_report(self.rd.root)
        for k, p in paths.items():
            self.rd.record(f"report.{k}", p.name, "report", parents=list(files))
        m.notes = self.notes
        self.rd.save()
        info(f"report: {paths['md']}")
        print(paths["md"].read_text())
        raise_on_failures(results + gpu_results)
        if build_failures:
            from optim.errors import BuildError

            more = f" (+{len(build_failures) - 1} more)" if len(build_failures) > 1 else ""
            raise BuildError(build_failures[0] + more)
        return paths
