"""The TensorRT stages of ``optim run``: build, check and bench an engine per entry, or say why not.

A mixin of ``optim.pipeline.Pipeline`` (it uses its run folder, stage cache, check
and bench). Where TensorRT or a suitable GPU is missing, one line says why and the
run records the reason for every entry, which the report shows as "not run".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape

from optim import machine
from optim.artifacts import sha256_file, write_json
from optim.stages.check import CheckResult
from optim.console import console, info, skipped
from optim.backends.engine_compat import build_blocker, target
from optim.errors import OptimError

GPU = "gpu/"
FP32 = "model.fp32.onnx"


class EngineStages:
    """Needs the host's ``recipe``, ``rd``, ``notes``, ``_stage``, ``check`` and ``bench``."""

    def _engine_name(self, tag: str) -> str:
        return f"{tag}.{self.recipe.target_gpu}"

    def build(self, tag: str, src_rel: str, src_sha: str, precision: str | None,
              m: machine.Machine) -> tuple[str, str]:
        r = self.recipe
        name = self._engine_name(tag)
        rel = f"model.{name}.plan"
        settings = self._build_settings()
        key = {"onnx": src_sha, "precision": precision, "settings": settings.model_dump(mode="json"),
               "batch": r.input.batch.model_dump(), "target": r.target_gpu, "tensorrt": m.tensorrt,
               "gpu": [m.gpu.name, m.gpu.sm] if m.gpu else None,
               "plugins": [sha256_file(p) for p in settings.plugins if Path(p).is_file()]}

        def make(path: Path) -> dict[str, Any]:
            from optim.stages.build import engine_from_onnx

            with console.status(f"build {name} engine ..."):
                rep = engine_from_onnx(self.rd.path(src_rel), path, settings, r.target_gpu, batch=r.input.batch,
                                       sample_shape=self._sample_shape(), precision=precision,
                                       timing_cache=self.rd.path("timing.cache"))
            man = rep.manifest
            info(escape(f"  {name}: TensorRT {man['tensorrt']} on {man['gpu']['name']}, layers by input "
                        f"precision {man['layer_summary'].get('by_input_precision')}"))
            write_json(self.rd.path(f"{GPU}build/{tag}.json"), {**rep.as_dict(), "engine": rel})
            for suffix, what in ((".plan.json", "manifest"), (".layers.json", "layers")):
                self.rd.record(f"{name}.{what}", f"model.{name}{suffix}", "build", parents=[name])
            self.rd.record(f"{GPU}build/{tag}", f"{GPU}build/{tag}.json", "build", parents=[name])
            return {"plan": man["plan"], "tensorrt": man["tensorrt"], "gpu": man["gpu"]}

        return rel, self._stage(name, rel, "build", key, make, parents=[tag])

    def _sample_shape(self) -> tuple[int, ...]:
        """Per-sample input shape of the models the engines are built from (frames when fused)."""
        r = self.recipe
        if r.fused_preprocess is None:
            return tuple(r.input.shape)
        return (*r.fused_preprocess.frame, r.input.shape[0])

    def _build_settings(self):
        """The recipe's build settings, plus optim's own TensorRT plugin when models carry its op."""
        r = self.recipe
        if r.fused_preprocess is None:
            return r.build
        from optim.ops.plugins import LIBRARIES, find
        from optim.errors import BuildError

        lib = find("tensorrt")
        if lib is None:
            raise BuildError(f"the models take frames through OptimPreprocess, but {LIBRARIES['tensorrt'][0]} "
                             "is not built: TENSORRT_ROOT=/path/to/TensorRT bash scripts/build_plugins.sh")
        return r.build.model_copy(update={"plugins": (*r.build.plugins, lib)})

    def engines(self, files: dict[str, str], shas: dict[str, str], check_args: tuple) -> tuple[
            list[CheckResult], dict[str, str], list[str]]:
        """Build, check and bench an engine per entry where TensorRT and a GPU are; else say why, once."""
        r = self.recipe
        wanted = r.build_tags()
        not_run = {t: ("placed for ONNX Runtime on CPU, not built (add it to build.precisions to build it)"
                       if t.endswith("-onnxruntime") else "not in build.precisions") for t in files if t not in wanted}
        m = machine.probe()
        why = build_blocker(m, target(r.target_gpu), r.build.hardware_compatibility)
        if why:
            skipped("build (TensorRT engines) and GPU bench", escape(why))
            self.notes.append(f"TensorRT build and GPU bench: not run: {why}.")
            return [], {**not_run, **{t: why for t in wanted}}, []
        results, failures = [], []
        for t in wanted:
            src, src_sha, precision = files[t], shas[t], None
            if t in ("fp16", "bf16") and r.build.fp16_bf16 == "builder_flags":
                src, src_sha, precision = FP32, shas["fp32"], t
            try:
                rel, sha = self.build(t, src, src_sha, precision, m)
            except OptimError as exc:  # one engine failing must not hide the others
                info(f"[red]failed[/] build {self._engine_name(t)}: {escape(str(exc))}")
                not_run[t] = f"build failed: {exc}"
                failures.append(f"build {self._engine_name(t)} failed: {exc}")
                continue
            results.append(self.check(t, rel, sha, *check_args, prefix=GPU))
            self.bench(t, rel, sha, gpu=m.gpu)
        if self.rd.path("timing.cache").is_file():
            self.rd.record("timing.cache", "timing.cache", "build")
        gpu = m.gpu
        self.notes.append(f"GPU columns: TensorRT {m.tensorrt} engines for {target(r.target_gpu).name}, checked "
                          f"against the ONNX Runtime CPU FP32 reference and timed on {gpu.name} ({gpu.sm}) with "
                          "CUDA events (device time, input already on the GPU).")
        return results, not_run, failures
