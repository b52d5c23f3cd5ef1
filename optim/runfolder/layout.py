"""Every path in a run folder (``artifacts/<recipe name>/``), in one place.

Methods return the path *relative to the run folder* as a POSIX string (what the executor and
the manifest record); ``RunLayout(root).path(rel)`` / ``layout / rel`` is the file on disk::

    model.<tag>[.nms|.frames].onnx            the entry's model (and its deployables)
    model.<tag>[.nms].<target>.plan           a TensorRT / TensorRT-RTX engine (+ .plan.json, .layers.json)
    export.json  quantize/<tag>.json  tune/<tag>.json
    check/<name>.json  bench/<name>.json      <name>: TAG or TAG@family (``Entry.result_name``)
    bench/<size>/<name>.json                  timings at a ``bench.sizes`` size
    gpu/{build,check,bench}/<tag>.json  gpu/bench/<size>/<tag>.json   TensorRT on a GPU
    engines/<target>/<name>.json              build records of engines built without a GPU
    sizes/<size>/model.<tag>[.nms][.<target>.plan|.onnx]   the models at a size
    study/calibration.json  timing.cache  run.json  report.{md,html,json,png}  report.sensitivity.png
    manifest.json  .optim.lock
"""

from __future__ import annotations

from pathlib import Path

from optim.runfolder.entry import Entry

RUN_JSON = "run.json"
MANIFEST = "manifest.json"  # optim.artifacts.MANIFEST
EXPORT_JSON = "export.json"
STUDY = "study/calibration.json"
TIMING_CACHE = "timing.cache"
GPU = "gpu/"
#: report files by key (``report.json`` names the sensitivity picture ``sensitivity_png``)
REPORTS = {"md": "report.md", "html": "report.html", "json": "report.json", "png": "report.png",
           "sensitivity.png": "report.sensitivity.png", "sensitivity_png": "report.sensitivity.png"}


def _name(e: Entry | str, attr: str = "result_name") -> str:
    return getattr(e, attr) if isinstance(e, Entry) else str(e)


class RunLayout:
    """The paths of one run folder (``root``); the methods work without a root too (relative paths)."""

    RUN_JSON = RUN_JSON
    MANIFEST = MANIFEST
    EXPORT_JSON = EXPORT_JSON
    STUDY = STUDY
    TIMING_CACHE = TIMING_CACHE

    def __init__(self, root: Path | str = ".") -> None:
        self.root = Path(root)

    def path(self, rel: str) -> Path:
        """The file ``rel`` (one of this class's relative paths) in this run folder."""
        return self.root / rel

    __truediv__ = path

    def dir(self, rel: str) -> Path:
        return self.root / rel.rstrip("/")

    @staticmethod
    def record_name(rel: str) -> str:
        """The manifest name the workflow gives a result file: its path without ``.json``."""
        return rel.removesuffix(".json")

    # -- models -----------------------------------------------------------------------------
    @staticmethod
    def model(tag: Entry | str, *, nms: bool = False, frames: bool = False, engine: str | None = None,
              size: str | None = None) -> str:
        """``[sizes/SIZE/]model.TAG[.nms][.frames][.ENGINE.plan|.onnx]`` (``engine``: an engine target, h100, rtx)."""
        parts = ["model", _name(tag, "tag")] + (["nms"] if nms else []) + (["frames"] if frames else [])
        name = ".".join(parts + [engine, "plan"] if engine else parts + ["onnx"])
        size = size or (tag.size if isinstance(tag, Entry) else None)
        return f"sizes/{size}/{name}" if size else name

    @staticmethod
    def variant(rel: str, kind: str) -> str:
        """The deployable made from model file ``rel``: ``model.TAG.onnx`` -> ``model.TAG.KIND.onnx``
        (``nms``: decode + NMS in the graph; ``frames``: the preprocessing op prepended)."""
        return rel.removesuffix(".onnx") + f".{kind}.onnx"

    @staticmethod
    def made_from(rel: str, kind: str) -> str | None:
        """The model file a ``kind`` deployable was made from (``variant`` read backwards):
        ``model.TAG.KIND.onnx`` -> ``model.TAG.onnx``; None when ``rel`` is not such a deployable."""
        suffix = f".{kind}.onnx"
        return rel.removesuffix(suffix) + ".onnx" if rel.endswith(suffix) else None

    @staticmethod
    def engine_manifest(engine: str) -> str:
        """``ENGINE.plan.json``: the build manifest beside the engine ``ENGINE.plan``."""
        return engine + ".json"

    @staticmethod
    def engine_layers(engine: str) -> str:
        """``ENGINE.layers.json``: the engine inspector's per-layer JSON beside the engine ``ENGINE.plan``."""
        return engine.removesuffix(".plan") + ".layers.json"

    @staticmethod
    def sizes_dir(size: str) -> str:
        return f"sizes/{size}"

    # -- results of the CPU stages ------------------------------------------------------------
    @staticmethod
    def quantize(tag: Entry | str) -> str:
        return f"quantize/{_name(tag, 'tag')}.json"

    @staticmethod
    def tune(tag: Entry | str) -> str:
        return f"tune/{_name(tag, 'tag')}.json"

    @staticmethod
    def check(name: Entry | str, *, gpu: bool = False) -> str:
        """``check/NAME.json`` (NAME: TAG[@family]); ``gpu/check/TAG.json`` for the engine's check."""
        return f"{GPU if gpu else ''}check/{_name(name, 'tag' if gpu else 'result_name')}.json"

    @staticmethod
    def bench(name: Entry | str, *, size: str | None = None, gpu: bool = False) -> str:
        """``[gpu/]bench/[SIZE/]NAME.json`` (an Entry's own ``size`` when ``size`` is not given)."""
        size = size or (name.size if isinstance(name, Entry) else None)
        return f"{GPU if gpu else ''}bench/{size + '/' if size else ''}{_name(name, 'tag' if gpu else 'result_name')}.json"

    @staticmethod
    def gpu_build(tag: Entry | str) -> str:
        return f"{GPU}build/{_name(tag, 'tag')}.json"

    @staticmethod
    def engine_record(target: str, name: str) -> str:
        """``engines/TARGET/NAME.json``: the build record of an engine built without a GPU."""
        return f"engines/{target}/{name}.json"

    @staticmethod
    def report(kind: str = "md") -> str:
        """``report.md`` / ``.html`` / ``.json`` / ``.png`` / ``.sensitivity.png``."""
        return REPORTS.get(kind, f"report.{kind}")

    # -- folders the report reads -------------------------------------------------------------
    QUANTIZE_DIR = "quantize"
    TUNE_DIR = "tune"
    CHECK_DIR = "check"
    BENCH_DIR = "bench"

    @staticmethod
    def gpu_dir(kind: str, size: str | None = None) -> str:
        """``gpu/build``, ``gpu/check``, ``gpu/bench`` (``gpu/bench/SIZE``)."""
        return f"{GPU}{kind}" + (f"/{size}" if size else "")

    @staticmethod
    def bench_dir(size: str | None = None) -> str:
        return "bench" + (f"/{size}" if size else "")

    # -- what belongs to one report row (``optim.verify.mark_unverified``) ------------------------
    def row_files(self, entry: Entry, sizes: list[str] = (), primary: bool = True) -> list[str]:
        """The result files one report row is read from (its model file is the row's own)."""
        rels = [self.check(entry), self.bench(entry), self.quantize(entry), self.tune(entry),
                *(self.bench(entry, size=z) for z in sizes)]
        if primary:
            rels += [self.gpu_build(entry), self.check(entry, gpu=True), self.bench(entry, gpu=True)]
        return rels
