"""The TensorRT part of ``optim run``: build, check and bench an engine per entry, or say why not.

Where TensorRT or a suitable GPU is missing, one line says why and the run records
the reason for every entry, which the report shows as "not run". One engine failing
to build does not hide the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape

from optim import machine
from optim.artifacts import Artifact, Data
from optim.backends.engine_compat import build_blocker, target
from optim.console import info
from optim.errors import BuildError, OptimError
from optim.stages import bench, build
from optim.stages.check import CheckResult

if TYPE_CHECKING:
    from optim.workflow import Workflow

GPU = "gpu/"


def build_settings(wf: Workflow, precision: str | None) -> build.Settings:
    """The recipe's build settings, plus optim's own TensorRT plugin when models carry its op."""
    r = wf.recipe
    s = r.build
    shape = tuple(r.input.shape)
    if r.fused_preprocess is not None:
        from optim.ops.plugins import LIBRARIES, find

        lib = find("tensorrt")
        if lib is None:
            raise BuildError(f"the models take frames through OptimPreprocess, but {LIBRARIES['tensorrt'][0]} "
                             "is not built: TENSORRT_ROOT=/path/to/TensorRT bash scripts/build_plugins.sh")
        s = s.model_copy(update={"plugins": (*s.plugins, lib)})
        shape = (*r.fused_preprocess.frame, r.input.shape[0])
    return build.Settings(build=s, precision=precision, batch=r.input.batch, target=r.target_gpu,
                          sample_shape=shape)


def engines(wf: Workflow, models: dict[str, Artifact], fp32: Artifact,
            evaluation: Data) -> tuple[list[CheckResult], dict[str, str], list[str]]:
    """Build, check and bench an engine per entry where TensorRT and a GPU are; else say why, once."""
    r = wf.recipe
    wanted = r.build_tags()
    not_run = {t: ("placed for ONNX Runtime on CPU, not built (add it to build.precisions to build it)"
                   if t.endswith("-onnxruntime") else "not in build.precisions") for t in models if t not in wanted}
    m = machine.probe()
    why = build_blocker(m, target(r.target_gpu), r.build.hardware_compatibility)
    if why:
        wf.ex.skip("build (TensorRT engines) and GPU bench", "", escape(why))
        wf.notes.append(f"TensorRT build and GPU bench: not run: {why}.")
        return [], {**not_run, **{t: why for t in wanted}}, []
    results, failures = [], []
    for t in wanted:
        src, precision = models[t], None
        if t in ("fp16", "bf16") and r.build.fp16_bf16 == "builder_flags":
            src, precision = models["fp32"], t
        name = f"{t}.{r.target_gpu}"
        try:
            s = build_settings(wf, precision)
            plugins = [Artifact.of_file(p, f"plugin:{p.name}", "plugin") for p in s.build.plugins if p.is_file()]
            src = Artifact(src.name, src.path, src.sha256, src.kind, t, src.parents)
            engine = wf.ex.step(build, name, f"model.{name}.plan", [src, *plugins], s, kind="engine", tag=t)
        except OptimError as exc:
            info(f"[red]failed[/] build {name}: {escape(str(exc))}")
            not_run[t] = f"build failed: {exc}"
            failures.append(f"build {name} failed: {exc}")
            continue
        results.append(wf.check(engine, fp32, evaluation, prefix=GPU))
        wf.ex.step(bench, f"{GPU}bench/{t}", f"{GPU}bench/{t}.json", [engine], r.bench, kind="result", tag=t)
    gpu = m.gpu
    wf.notes.append(f"GPU columns: TensorRT {m.tensorrt} engines for {target(r.target_gpu).name}, checked "
                    f"against the ONNX Runtime CPU FP32 reference and timed on {gpu.name} ({gpu.sm}) with "
                    "CUDA events (device time, input already on the GPU).")
    return results, not_run, failures
