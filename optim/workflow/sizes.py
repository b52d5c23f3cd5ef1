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
        recipe = self.wf.recipe
        sized: dict[str, dict[str, Artifact]] = {}
        if not recipe.bench.sizes:
            return sized
        why = None
        if recipe.model.source.startswith("onnx:"):
            why = "the model is an ONNX file: optim can only re-export a PyTorch source at other sizes"
        elif recipe.fused_preprocess is not None:
            why = "the models take fixed-size frames through OptimPreprocess"
        elif len(recipe.input.shape) != 3:
            why = f"the input {list(recipe.input.shape)} is not an image [C, H, W]"
        if why:
            self.wf.ex.skip("bench at other sizes", ", ".join(size.label for size in recipe.bench.sizes), why)
            self.wf.notes.append(f"Timing at other input sizes: not run: {why}.")
            return sized
        for size in recipe.bench.sizes:
            shape = (recipe.input.shape[0], *size.hw)
            base = self.export_at(shape, size.label)
            sized[size.label] = {}
            for tag, model in models.items():
                entry = Entry.parse(tag).replace(size=size.label)
                if entry.comparison:
                    self.not_timed(entry, families,
                                   "the entry without its budget is a comparison: timed at the recipe's size only")
                    continue
                try:
                    at = base if tag == "fp32" else self.wf.ex.step(
                        resize, entry.step_name, RunLayout.model(entry), [model, fp32, base],
                        resize.Settings(shape=shape), tag=tag)
                except ModelError as exc:
                    self.wf.ex.skip("resize", entry.step_name, escape(first_line(exc)))
                    self.not_timed(entry, families, first_line(exc))
                    continue
                sized[size.label][tag] = at
                for family in families:
                    result = entry.replace(backend=family)
                    name = result.result_name
                    why = self.wf.cpu_not_run.get(name) or self.timing_caveat(name)
                    if why:
                        self.not_run[result.sized_name] = (f"its timing at the recipe's size is not this "
                                                           f"precision's speed: {why}")
                        continue
                    src, backend = cpu.route(family, tag, at, base)
                    rel = RunLayout.bench(result)
                    self.wf.ex.step(bench, RunLayout.record_name(rel), rel, [src],
                                    bench.Settings(**recipe.bench.at_size(size).model_dump(), backend=backend),
                                    kind="result", tag=tag)
        return sized

    def not_timed(self, entry: Entry, families: list[str], why: str) -> None:
        """Why ``entry`` (at its size) is not timed, on every CPU backend family of the run."""
        for family in families:
            self.not_run[entry.replace(backend=family).sized_name] = why

    def timing_caveat(self, name: str) -> str:
        """Why the recipe-size timing of a result was skipped or is not its precision's speed
        (BF16 emulated, FP8 as float on CPU); such entries are not timed again at other sizes."""
        path = self.wf.ex.rd.path(RunLayout.bench(name))
        record = json.loads(path.read_text()) if path.is_file() else {}
        return record.get("skipped") or record.get("note") or ""

    def export_at(self, shape: tuple[int, ...], label: str) -> Artifact:
        """The FP32 model exported again at another input shape (verified at batch 1)."""
        base = self.wf.export_settings()
        settings = base.model_copy(update={"input": base.input.model_copy(update={"shape": shape}),
                                           "export": base.export.model_copy(update={"verify_batches": (1,)})})
        inputs = [a for a in (self.wf.source_artifact(),) if a is not None]
        fp32 = Entry("fp32", size=label)
        return self.wf.ex.step(export, fp32.step_name, RunLayout.model(fp32), inputs, settings, tag="fp32")

    def engines(self, tag: str, precision: str | None, sized: dict[str, dict[str, Artifact]],
                not_run: dict[str, str]) -> list[str]:
        """The entry's engine at each ``bench.sizes`` size, built from the carried-over file (the FP32
        one with builder flags) and timed like the recipe-size engine; accuracy stays at the recipe's size."""
        recipe, failures = self.wf.recipe, []
        for size in recipe.bench.sizes:
            files = sized.get(size.label, {})
            src = files.get("fp32" if precision else tag)
            if src is None:
                continue
            entry = Entry.parse(tag).replace(size=size.label)
            name = entry.engine_name(recipe.target_gpu)
            try:
                settings = self.wf.build_settings(precision, (recipe.input.shape[0], *size.hw))
                engine = self.wf.ex.step(build, name, RunLayout.model(entry, engine=recipe.target_gpu),
                                         [dataclasses.replace(src, tag=tag)], settings, kind="engine", tag=tag)
            except OptimError as exc:
                info(f"[red]failed[/] build {name}: {escape(str(exc))}")
                not_run[entry.step_name] = f"build failed: {exc}"
                failures.append(f"build {name} failed: {exc}")
                continue
            rel = RunLayout.bench(entry, gpu=True)
            self.wf.ex.step(bench, RunLayout.record_name(rel), rel, [engine],
                            recipe.bench.at_size(size), kind="result", tag=tag)
        return failures
