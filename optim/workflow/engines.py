"""``optim run``'s engines for the targets whose builder needs no GPU (``build.extra_targets``: rtx).

TensorRT-RTX compiles ahead of time on a CPU, so these engines are built on every machine where
it is installed, GPU or not: every entry a TensorRT builder takes (``Recipe.build_tags``; never a
file placed for ONNX Runtime, whose int32-bias Q/DQ TensorRT's parser refuses), its deployable
with decode + NMS in the graph, and each at every ``bench.sizes`` size (the NMS deployable is
made there too, checked against optim's decode on a few evaluation images resized to that size).

Each engine is one build step (``optim.stages.build``: the engine, its manifest beside it, the
build report under ``engines/<target>/``). Nothing here runs an engine: they load only on the
GPUs they are for, so their accuracy and speed stay "not run". ``cells`` keeps, per target and
engine name, the report's one line ("built (RTX 1.7.1.116, sm86/89/120, 1.2 MB, 0.9 s)", or
"not built: <the builder's reason>"); the workflow writes it to run.json.
"""

from __future__ import annotations

import dataclasses

from rich.markup import escape

from optim.artifacts import Artifact, Data
from optim.backends.engine_compat import build_blocker, read_manifest, target
from optim.backends.trt_flavour import FLAVOURS
from optim.console import info
from optim.errors import OptimError, first_line
from optim.runfolder import Entry, RunLayout
from optim.stages import build, nms

#: evaluation images the NMS deployable at another size is checked on (resized; the check compares
#: the graph's NMS with optim's decode of the same file's raw output, so any image shows a mismatch)
SIZE_CHECK_IMAGES = 2


def resized(data: Data, hw: tuple[int, int], n: int) -> Data:
    """The first ``n`` images of ``data`` resized (bilinear) to ``hw``."""
    import numpy as np
    import torch

    x = torch.from_numpy(np.ascontiguousarray(data.x[:n], dtype=np.float32))
    y = torch.nn.functional.interpolate(x, size=tuple(hw), mode="bilinear", align_corners=False)
    return Data.of(f"{data.name}@{hw[0]}x{hw[1]}", y.numpy(), description=f"{data.description} resized to {hw}")


class OfflineEngines:
    """The GPU-less engine builds of one ``Workflow`` (its recipe, executor and notes)."""

    def __init__(self, wf) -> None:
        self.wf = wf
        self.cells: dict[str, dict[str, str]] = {}  # target -> engine name -> the report's line
        self.failures: list[str] = []

    def build_all(self, models: dict[str, Artifact], nms_models: dict[str, Artifact],
                  sized: dict[str, dict[str, Artifact]], evaluation: Data) -> list[str]:
        """Every engine of every ``build.extra_targets`` target; returns the build failures (one line each)."""
        from optim.backends.machine import probe

        recipe = self.wf.recipe
        if not recipe.build.extra_targets:
            return []
        machine = probe()
        tags = recipe.build_tags()
        for key in recipe.build.extra_targets:
            tgt = target(key)
            why = build_blocker(machine, tgt)
            if why is None and recipe.fused_preprocess is not None:
                why = ("the models take frames through OptimPreprocess, whose plugin is built against TensorRT "
                       "10/11 headers: TensorRT-RTX's parser aborts on it and its own headers are not public "
                       "(README: Custom plugins)")
            cells = self.cells.setdefault(key, {})
            others = {Entry.parse(tag).engine_name(key): "not built: " + self.wf.not_built_reason(tag)
                      for tag in models if tag not in tags}
            if why:
                self.wf.ex.skip(f"build ({tgt.name} engines)", "", escape(why))
                self.wf.notes.append(f"{tgt.name} engines: not built: {why}.")
                cells.update({Entry.parse(tag).engine_name(key): f"not built: {why}" for tag in tags})
                cells.update(others)
                continue
            for tag, name, rel, src, shape in self.jobs(key, tags, models, nms_models, sized, evaluation):
                cells[name] = self.build_one(key, tag, name, rel, src, shape)
            cells.update(others)
            built = sum(c.startswith("built") for c in cells.values())
            flavour = FLAVOURS[tgt.flavour]
            self.wf.notes.append(f"{tgt.name} engines ({flavour.label}, {tgt.sm}): {built} built on this machine, "
                                 f"ahead of time and without a GPU; they run on {flavour.runs_on}, so their accuracy "
                                 "and speed are not measured here.")
        return self.failures

    def jobs(self, key: str, tags: list[str], models: dict[str, Artifact], nms_models: dict[str, Artifact],
             sized: dict[str, dict[str, Artifact]], evaluation: Data):
        """(entry, engine name, path in the run folder, ONNX artifact, sample shape or None) per engine."""
        recipe = self.wf.recipe
        # the images each size's NMS deployables are checked on: resized once per size, not per entry
        at_size = {size.label: resized(evaluation, size.hw, SIZE_CHECK_IMAGES) for size in recipe.bench.sizes} \
            if recipe.nms and nms_models else {}
        for tag in tags:
            entry = Entry.parse(tag)
            yield tag, entry.engine_name(key), RunLayout.model(entry, engine=key), models[tag], None
            if tag in nms_models:
                yield (tag, entry.engine_name(key, nms=True), RunLayout.model(entry, nms=True, engine=key),
                       nms_models[tag], None)
            for size in recipe.bench.sizes:
                src = sized.get(size.label, {}).get(tag)
                if src is None:
                    continue
                entry_at_size = entry.replace(size=size.label)
                shape = (recipe.input.shape[0], *size.hw)
                yield tag, entry_at_size.engine_name(key), RunLayout.model(entry_at_size, engine=key), src, shape
                if recipe.nms and tag in nms_models:
                    with_nms = self.nms_at(entry_at_size, src, at_size[size.label])
                    if with_nms is not None:
                        yield (tag, entry_at_size.engine_name(key, nms=True),
                               RunLayout.model(entry_at_size, nms=True, engine=key), with_nms, shape)

    def nms_at(self, entry: Entry, src: Artifact, data: Data) -> Artifact | None:
        """The entry's NMS deployable at its ``size`` (checked like at the recipe's size), or None."""
        try:
            return self.wf.ex.step(nms, f"{entry.step_name}.nms", RunLayout.model(entry, nms=True), [src, data],
                                   self.wf.recipe.nms, tag=entry.tag)
        except OptimError as exc:
            self.fail(f"{entry.tag}.nms@{entry.size}", f"add-nms at {entry.size}: {first_line(exc)}")
            return None

    def build_one(self, key: str, tag: str, name: str, rel: str, src: Artifact,
                  shape: tuple[int, ...] | None) -> str:
        try:
            settings = self.wf.build_settings(None, shape).model_copy(update={"target": key})
            engine = self.wf.ex.step(build, name, rel, [dataclasses.replace(src, tag=tag)], settings, kind="engine",
                                     tag=tag)
        except OptimError as exc:
            return self.fail(name, first_line(exc))
        return build.engine_cell(read_manifest(engine.path))

    def fail(self, name: str, why: str) -> str:
        info(f"[red]failed[/] build {name}: {escape(why)}")
        self.failures.append(f"build {name} failed: {why}")
        return f"not built: {why}"
