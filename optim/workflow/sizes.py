"""``optim run`` at the recipe's other input sizes (``bench.sizes``: 640 and 1280 for a detector).

For each size the FP32 model is exported again there and every entry's file is carried over
to it (``optim.stages.resize``: the same Q/DQ scales, casts and exclusions, no calibration at
that size), then timed on each CPU backend like at the recipe's size, and, where TensorRT and a
GPU are, built into an engine and timed on the GPU. Accuracy stays measured at the recipe's
size. ``not_run`` keeps, per ``SIZE/TAG@family``, why an entry was not timed at a size; the
report reads it from run.json.
"""

from __future__ import annotations

import dataclasses
import json

from rich.markup import escape

from optim.artifacts import Artifact
from optim.backends import cpu
from optim.console import info
from optim.errors import ModelError, OptimError, first_line
from optim.stages import bench, build, export, resize

from optim.runfolder import Entry, RunLayout


class Sizes:
    """The ``bench.sizes`` steps of one ``Workflow`` (its recipe, executor and notes)."""

    def __init__(self, wf) -> None:
        self.wf = wf
        self.not_run: dict[str, str] = {}  # SIZE/TAG@family -> why not timed at that size

    def bench(self, models: dict[str, Artifact], fp32: Artifact,
                    families: list[str]) -> dict[str, dict[str, Artifact]]:
        """Every entry timed at each ``bench.sizes`` size: the model re-exported there, each
        precision's file carried over to it (``optim.stages.resize``: same Q/DQ scales, casts
        and exclusions), benched on each CPU backend like at the recipe's size. Returns the
        carried-over models by size label and entry (the GPU engines are built from them)."""
        r = self.wf.recipe
        sized: dict[str, dict[str, Artifact]] = {}
        if not r.bench.sizes:
            return sized
        why = None
        if r.model.source.startswith("onnx:"):
            why = "the model is an ONNX file: optim can only re-export a PyTorch source at other sizes"
        elif r.fused_preprocess is not None:
            why = "the models take fixed-size frames through OptimPreprocess"
        elif len(r.input.shape) != 3:
            why = f"the input {list(r.input.shape)} is not an image [C, H, W]"
        if why:
            self.wf.ex.skip("bench at other sizes", ", ".join(z.label for z in r.bench.sizes), why)
            self.wf.notes.append(f"Timing at other input sizes: not run: {why}.")
            return sized
        for z in r.bench.sizes:
            shape = (r.input.shape[0], *z.hw)
            base = self.export_at(shape, z.label)
            sized[z.label] = {}
            for t, m in models.items():
                if Entry.parse(t).comparison:
                    for family in families:
                        self.not_run[Entry.parse(t).replace(backend=family, size=z.label).sized_name] = (
                            "the entry without its budget is a comparison: timed at the recipe's size only")
                    continue
                try:
                    at = base if t == "fp32" else self.wf.ex.step(
                        resize, f"{t}@{z.label}", RunLayout.model(t, size=z.label), [m, fp32, base],
                        resize.Settings(shape=shape), tag=t)
                except ModelError as exc:
                    self.wf.ex.skip("resize", f"{t}@{z.label}", escape(first_line(exc)))
                    for family in families:
                        self.not_run[Entry.parse(t).replace(backend=family, size=z.label).sized_name] = first_line(exc)
                    continue
                sized[z.label][t] = at
                for family in families:
                    e = Entry.parse(t).replace(backend=family, size=z.label)
                    name = e.result_name
                    why = self.wf.cpu_not_run.get(name) or self.timing_caveat(name)
                    if why:
                        self.not_run[e.sized_name] = f"its timing at the recipe's size is not this precision's speed: {why}"
                        continue
                    src, backend = cpu.route(family, t, at, base)
                    rel = RunLayout.bench(e)
                    self.wf.ex.step(bench, RunLayout.record_name(rel), rel, [src],
                                 bench.Settings(**r.bench.at_size(z).model_dump(), backend=backend),
                                 kind="result", tag=t)
        return sized

    def timing_caveat(self, name: str) -> str:
        """Why the recipe-size timing of a result was skipped or is not its precision's speed
        (BF16 emulated, FP8 as float on CPU); such entries are not timed again at other sizes."""
        p = self.wf.ex.rd.path(RunLayout.bench(name))
        d = json.loads(p.read_text()) if p.is_file() else {}
        return d.get("skipped") or d.get("note") or ""

    def export_at(self, shape: tuple[int, ...], label: str) -> Artifact:
        """The FP32 model exported again at another input shape (verified at batch 1)."""
        base = self.wf.export_settings()
        s = base.model_copy(update={"input": base.input.model_copy(update={"shape": shape}),
                                    "export": base.export.model_copy(update={"verify_batches": (1,)})})
        inputs = [a for a in (self.wf.source_artifact(),) if a is not None]
        return self.wf.ex.step(export, f"fp32@{label}", RunLayout.model("fp32", size=label), inputs, s, tag="fp32")

    def engines(self, t: str, precision: str | None, sized: dict[str, dict[str, Artifact]],
                         not_run: dict[str, str]) -> list[str]:
        """The entry's engine at each ``bench.sizes`` size, built from the carried-over file (the FP32
        one with builder flags) and timed like the recipe-size engine; accuracy stays at the recipe's size."""
        r, failures = self.wf.recipe, []
        for z in r.bench.sizes:
            files = sized.get(z.label, {})
            src = files.get("fp32" if precision else t)
            if src is None:
                continue
            name = f"{t}.{r.target_gpu}@{z.label}"
            try:
                s = self.wf.build_settings(precision, (r.input.shape[0], *z.hw))
                engine = self.wf.ex.step(build, name, RunLayout.model(t, engine=r.target_gpu, size=z.label),
                                      [dataclasses.replace(src, tag=t)], s, kind="engine", tag=t)
            except OptimError as exc:
                info(f"[red]failed[/] build {name}: {escape(str(exc))}")
                not_run[f"{t}@{z.label}"] = f"build failed: {exc}"
                failures.append(f"build {name} failed: {exc}")
                continue
            rel = RunLayout.bench(t, size=z.label, gpu=True)
            self.wf.ex.step(bench, RunLayout.record_name(rel), rel, [engine],
                         r.bench.at_size(z), kind="result", tag=t)
        return failures
