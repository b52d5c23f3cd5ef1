"""Carrying a model over to another input size (``optim.stages.resize``) and the report's sizes section."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import yaml

from optim.errors import ModelError
from optim.settings import ExportSettings, InputSpec
from optim.stages.resize import carry_over, size_constants


def _export(module, side: int, out):
    from optim.sources import LoadedModel
    from optim.stages.export import onnx_from_torch

    onnx_from_torch(LoadedModel(module, "tests:detector", None), InputSpec(name="images", shape=(3, side, side)),
                    ExportSettings(output_names=("output0",), verify_batches=(1,)), out)
    return onnx.load(out)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    import torch

    from optim.sources.detector import FashionDetector

    torch.manual_seed(0)
    det = FashionDetector().eval()
    d = tmp_path_factory.mktemp("sizes")
    return d, _export(det, 64, d / "m64.onnx"), _export(det, 128, d / "m128.onnx")


def _run(model, x):
    import onnxruntime as ort

    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"images": x})[0]


@pytest.mark.slow  # exports the bundled detector at two sizes (module fixture)
def test_only_the_anchor_constants_depend_on_the_size(exports):
    _, a, b = exports
    changed = size_constants(a, b)
    assert changed and {n for n, _ in changed} <= {"/Concat", "/Concat_2", "/head/Sub", "/head/Add_1", "/head/Mul_2"}
    anchors = [onnx.numpy_helper.to_array(t) for t in changed.values() if t.dims and t.dims[-1] > 2]
    assert anchors and all(a.shape[-1] == (16 * 16 + 8 * 8 + 4 * 4) for a in anchors)  # A at 128


@pytest.mark.slow  # exports the bundled detector at two sizes (module fixture)
def test_fp32_carried_over_equals_the_export_at_that_size(exports):
    _, a, b = exports
    x = np.random.default_rng(0).random((2, 3, 128, 128), dtype=np.float32)
    got = _run(carry_over(a, a, b), x)
    assert got.shape == (2, 14, 336)
    np.testing.assert_allclose(got, _run(b, x), rtol=1e-5, atol=1e-4)


@pytest.mark.slow  # exports the bundled detector at two sizes (module fixture)
def test_a_quantized_model_keeps_its_scales_at_the_new_size(exports):
    from optim.settings import QuantizeSettings
    from optim.stages.quantize.stage import quantize_here

    d, a, b = exports
    calib = np.random.default_rng(1).random((8, 3, 64, 64), dtype=np.float32)
    from optim.tasks.detection import head_nodes

    quantize_here(d / "m64.onnx", QuantizeSettings(precision="int8", target="onnxruntime", method="max",
                                                   exclude_nodes=head_nodes(a)), d / "q64.onnx", calib)
    q64 = onnx.load(d / "q64.onnx")
    q128 = carry_over(q64, a, b)
    scales = lambda m: {t.name: onnx.numpy_helper.to_array(t).tobytes() for t in m.graph.initializer  # noqa: E731
                        if "scale" in t.name}
    assert scales(q64) and scales(q64) == scales(q128)
    assert sum(n.op_type == "QuantizeLinear" for n in q128.graph.node) == sum(
        n.op_type == "QuantizeLinear" for n in q64.graph.node)
    x = np.random.default_rng(2).random((1, 3, 128, 128), dtype=np.float32)
    got, ref = _run(q128, x), _run(b, x)
    assert got.shape == ref.shape == (1, 14, 336)
    assert np.abs(got[:, :4] - ref[:, :4]).mean() < 2.0  # pixel boxes: INT8 noise, not a wrong grid


@pytest.mark.slow  # exports the bundled detector at two sizes (module fixture)
def test_refuses_what_it_cannot_carry(exports):
    _, a, b = exports
    other = onnx.ModelProto()
    other.CopyFrom(b)
    other.graph.node[3].op_type = "Identity"
    with pytest.raises(ModelError, match="differs in its nodes"):
        size_constants(a, other)
    variant = onnx.ModelProto()
    variant.CopyFrom(a)
    node_name, j = next(iter(size_constants(a, b)))
    node = next(n for n in variant.graph.node if n.name == node_name)
    node.input[j] = variant.graph.node[0].output[0]  # a tool computed it instead of keeping the constant
    with pytest.raises(ModelError, match="no longer feeds"):
        carry_over(variant, a, b)
    # a model whose weights differ between the two exports (random weights made twice)
    import torch

    from optim.sources.detector import FashionDetector

    torch.manual_seed(1)
    fresh = _export(FashionDetector().eval(), 128, exports[0] / "fresh128.onnx")
    with pytest.raises(ModelError, match="differ in their weights"):
        carry_over(a, a, fresh)


@pytest.mark.slow  # exports the bundled detector at two sizes (module fixture)
def test_head_nodes_are_the_decode_only(exports):
    import re

    from optim.tasks.detection import head_nodes

    _, a, _ = exports
    pats = head_nodes(a)
    kept = [n for n in a.graph.node if any(re.fullmatch(p, n.name) for p in pats)]
    names = {n.name for n in kept}
    assert "/head/dfl/conv/Conv" in names and "/head/Sigmoid" in names
    assert any(n.op_type == "Concat" and n.output[0] == "output0" for n in kept)
    assert not any(n.op_type == "Conv" and "/cv" in n.name for n in kept)  # branch convs stay quantizable
    anon = onnx.ModelProto()
    anon.CopyFrom(a)
    for n in anon.graph.node:
        n.name = n.name.rsplit("/", 1)[-1]
    assert head_nodes(anon) == ()


@pytest.mark.slow  # exports the bundled detector at two sizes (module fixture)
def test_the_head_is_found_by_structure_when_its_module_is_unnamed(exports):
    """Names stripped of their modules (a top-level output Concat): keep_head walks back from the output
    to the branch convolutions and keeps the same decode the module name gives, and says how it found it."""
    import re

    from optim.tasks.detect_head import find_head, head_by_structure
    from optim.tasks.detection import head_nodes

    _, a, _ = exports
    named = find_head(a)
    assert named.patterns == head_nodes(a) and named.note == ""
    by_name = {n.name for n in a.graph.node if any(re.fullmatch(p, n.name) for p in named.patterns)}
    by_structure = {n.name for n in head_by_structure(a)}
    assert "/head/dfl/conv/Conv" in by_structure and "/head/Sigmoid" in by_structure
    assert not any("/cv" in n for n in by_structure)  # no branch convolution, nothing of the backbone
    assert by_structure <= by_name and len(by_structure) >= 0.8 * len(by_name), sorted(by_name - by_structure)
    anon = onnx.ModelProto()
    anon.CopyFrom(a)
    for i, n in enumerate(anon.graph.node):
        n.name = f"{n.op_type}_{i}"
    head = find_head(anon)
    kept = {n.name for n in anon.graph.node if any(re.fullmatch(p, n.name) for p in head.patterns)}
    assert len(kept) == len(by_structure) and "names no head module" in head.note and "Sigmoid" in head.note
    plain = onnx.helper.make_model(onnx.helper.make_graph(  # no convolution at all: nothing is kept
        [onnx.helper.make_node("Sigmoid", ["x"], ["y"], name="s")], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 5, 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 5, 4])]))
    assert find_head(plain).patterns == () and "nothing kept back" in find_head(plain).note


DET = {
    "name": "det", "task": "detection",
    "model": {"source": "bundled:fashion_detector"},
    "input": {"name": "images", "shape": [3, 96, 96], "batch": {"min": 1, "opt": 2, "max": 8}},
    "preprocess": {"scale": 0.00392156862745098},
    "export": {"output_names": ["output0"], "verify_batches": [1]},
    "calibration": {"data": {"kind": "scenes", "split": "train", "count": 8}, "samples": 8},
    "evaluation": {"data": {"kind": "scenes", "count": 6}},
    "precisions": ["fp32", {"precision": "int8", "target": "onnxruntime"}, "fp16"],
    "quantize": {"method": "max"},
    "check": {"batch_size": 8},
    "bench": {"batch_sizes": [1], "warmup": 0, "iterations": 1,
              "sizes": [{"size": 128, "batch_sizes": [1, 2], "iterations": 1, "warmup": 0}]},
    "backends": ["onnxruntime"],
    "nms": {"max_det": 20, "conf": 0.05},
}


@pytest.mark.slow  # an optim run at two sizes
def test_run_times_every_entry_at_the_other_size(tmp_path):
    from optim.recipe import load_recipe
    from optim.workflow.run import Workflow

    p = tmp_path / "det.yaml"
    p.write_text(yaml.safe_dump(DET))
    wf = Workflow(load_recipe(p), p, out_root=tmp_path / "artifacts")
    wf.run()
    root = tmp_path / "artifacts" / "det"
    assert (root / "sizes" / "128" / "model.fp32.onnx").is_file()
    assert (root / "sizes" / "128" / "model.int8-onnxruntime.onnx").is_file()
    rep = json.loads((root / "report.json").read_text())
    rows = {r["tag"]: r for r in rep["rows"]}
    for tag in ("fp32", "int8-onnxruntime", "fp16"):
        cell = rows[tag]["sizes"]["128"]
        assert cell["throughput_batch"] == 2 and cell["throughput"] > 0 and cell["p50_ms"] > 0
    assert rows["fp32"]["sizes"]["128"]["speedup_vs_fp32"] == 1.0
    md = (root / "report.md").read_text()
    assert "## Speed at other input sizes" in md and "128: img/s b2" in md
    # the detection head's decode was kept in FP32 by default, and the report lists it
    q = json.loads((root / "quantize" / "int8-onnxruntime.json").read_text())
    assert "/head/dfl/conv/Conv" in q["kept"] and "## Kept in high precision" in md
    # every entry also has its decode + NMS deployable, checked against optim's decode
    run_info = json.loads((root / "run.json").read_text())
    assert set(run_info["nms_files"]) == {"fp32", "int8-onnxruntime", "fp16"}
    nms_model = onnx.load(root / run_info["nms_files"]["int8-onnxruntime"])
    assert [o.name for o in nms_model.graph.output] == ["num_dets", "det_boxes", "det_scores", "det_classes"]
    assert "decode + NMS in the graph" in md
    # TensorRT-RTX (where installed) builds every TensorRT entry, its NMS deployable, and both at 128
    from optim.backends.tensorrt_api import installed_version

    rtx = run_info["engines"]["rtx"]
    if installed_version("tensorrt_rtx")[0] is not None:
        for t in ("fp32", "fp16"):
            for name in (f"{t}.rtx", f"{t}.nms.rtx", f"{t}.rtx@128", f"{t}.nms.rtx@128"):
                assert rtx[name].startswith("built (RTX "), (name, rtx)
        assert (root / "sizes" / "128" / "model.fp16.nms.rtx.plan").is_file()
        assert (root / "sizes" / "128" / "model.fp16.nms.onnx").is_file()  # the NMS file made at that size
        assert rtx["int8-onnxruntime.rtx"].startswith("not built: placed for ONNX Runtime")
        assert "- `fp16.nms.rtx@128`: built (RTX " in md
    from optim.verify import problems

    assert problems(root) == []  # every engine and its manifest (sizes/ included) recorded where it is
    # Triton gets the NMS models where the run has them (--raw: the raw-output ones)
    from optim.stages.deploy.triton import Options, plan_repository
    from optim.errors import InputError

    plan = plan_repository(root, Options())
    assert {m.source for m in plan.models} == {f"model.{t}.nms.onnx" for t in ("fp32", "int8-onnxruntime", "fp16")}
    assert [o.name for o in plan.models[0].outputs] == ["num_dets", "det_boxes", "det_scores", "det_classes"]
    assert all(m.source.endswith(".onnx") and ".nms." not in m.source for m in plan_repository(root, Options(nms=False)).models)
    # a recipe without sizes times nothing more and the section is absent
    DET2 = {**DET, "name": "det2", "bench": {**DET["bench"], "sizes": []}, "nms": None}
    p2 = tmp_path / "det2.yaml"
    p2.write_text(yaml.safe_dump(DET2))
    Workflow(load_recipe(p2), p2, out_root=tmp_path / "artifacts").run()
    assert "Speed at other input sizes" not in (tmp_path / "artifacts" / "det2" / "report.md").read_text()
    with pytest.raises(InputError, match="no decode \\+ NMS file"):
        plan_repository(tmp_path / "artifacts" / "det2", Options(nms=True))


@pytest.mark.slow  # modelopt quantization
def test_modelopt_int8_gives_a_concat_one_scale(exports):
    """TensorRT wants the Q/DQ scales meeting at a Concat to match (else it reformats): modelopt puts
    one Q/DQ on a Concat's output, and no Concat of the detector gets inputs with different scales."""
    from onnx import numpy_helper

    from optim.settings import QuantizeSettings
    from optim.stages.quantize.stage import quantize_here
    from optim.tasks.detection import head_nodes

    d, a, _ = exports
    calib = np.random.default_rng(1).random((8, 3, 64, 64), dtype=np.float32)
    quantize_here(d / "m64.onnx", QuantizeSettings(precision="int8", method="max", exclude_nodes=head_nodes(a)),
                  d / "mo64.onnx", calib)
    m = onnx.load(d / "mo64.onnx")
    prod = {o: n for n in m.graph.node for o in n.output}
    init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    concats = [n for n in m.graph.node if n.op_type == "Concat" and not n.name.startswith("/head/")]
    quantized_out = 0
    for n in concats:
        scales = {float(init[prod[i].input[1]]) for i in n.input if i in prod and prod[i].op_type == "DequantizeLinear"}
        assert len(scales) <= 1, n.name
        quantized_out += any(c.op_type == "QuantizeLinear" for c in m.graph.node if n.output[0] in c.input)
    assert quantized_out >= len(concats) - 2  # all but the two that feed a Resize (the upsampling)


