"""The run folder as a typed contract (optim.runfolder): entry names, paths, run.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optim.errors import InputError, OptimError
from optim.recipe import load_recipe
from optim.runfolder import NOBUDGET, NOT_RUN, Entry, RunInfo, RunLayout
from optim.stages.report.stage import NOT_RUN as REPORT_NOT_RUN, collect, write_report
from tests.helpers.runs import bench_record as _bench, check_record as _check, write_json as _write

RECIPES = sorted(Path(__file__).resolve().parents[1].glob("recipes/*.yaml"))


def _recipe_tags() -> list[str]:
    tags = []
    for p in RECIPES:
        r = load_recipe(p)
        tags += [r.settings_for(c).tag for c in r.precisions]
    return sorted(set(tags))


def test_recipes_use_the_tags_entry_knows():
    tags = _recipe_tags()
    assert {"fp32", "fp16", "bf16", "int8-tensorrt", "int8-onnxruntime", "fp8-tensorrt"} <= set(tags)


@pytest.mark.parametrize("tag", _recipe_tags())
def test_entry_round_trips_every_recipe_tag(tag):
    e = Entry.parse(tag)
    assert e.tag == tag and e.budget and e.backend == "onnxruntime" and e.size is None
    assert e.result_name == tag and Entry.parse(e.result_name) == e
    nob = e.replace(budget=False)
    assert nob.tag == tag + NOBUDGET and Entry.parse(nob.tag) == nob and nob.comparison
    assert nob.base_tag == tag
    ov = e.replace(backend="openvino")
    assert ov.result_name == f"{tag}@openvino" and Entry.parse(ov.result_name) == ov
    ovn = nob.replace(backend="openvino")
    assert Entry.parse(f"{tag}-nobudget@openvino") == ovn
    for size in ("640", "480x640"):
        z = ov.replace(size=size)
        assert z.sized_name == f"{size}/{tag}@openvino" and Entry.parse(z.sized_name) == z
        assert e.replace(size=size).step_name == f"{tag}@{size}" and Entry.parse(f"{tag}@{size}").size == size


@pytest.mark.parametrize("tag,precision,target,label", [
    ("fp32", "fp32", None, "reference"), ("fp16", "fp16", None, "any"), ("bf16", "bf16", None, "any"),
    ("int8-tensorrt", "int8", "tensorrt", "tensorrt"), ("int8-onnxruntime", "int8", "onnxruntime", "onnxruntime"),
    ("fp8-tensorrt", "fp8", "tensorrt", "tensorrt"),
    ("int8-tensorrt-nobudget", "int8", "tensorrt", "tensorrt-nobudget"),
    ("cand", "cand", None, "any"),  # a tag optim does not make (tests' toy tasks) parses as the report read it
])
def test_entry_fields(tag, precision, target, label):
    e = Entry.parse(tag)
    assert (e.precision, e.target, e.target_label) == (precision, target, label)
    assert e.cpu_placed == (target == "onnxruntime")


def test_entry_from_settings_matches_the_settings_tag():
    for p in RECIPES:
        r = load_recipe(p)
        for c in r.precisions:
            qs = r.settings_for(c)
            assert Entry.of(qs).tag == qs.tag
            assert Entry.of(qs, budget=False).tag == qs.tag + NOBUDGET


@pytest.mark.parametrize("bad", ["", "fp16@", "big/fp16", "@openvino"])
def test_entry_refuses_what_is_not_a_name(bad):
    with pytest.raises(InputError):
        Entry.parse(bad)


def test_constants_are_defined_once():
    from optim.backends import cpu
    from optim.stages.report import sizes as report_sizes

    assert NOBUDGET == "-nobudget" and NOT_RUN == REPORT_NOT_RUN == report_sizes.NOT_RUN == "not run"
    assert cpu.result_name("int8-tensorrt", "openvino") == "int8-tensorrt@openvino"
    assert cpu.split("int8-tensorrt-nobudget@openvino") == ("int8-tensorrt-nobudget", "openvino")
    assert cpu.split("fp16") == ("fp16", cpu.PRIMARY)


def test_layout_paths(tmp_path):
    lay = RunLayout(tmp_path)
    ov = Entry.parse("int8-tensorrt@openvino")
    assert lay.model("fp32") == "model.fp32.onnx"
    assert lay.model("fp16", nms=True) == "model.fp16.nms.onnx"
    assert lay.model("fp16", frames=True) == "model.fp16.frames.onnx"
    assert lay.model("fp16", engine="h100") == "model.fp16.h100.plan"
    assert lay.model("fp16", nms=True, engine="rtx", size="640") == "sizes/640/model.fp16.nms.rtx.plan"
    assert lay.model("int8-tensorrt", size="1280") == "sizes/1280/model.int8-tensorrt.onnx"
    assert lay.variant("model.fp16.onnx", "nms") == "model.fp16.nms.onnx"
    assert lay.check(ov) == "check/int8-tensorrt@openvino.json"
    assert lay.check("fp16", gpu=True) == "gpu/check/fp16.json"
    assert lay.bench(ov) == "bench/int8-tensorrt@openvino.json"
    assert lay.bench(ov.replace(size="640")) == "bench/640/int8-tensorrt@openvino.json"
    assert lay.bench("fp16", size="640", gpu=True) == "gpu/bench/640/fp16.json"
    assert lay.quantize(ov) == "quantize/int8-tensorrt.json" and lay.tune("int8-tensorrt") == "tune/int8-tensorrt.json"
    assert lay.gpu_build("fp16") == "gpu/build/fp16.json"
    assert lay.engine_record("rtx", "fp16.rtx") == "engines/rtx/fp16.rtx.json"
    assert [lay.report(k) for k in ("md", "html", "json", "png", "sensitivity.png")] == [
        "report.md", "report.html", "report.json", "report.png", "report.sensitivity.png"]
    assert (RunLayout.RUN_JSON, RunLayout.MANIFEST, RunLayout.STUDY) == (
        "run.json", "manifest.json", "study/calibration.json")
    assert lay.path("run.json") == tmp_path / "run.json" and lay / "check/fp16.json" == tmp_path / "check/fp16.json"
    assert lay.record_name(lay.check("fp16")) == "check/fp16"
    assert lay.row_files(Entry("fp16"), ["640"], primary=False) == [
        "check/fp16.json", "bench/fp16.json", "quantize/fp16.json", "tune/fp16.json", "bench/640/fp16.json"]


def test_engine_names_and_the_files_beside_an_engine():
    e = Entry.parse("int8-tensorrt")
    assert e.engine_name("h100") == "int8-tensorrt.h100"
    assert e.engine_name("rtx", nms=True) == "int8-tensorrt.nms.rtx"
    at = e.replace(size="640")
    assert at.engine_name("rtx") == "int8-tensorrt.rtx@640"
    assert at.engine_name("h100", nms=True) == "int8-tensorrt.nms.h100@640"
    assert Entry.parse("fp16").replace(budget=False).engine_name("h100") == "fp16-nobudget.h100"
    # the engine's name is its file name in the run folder, without model. and .plan (and the size folder)
    for entry, nms in ((e, False), (e, True), (at, False), (at, True)):
        rel = RunLayout.model(entry, nms=nms, engine="rtx")
        file_name = rel.rsplit("/", 1)[-1]
        assert entry.replace(size=None).engine_name("rtx", nms=nms) == file_name[len("model."):-len(".plan")]
    engine = RunLayout.model(at, engine="rtx")
    assert RunLayout.engine_manifest(engine) == "sizes/640/model.int8-tensorrt.rtx.plan.json"
    assert RunLayout.engine_layers(engine) == "sizes/640/model.int8-tensorrt.rtx.layers.json"
    assert RunLayout.engine_manifest("model.fp16.h100.plan") == "model.fp16.h100.plan.json"


@pytest.mark.parametrize("rel", ["model.fp16.onnx", "sizes/640/model.int8-tensorrt.onnx"])
def test_made_from_reads_variant_backwards(rel):
    for kind in ("frames", "nms"):
        assert RunLayout.made_from(RunLayout.variant(rel, kind), kind) == rel
    assert RunLayout.made_from(rel, "frames") is None
    assert RunLayout.made_from(RunLayout.variant(rel, "nms"), "frames") is None


def test_settings_name_entries_through_entry():
    from optim.settings import QuantizeSettings, TuningSettings

    assert QuantizeSettings(precision="fp16", target="onnxruntime").tag == "fp16"
    assert QuantizeSettings(precision="int8", target="onnxruntime").tag == "int8-onnxruntime"
    tuning = TuningSettings(max_drop={"int8": 0.5, "fp8-tensorrt": 0.1})
    assert tuning.budget_for("int8-onnxruntime") == 0.5 and tuning.budget_for("int8-tensorrt-nobudget") == 0.5
    assert tuning.budget_for("fp8-tensorrt") == 0.1 and tuning.budget_for("fp16") is None


OLD_RUN_JSON = {  # a run.json as optim wrote it before batch/input were recorded
    "recipe": "demo", "description": "", "task": "classification", "tags": ["fp32", "int8-tensorrt"],
    "files": {"fp32": "model.fp32.onnx", "int8-tensorrt": "model.int8-tensorrt.onnx"},
    "accuracy_meaningful": True, "accuracy_reason": "", "notes": ["a note"], "host": {"cpu": "x", "cpu_count": 2},
    "tools": {"onnx": "1.17"}, "gpu": {"target": "h100", "not_run": {"fp32": "no GPU"}},
    "backends": ["onnxruntime"], "cpu_not_run": {}, "sizes": [], "size_not_run": {}, "nms_files": {}, "nms": None,
    "engines": {}, "generated": "2026-12-01T00:00:00+0000", "manifest": "manifest.json"}


def test_runinfo_reads_an_older_run_json(tmp_path):
    _write(tmp_path / "run.json", OLD_RUN_JSON)
    info = RunInfo.read(tmp_path / "run.json")
    assert info.batch is None and info.input is None and info.families == ["onnxruntime"]
    assert info.gpu.not_run == {"fp32": "no GPU"} and info.deployable_tags() == ["fp32", "int8-tensorrt"]
    dumped = info.to_json()
    assert {k: dumped[k] for k in OLD_RUN_JSON} == OLD_RUN_JSON  # every key and value kept, in order
    assert list(dumped)[:len(OLD_RUN_JSON)] == list(OLD_RUN_JSON)
    assert RunInfo.from_data({"tags": ["fp32"]}).task == "classification"  # a hand-made one: defaults
    merged = RunInfo.from_data({**OLD_RUN_JSON, "gpu": {"target": "h100", "not_run": {}, "merged_from": {"a": "b"}},
                                "later_key": 1}).to_json()
    assert merged["gpu"]["merged_from"] == {"a": "b"} and merged["later_key"] == 1  # unknown keys are kept


def test_runinfo_records_batch_and_input(tmp_path):
    info = RunInfo.from_data({**OLD_RUN_JSON, "batch": {"min": 1, "opt": 64, "max": 256},
                              "input": {"name": "input", "shape": [1, 28, 28]}})
    assert info.batch.triple() == (1, 64, 256) and info.input.shape == (1, 28, 28)
    info.save(tmp_path / "run.json")
    back = json.loads((tmp_path / "run.json").read_text())
    assert back["batch"] == {"min": 1, "opt": 64, "max": 256} and back["input"] == {"name": "input", "shape": [1, 28, 28]}


@pytest.mark.parametrize("text,words", [
    ("not json", "not a readable run.json"),
    ("[1, 2]", "a JSON object expected"),
    (json.dumps({**OLD_RUN_JSON, "tags": 5}), "tags:"),
    (json.dumps({**OLD_RUN_JSON, "batch": {"min": 1}}), "batch.opt:"),
])
def test_runinfo_refuses_a_bad_run_json_on_one_line(tmp_path, text, words):
    (tmp_path / "run.json").write_text(text)
    with pytest.raises(OptimError) as err:
        RunInfo.read(tmp_path / "run.json")
    assert isinstance(err.value, InputError) and err.value.exit_code == 2
    msg = str(err.value)
    assert words in msg and "\n" not in msg and str(tmp_path / "run.json") in msg


def test_report_refuses_a_bad_run_json(tmp_path):
    run = _demo_run(tmp_path)
    _write(run / "run.json", {**OLD_RUN_JSON, "notes": "not a list"})
    with pytest.raises(InputError, match="notes:"):
        collect(run)


def _demo_run(tmp_path: Path) -> Path:
    d = tmp_path / "run"
    tags = ["fp32", "int8-onnxruntime", "int8-tensorrt", "int8-tensorrt-nobudget", "fp16"]
    _write(d / "run.json", {**OLD_RUN_JSON, "tags": tags, "files": {t: f"model.{t}.onnx" for t in tags}})
    for t in tags:
        (d / f"model.{t}.onnx").write_bytes(b"x" * 1024)
        _write(d / f"check/{t}.json", _check(t, 90.0, 0.0, 0.999))
        _write(d / f"bench/{t}.json", _bench(t, 1.0, 50.0))
    scheme = {"format": "u8s8_7bit", "cpu_class": "x86-64 AVX2", "label": "uint8 activations x int8 weights (7-bit)",
              "reason": "no VNNI"}
    _write(d / "quantize/int8-onnxruntime.json", {
        "path": "model.int8-onnxruntime.onnx", "tag": "int8-onnxruntime", "precision": "int8", "target": "onnxruntime",
        "tool": "onnxruntime.quantization", "method": "entropy", "calibration_samples": 512,
        "coverage": {"quantized": 10, "eligible": 10}, "seconds": 1.0, "int8_scheme": scheme})
    _write(d / "quantize/int8-tensorrt-nobudget.json", {
        "path": "model.int8-tensorrt-nobudget.onnx", "tag": "int8-tensorrt-nobudget", "precision": "int8",
        "target": "tensorrt", "tool": "modelopt", "method": "max", "calibration_samples": 256,
        "coverage": {"quantized": 10, "eligible": 10}, "seconds": 1.0})
    _write(d / "tune/int8-tensorrt.json", {"coverage": {"quantized": 8, "eligible": 10}})
    _write(d / "quantize/fp16.json", {
        "path": "model.fp16.onnx", "tag": "fp16", "precision": "fp16", "target": "tensorrt",
        "tool": "onnxconverter-common", "method": None, "calibration_samples": 0, "coverage": None, "seconds": 1.0})
    return d


def test_report_shows_quantizer_method_samples_and_scheme(tmp_path):
    run = _demo_run(tmp_path)
    info, rows = collect(run)
    assert isinstance(info, RunInfo)
    by = {r.tag: r for r in rows}
    ort = by["int8-onnxruntime"]
    assert (ort.quantizer, ort.calibration_method, ort.calibration_samples, ort.int8_format) == (
        "onnxruntime.quantization", "entropy", 512, "u8s8_7bit")
    trt = by["int8-tensorrt"]  # the budgeted model: its quantizer is the -nobudget model's, coverage the budget's
    assert (trt.quantizer, trt.calibration_method, trt.calibration_samples, trt.coverage) == ("modelopt", "max", 256, "8/10")
    assert by["int8-tensorrt-nobudget"].target == "tensorrt-nobudget"
    fp16 = by["fp16"]
    assert fp16.quantizer == "onnxconverter-common" and fp16.calibration_method is None and fp16.int8_format is None
    assert by["fp32"].quantizer is None
    paths = write_report(run)
    md = paths["md"].read_text()
    assert "| quantizer | calibration (method, samples) | INT8 scheme |" in md
    assert "| onnxruntime.quantization | entropy, 512 | u8s8_7bit |" in md
    assert "| modelopt | max, 256 | - |" in md and "| onnxconverter-common | - | - |" in md
    assert "made by onnxruntime.quantization, calibrated with entropy on 512 samples" in md
    rep = {r["tag"]: r for r in json.loads(paths["json"].read_text())["rows"]}
    assert rep["int8-onnxruntime"]["quantizer"] == "onnxruntime.quantization"
    assert rep["int8-onnxruntime"]["calibration_method"] == "entropy"
    assert rep["int8-onnxruntime"]["calibration_samples"] == 512 and rep["int8-onnxruntime"]["int8_format"] == "u8s8_7bit"
    assert rep["int8-onnxruntime"]["int8_scheme"].startswith("uint8 activations x int8 weights (7-bit)")


def test_not_built_reason_of_a_cpu_placed_comparison():
    """int8-onnxruntime-nobudget is named as the comparison it is (as before optim.runfolder)."""
    from optim.workflow.run import Workflow

    wf = Workflow.__new__(Workflow)
    assert wf.not_built_reason("int8-onnxruntime-nobudget").startswith("the entry without its budget")
    assert wf.not_built_reason("int8-tensorrt-nobudget").startswith("the entry without its budget")
    assert wf.not_built_reason("int8-onnxruntime").startswith("placed for ONNX Runtime on CPU")
    assert wf.not_built_reason("fp16") == "not in build.precisions"
