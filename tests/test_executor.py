"""The executor: cache keys derived in one place, and tasks/backends plugged in from outside.

``test_one_setting_reruns_exactly_its_stage_and_descendants`` runs a tiny recipe through
every CPU stage, then changes one setting of each stage in turn and checks which outputs
were made again. ``test_toy_task_and_backend`` defines a task and a backend here and runs
them through the executor without touching any other module.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from optim.artifacts import Artifact, Data
from optim.executor import Executor
from optim.backends.tensorrt_api import installed_version
from optim.recipe import load_recipe
from optim.workflow.run import Workflow

TINY = {
    "name": "tiny",
    "model": {"source": "tests.conftest:tiny_cnn"},
    "input": {"shape": [3, 16, 16], "batch": {"min": 1, "opt": 4, "max": 16}},
    "export": {"output_names": ["logits"], "verify_batches": [1, 2]},
    "calibration": {"data": {"kind": "synthetic", "count": 16}, "samples": 16},
    "evaluation": {"data": {"kind": "synthetic", "count": 16, "seed": 3}},
    "precisions": ["fp32", "int8", "fp16"],
    "quantize": {"method": "max"},
    "check": {"batch_size": 16},
    "bench": {"batch_sizes": [1], "warmup": 0, "iterations": 2},
    "tuning": {"samples": 16, "sensitivity_samples": 8},
    "calibration_study": {"methods": ["max"], "sizes": [8]},
    "backends": ["onnxruntime"],
}
BENCH = {"bench/fp32", "bench/int8-tensorrt", "bench/fp16"}
CHECK = {"check/fp32", "check/int8-tensorrt", "check/fp16"}
#: TensorRT-RTX engines (built without a GPU wherever tensorrt-rtx is installed), keyed like any stage
RTX = {"fp32.rtx", "int8-tensorrt.rtx", "fp16.rtx"} if installed_version("tensorrt_rtx")[0] else set()
INT8 = {"int8-tensorrt", "tune/int8-tensorrt", "check/int8-tensorrt"} | (RTX & {"int8-tensorrt.rtx"})
EVERYTHING = {"fp32", "int8-tensorrt", "fp16", "tune/int8-tensorrt", "study/calibration"} | CHECK | BENCH | RTX

# (recipe key path, new value, outputs that must be made again); benches are measured side
# by side, so any bench that reruns makes every bench rerun
CASES = [
    # (the fp16 and int8 files it remakes come out byte for byte the same: their engines are reused)
    ("export.simplify", False, EVERYTHING - (RTX - {"fp32.rtx"})),
    # keys hash contents: an export setting that leaves the file as it was reruns the export only
    ("export.verify_batches", [1, 3], {"fp32"}),
    ("quantize.method", "entropy", INT8 | BENCH),
    ("calibration.samples", 8, INT8 | BENCH | {"study/calibration"}),
    ("tuning.sensitivity_samples", 4, {"tune/int8-tensorrt"}),
    ("calibration_study.sizes", [4], {"study/calibration"}),
    ("evaluation.samples", 8, CHECK),
    ("check.batch_size", 8, CHECK),
    ("gates", {"fp16": {"min_cosine": 0.5}}, {"check/fp16"}),
    ("bench.iterations", 3, BENCH),
    ("build.optimization_level", 5, RTX),  # every engine, nothing else
    ("build.extra_targets", [], set()),  # no engine is built (nothing to redo)
    # a second CPU backend: its checks and benches, and every bench again (side by side)
    ("backends", ["onnxruntime", "openvino"], BENCH | {n + "@openvino" for n in CHECK | BENCH}),
]


def _with(recipe: dict, path: str, value) -> dict:
    out = json.loads(json.dumps(recipe))
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return out


def _run(tmp: Path, recipe: dict, out_root: Path) -> set[str]:
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    wf = Workflow(load_recipe(path), path, out_root=out_root)
    wf.run()
    assert wf.ex.ran("done")  # the report always runs
    return {n for n in wf.ex.ran("done") if not n.startswith("report")}


@pytest.mark.slow
def test_one_setting_reruns_exactly_its_stage_and_descendants(tmp_path):
    out = tmp_path / "art"
    assert _run(tmp_path, TINY, out) == EVERYTHING
    assert _run(tmp_path, TINY, out) == set()  # nothing changed: everything cached
    for path, value, expected in CASES:
        changed = _with(TINY, path, value)
        assert _run(tmp_path, changed, out) == expected, path
        _run(tmp_path, TINY, out)  # back to the base recipe for the next case


def test_build_and_fuse_keys_follow_their_settings(tmp_path):
    """Stages that cannot run here still get their keys from the executor alone."""
    from optim.ops.preprocess import PreprocessOp
    from optim.settings import BuildSettings
    from optim.stages import build, fuse

    ex = Executor(tmp_path / "run")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model")
    a = Artifact.of_file(model, "fp32", "onnx")
    base = build.Settings(build=BuildSettings())
    k = ex.key(build, [a], base)
    assert k == ex.key(build, [a], build.Settings(build=BuildSettings()))
    assert k != ex.key(build, [a], build.Settings(build=BuildSettings(optimization_level=5)))
    assert k != ex.key(build, [a], base.model_copy(update={"precision": "fp16"}))
    model.write_bytes(b"other model")
    assert k != ex.key(build, [Artifact.of_file(model, "fp32", "onnx")], base)
    f = fuse.Settings.of(PreprocessOp(out_h=16, out_w=16), (32, 32))
    assert ex.key(fuse, [a], f) != ex.key(fuse, [a], fuse.Settings.of(PreprocessOp(out_h=16, out_w=16), (32, 48)))


# -- a task and a backend defined here, run through the executor ---------------------------------


def test_toy_task_and_backend(tmp_path):
    from pydantic import BaseModel

    from optim.backends import Runner, TensorSpec, register_backend, unregister_backend
    from optim.stages import bench, check
    from optim.stages.report import stage as report
    from optim.settings import BenchSettings
    from optim.tasks import Column, Fidelity, GateResult, Task, register_task, unregister_task

    class ToyGates(BaseModel):
        max_error: float | None = None

    class ToyTask(Task):
        """Counting: the label is the number of positive inputs; the model's output is its count."""

        name = "toy-count"
        gates_model = ToyGates
        budget_metrics = ("error",)
        columns = (Column("count error", "error", 3, needs_labels=True, description="mean count error"),
                   Column("same count %", "same", 1))
        headline, agreement = "error", "same"

        def output_deltas(self, ref, got):
            return {"max_abs_error": float(np.abs(ref - got).max())}

        def accuracy(self, outputs, labels):
            return {"error": float(np.abs(next(iter(outputs.values())) - labels).mean())}

        def apply_gates(self, outputs, accuracy, gates):
            v = accuracy["error"]
            return [] if gates.max_error is None else [GateResult("max_error", v, gates.max_error, v <= gates.max_error)]

        def fidelity(self, ref, got, labels, metric):
            return Fidelity(1.0, 0.0, 100.0)

        def summary(self, outputs, accuracy):
            return f"error {accuracy['error']:.2f}"

        def row_values(self, outputs, accuracy):
            return {"error": (accuracy or {}).get("error"),
                    "same": 100.0 if outputs["count"]["max_abs_error"] == 0 else 0.0}

    class ToyRunner(Runner):
        """A 'model' file holding one number: the output is that number times the positive count."""

        name = "toy"

        def __init__(self, path, **_):
            self.path = Path(path)
            self.method = "toy counter"

        def activate(self):
            self.session = float(self.path.read_text())

        def infer(self, feeds):
            x = next(iter(feeds.values()))
            return {"count": self._sess() * (x > 0).reshape(len(x), -1).sum(1).astype(np.float64)}

        def input_spec(self):
            return TensorSpec("x", (4,), "float32")

        @property
        def input_names(self):
            return ["x"]

        @property
        def output_names(self):
            return ["count"]

        def measure(self, batch, warmup, iterations, *, on_run=None):
            return [0.001 * batch] * iterations

        @property
        def timing_method(self):
            return "a toy clock"

    register_task(ToyTask)
    register_backend("toy", lambda path, **kw: ToyRunner(path, **kw), handles=(".toy",))
    try:
        ref_file, cand_file = tmp_path / "ref.toy", tmp_path / "cand.toy"
        ref_file.write_text("1.0")
        cand_file.write_text("1.5")
        x = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
        data = Data.of("data/evaluation", x, (x > 0).sum(1).astype(np.float64), description="toy")
        ref = Artifact.of_file(ref_file, "fp32", "model", tag="fp32")
        cand = Artifact.of_file(cand_file, "cand", "model", tag="cand")
        s = check.Settings(task="toy-count", backend="toy", gates={"max_error": 0.1})
        for _ in range(2):
            ex = Executor(tmp_path / "run")
            for tag, model in (("fp32", ref), ("cand", cand)):
                out = ex.step(check, f"check/{tag}", f"check/{tag}.json", [model, ref, data], s, kind="result",
                              tag=tag)
                ex.step(bench, f"bench/{tag}", f"bench/{tag}.json", [model],
                        BenchSettings(batch_sizes=(2,), iterations=3), kind="result", tag=tag)
        assert ex.ran("cached") == ["check/fp32", "bench/fp32", "check/cand", "bench/cand"]  # all reused
        res = json.loads(out.path.read_text())
        assert res["task"] == "toy-count" and res["method"] == "toy counter"
        assert res["accuracy"]["reference_error"] == 0.0 and res["accuracy"]["error"] > 0.1
        assert res["gates"] == [{"gate": "max_error", "value": res["accuracy"]["error"], "limit": 0.1,
                                 "passed": False}]
        b = json.loads((tmp_path / "run/bench/cand.json").read_text())
        assert b["method"].endswith("a toy clock") and b["timings"][0]["median_ms"] == pytest.approx(2.0)
        manifest = json.loads((tmp_path / "run/manifest.json").read_text())
        assert manifest["artifacts"]["check/cand"]["parents"] == ["cand", "fp32"]
        # the report shows the task's own columns
        (tmp_path / "run/run.json").write_text(json.dumps({
            "recipe": "toy", "task": "toy-count", "tags": ["fp32", "cand"],
            "files": {"fp32": ref_file.name, "cand": cand_file.name}}))
        ex.rd.record("run", "run.json", "run", kind="result")  # as the workflow does: the report verifies it
        md = ex.step(report, "report.md", "report.md", [ref, cand], None, kind="report", cache=False).path
        lines = md.read_text().splitlines()
        assert lines[2].startswith("| precision | target | count error | same count % | p50 b2 ms |")
        err = res["accuracy"]["error"]
        assert f"| cand | any | {err:.3f} | 0.0 |" in md.read_text()
        assert "| fp32 | reference | 0.000 | 100.0 |" in md.read_text()
        assert "| GPU count error |" in lines[2]
    finally:
        unregister_task("toy-count")
        unregister_backend("toy")
