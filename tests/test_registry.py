"""A backend and a task defined in this file, registered, and no other file changed: they appear in
``optim run`` (every entry checked and timed on the backend, accuracy read through the task's 2-D
labels), in the report, and in ``optim doctor``.

The backend runs ONNX files with ONNX's own reference evaluator (pure Python, no ONNX Runtime); the
task scores label *sets*: each sample's labels are a row of 0/1 flags over the classes, and a
prediction counts when its top-1 class is one of the flagged ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel

from optim.backends import Runner, TensorSpec, register_backend, unregister_backend
from optim.errors import DataError
from optim.tasks import Column, GateResult, Task, register_task, unregister_task
from optim.tasks.base import first_output, gate_results
from tests.helpers.cli import invoke
from tests.helpers.models import TINY_SHAPE, tiny_cnn

BACKEND, TASK = "onnx-reference", "label-sets"


class ReferenceRunner(Runner):
    """An ONNX file on ``onnx.reference.ReferenceEvaluator``."""

    name = BACKEND

    def __init__(self, path, **_):
        import onnx

        self.model = onnx.load(str(path))
        self.method = f"onnx {onnx.__version__} ReferenceEvaluator (Python)"

    def activate(self):
        from onnx.reference import ReferenceEvaluator

        self.session = ReferenceEvaluator(self.model)

    def infer(self, feeds):
        return dict(zip(self.output_names, self._sess().run(None, dict(feeds))))

    @property
    def input_names(self):
        return [i.name for i in self.model.graph.input]

    @property
    def output_names(self):
        return [o.name for o in self.model.graph.output]

    def input_spec(self):
        dims = self.model.graph.input[0].type.tensor_type.shape.dim[1:]
        return TensorSpec(self.input_names[0], tuple(d.dim_value for d in dims), np.dtype(np.float32))


class SetGates(BaseModel):
    min_set_top1: float | None = None
    min_agreement: float | None = None


class LabelSets(Task):
    """Labels (N, classes) of 0/1 flags: the classes a sample may be called by."""

    name = TASK
    gates_model = SetGates
    default_gates = {"min_agreement": 50.0}
    budget_metrics = ("set_top1", "agreement")
    columns = (Column("set top-1 %", "set_top1", needs_labels=True, description="top-1 in the label set (%)"),
               Column("agree %", "agreement", description="same top-1 as FP32 (%)"))
    headline, agreement = "set_top1", "agreement"

    def check_labels(self, labels, count, source):
        labels = super().check_labels(labels, count, source)
        if labels.ndim != 2 or not np.isin(labels, (0, 1)).all():
            raise DataError(f"{source}: label sets are a 2-D array of 0/1 flags, got shape {labels.shape}")
        return labels

    def output_deltas(self, ref, got):
        ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
        cos = float((ref * got).sum() / (np.linalg.norm(ref) * np.linalg.norm(got)))
        return {"max_abs_error": float(np.abs(ref - got).max()), "cosine": cos,
                "agreement": float((ref.argmax(1) == got.argmax(1)).mean() * 100)}

    def accuracy(self, outputs, labels):
        top1 = first_output(outputs).argmax(1)
        return {"set_top1": float(labels[np.arange(len(top1)), top1].mean() * 100)}

    def apply_gates(self, outputs, accuracy, gates) -> list[GateResult]:
        first = first_output(outputs)
        return gate_results(gates, {"min_set_top1": lambda: accuracy["set_top1"],
                                    "min_agreement": lambda: first["agreement"]})

    def summary(self, outputs, accuracy):
        agree = f"agreement {first_output(outputs)['agreement']:.2f}%"
        return agree if accuracy is None else f"set top-1 {accuracy['set_top1']:.2f}%, {agree}"

    def row_values(self, outputs, accuracy):
        return {"set_top1": (accuracy or {}).get("set_top1"), "agreement": first_output(outputs)["agreement"]}


@pytest.fixture
def registered():
    register_task(LabelSets)
    register_backend(BACKEND, lambda path, **kw: ReferenceRunner(path, **kw), family=True, package="onnx",
                     files="ONNX models (.onnx)")
    try:
        yield
    finally:
        unregister_task(TASK)
        unregister_backend(BACKEND)


def _label_sets(x: np.ndarray) -> np.ndarray:
    """Sets holding FP32's class (and another) for the first 3/4 of the samples, a wrong class for the rest."""
    import torch

    with torch.no_grad():
        top1 = tiny_cnn()(torch.from_numpy(x)).argmax(1).numpy()
    sets = np.zeros((len(x), 5), np.int64)
    keep = len(x) * 3 // 4
    sets[np.arange(keep), top1[:keep]] = 1
    sets[np.arange(keep), (top1[:keep] + 2) % 5] = 1
    sets[np.arange(keep, len(x)), (top1[keep:] + 1) % 5] = 1
    return sets