def test_engines_at_sizes_build_from_the_carried_over_files(tmp_path):
    """Which engines a TensorRT machine builds at the bench sizes, and from which file (the executor is
    replaced by a recorder: this checks optim's plan, not TensorRT)."""
    from optim.artifacts import Artifact
    from optim.recipe import load_recipe
    from optim.workflow.run import Workflow

    p = tmp_path / "det.yaml"
    p.write_text(yaml.safe_dump(DET))
    wf = Workflow(load_recipe(p), p, out_root=tmp_path / "art")
    calls = []

    def step(stage, name, rel, inputs, settings, **kw):
        calls.append((stage.NAME, name, rel, [a.name for a in inputs], settings))
        return Artifact(name, tmp_path / rel, "0" * 64, kw.get("kind", "onnx"), kw.get("tag", ""))

    wf.ex.step = step
    sized = {"128": {t: Artifact(f"{t}@128", tmp_path / f"{t}.onnx", "1" * 64, "onnx", t)
                     for t in ("fp32", "int8-onnxruntime", "fp16")}}
    assert wf.sizes.engines("int8-onnxruntime", None, sized, {}) == []
    (b_stage, b_name, b_rel, b_in, b_set), (n_stage, n_name, n_rel, n_in, n_set) = calls
    assert (b_stage, b_name, b_rel, b_in) == ("build", "int8-onnxruntime.h100@128",
                                              "sizes/128/model.int8-onnxruntime.h100.plan", ["int8-onnxruntime@128"])
    assert b_set.sample_shape == (3, 128, 128) and b_set.precision is None
    assert (n_stage, n_name) == ("bench", "gpu/bench/128/int8-onnxruntime")
    assert n_set.batch_sizes == (1, 2) and n_set.sizes == ()
    calls.clear()
    wf.sizes.engines("fp16", "fp16", sized, {})  # builder flags: the FP32 file at that size
    assert calls[0][3] == ["fp32@128"] and calls[0][4].precision == "fp16"