def _recipe(tmp_path: Path) -> Path:
    x = np.random.default_rng(5).standard_normal((16, *TINY_SHAPE)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", images=x, labels=_label_sets(x))
    recipe = tmp_path / "sets.yaml"
    recipe.write_text(f"""
name: sets
task: {TASK}
model: {{source: "tests.conftest:tiny_cnn"}}
input: {{shape: [3, 16, 16], batch: {{min: 1, opt: 4, max: 16}}}}
export: {{output_names: [logits], verify_batches: [1, 2]}}
calibration: {{data: {{kind: synthetic, count: 8}}, samples: 8}}
evaluation: {{data: {{kind: npz, path: eval.npz}}}}
precisions: [fp32, fp16]
backends: [onnxruntime, {BACKEND}]
gates: {{default: {{min_set_top1: 70}}}}
bench: {{batch_sizes: [1, 2], warmup: 1, iterations: 2}}
""")
    return recipe


def test_a_registered_backend_and_task_appear_in_run_report_and_doctor(tmp_path, registered):
    code, out, exc = invoke("run", _recipe(tmp_path), "--out-root", tmp_path / "runs")
    assert code == 0 and exc is None, out
    run = tmp_path / "runs/sets"
    assert f"fp16@{BACKEND}: set top-1 75.00%, agreement 100.00%; gates passed" in out
    for tag in ("fp32", "fp16"):
        check = json.loads((run / f"check/{tag}@{BACKEND}.json").read_text())
        assert check["method"].startswith("onnx ") and "ReferenceEvaluator" in check["method"]
        assert check["task"] == TASK and check["accuracy"]["set_top1"] == 75.0
        assert check["gates"][0]["gate"] == "min_set_top1" and check["gates"][0]["passed"]
        bench = json.loads((run / f"bench/{tag}@{BACKEND}.json").read_text())
        assert "ReferenceEvaluator" in bench["method"] and bench["timings"][0]["median_ms"] > 0
    info = json.loads((run / "run.json").read_text())
    assert info["task"] == TASK and info["backends"] == ["onnxruntime", BACKEND]
    report = json.loads((run / "report.json").read_text())
    rows = {(r["tag"], r["backend"]): r for r in report["rows"]}
    assert set(rows) == {(t, b) for t in ("fp32", "fp16") for b in ("onnxruntime", BACKEND)}
    assert rows[("fp16", BACKEND)]["accuracy"]["set_top1"] == 75.0
    assert rows[("fp32", "onnxruntime")]["accuracy"]["agreement"] == 100.0
    md = (run / "report.md").read_text()
    assert "set top-1 %" in md and BACKEND in md

    code, out, exc = invoke("doctor")
    assert code == 0 and exc is None, out
    lines = out.splitlines()
    assert [ln for ln in lines if ln.split()[:2] == ["*", BACKEND]][0].endswith("ONNX models (.onnx): yes")
    assert any(ln.split()[:4] == ["check:", "on", "the", "CPU"] and BACKEND in ln for ln in lines)
    assert f"Tasks (a recipe's task:): classification, detection, {TASK}" in out


def test_a_task_takes_the_labels_its_check_allows(tmp_path, registered):
    from optim.data import load_dataset
    from optim.settings import DataSpec
    from optim.tasks import get_task

    x = np.zeros((4, 2, 2), np.float32)
    np.savez(tmp_path / "sets.npz", images=x, labels=np.eye(4, dtype=np.int64))
    spec = DataSpec(kind="npz", path=tmp_path / "sets.npz")
    assert load_dataset(spec, (2, 2), get_task(TASK)).labels.shape == (4, 4)
    with pytest.raises(DataError, match="labels must be a 1-D integer array, got int64 of shape"):
        load_dataset(spec, (2, 2))  # classification's labels are class ids
    np.savez(tmp_path / "flat.npz", images=x, labels=np.arange(4))
    with pytest.raises(DataError, match="label sets are a 2-D array of 0/1 flags, got shape"):
        load_dataset(DataSpec(kind="npz", path=tmp_path / "flat.npz"), (2, 2), get_task(TASK))
    # boxes: detection's labels; classification refuses them in one line, no task reads them as boxes
    boxes = {"boxes": np.zeros((2, 4), np.float32), "classes": np.zeros(2, np.int64), "image_index": np.arange(2)}
    np.savez(tmp_path / "boxes.npz", images=x, **boxes)
    spec = DataSpec(kind="npz", path=tmp_path / "boxes.npz")
    assert load_dataset(spec, (2, 2)).labels.count == 2
    with pytest.raises(DataError, match="the labels are boxes .detection data.; give the detection task"):
        load_dataset(spec, (2, 2), get_task("classification"))


def test_unregistered_names_are_refused_in_one_line(tmp_path):
    recipe = _recipe(tmp_path)
    code, out, exc = invoke("run", recipe, "--out-root", tmp_path / "runs")
    assert code != 0 and exc is not None and f"unknown task '{TASK}'" in str(exc)
    recipe.write_text(recipe.read_text().replace(f"task: {TASK}\n", "").replace("min_set_top1", "min_cosine"))
    code, out, exc = invoke("run", recipe, "--out-root", tmp_path / "runs")
    assert code != 0 and f"backends names ['{BACKEND}']; CPU backends are onnxruntime, openvino" in str(exc)