def test_report_shows_engine_rows_at_sizes(tmp_path):
    from optim.stages.report import sizes as report_sizes
    from optim.stages.bench import BatchTiming, BenchResult
    from optim.stages.report.stage import Row, _results

    for folder, tag, ms in (("bench/640", "fp32", 50.0), ("gpu/bench/640", "fp32", 2.0),
                            ("gpu/bench/640", "int8-tensorrt", 1.0)):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        res = BenchResult(f"{tag}.plan", tag, "hand-written", {}, [BatchTiming(1, 5, ms, ms, ms, ms, ms, 1000 / ms),
                                                                   BatchTiming(8, 5, 4 * ms, 4 * ms, 4 * ms, 4 * ms,
                                                                               4 * ms, 2000 / ms)])
        (tmp_path / folder / f"{tag}.json").write_text(json.dumps(res.as_dict()))
    rows = [Row("fp32", "fp32", "reference", "m.onnx"), Row("int8-tensorrt", "int8", "tensorrt", "q.onnx")]
    run = {"sizes": ["640"], "gpu": {"not_run": {}}}
    report_sizes.attach(tmp_path, run, rows, _results)
    assert rows[0].sizes["640"]["throughput"] == 40.0 and rows[1].sizes["640"]["why"] == "not run"
    assert rows[1].sizes["640"]["gpu"]["speedup_vs_fp32"] == 2.0
    md = "\n".join(report_sizes.markdown(run, rows))
    assert "| int8 | tensorrt | TensorRT engine (GPU) | 1.00 | 1.00 | 2000.0 | 2.00 |" in md
