"""Recipe loading and validation, and the recipes shipped in recipes/."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from optim.errors import InputError, RecipeError
from optim.recipe import Recipe, apply_overrides, load_data_spec, load_recipe
from optim.settings import BatchRange, Candidate, DataSpec, InputSpec, Preprocess, QuantizeOptions
from optim.tasks.classification import Gates

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "recipes").glob("*.yaml"))

BASE = {
    "name": "tiny",
    "model": {"source": "torchvision:resnet18"},
    "input": {"shape": [3, 8, 8]},
    "calibration": {"data": {"kind": "synthetic", "count": 4}},
    "evaluation": {"data": {"kind": "synthetic", "count": 4, "seed": 1}},
    "precisions": ["fp32", "int8"],
}


def write(tmp_path: Path, recipe: dict | str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(recipe if isinstance(recipe, str) else yaml.safe_dump(recipe))
    return path


def variant(**changes) -> dict:
    r = copy.deepcopy(BASE)
    r.update(changes)
    return r


def load_err(tmp_path: Path, recipe: dict | str) -> str:
    path = write(tmp_path, recipe)
    with pytest.raises(RecipeError) as ei:
        load_recipe(path)
    msg = str(ei.value)
    assert str(path) in msg  # every recipe error names the file
    return msg


# --------------------------------------------------------------------------- shipped recipes

def test_shipped_recipes_exist():
    assert {p.name for p in SHIPPED} >= {"fashion_resnet.yaml", "resnet50.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_recipe_loads(path):
    r = load_recipe(path)
    assert r.name == path.stem
    assert "fp32" in [c.precision for c in r.precisions]
    for c in r.precisions:
        assert r.settings_for(c).precision == c.precision


def test_fashion_resnet_recipe_contents():
    r = load_recipe(REPO / "recipes" / "fashion_resnet.yaml")
    assert r.model.source == "bundled:fashion_resnet"
    assert r.input.shape == (1, 28, 28) and r.preprocess.color == "gray"
    # data spec files are resolved relative to the spec file (calib/), not the cwd
    assert r.calibration.data.kind == "npz"
    assert r.calibration.data.path == (REPO / "calib" / "fashion-mnist" / "train-calib-1024.npz")
    assert r.evaluation.data.kind == "idx"
    assert r.evaluation.data.labels == (REPO / "calib/fashion-mnist/t10k-labels-idx1-ubyte.gz")
    tags = [r.settings_for(c).tag for c in r.precisions]
    assert tags == ["fp32", "int8-tensorrt", "int8-onnxruntime", "fp8-tensorrt", "fp16", "bf16"]
    assert r.gates_for("fp16") == Gates(max_top1_drop=0.2, min_cosine=0.9999)
    assert r.gates_for("int8-tensorrt") == Gates(max_top1_drop=1.0, min_cosine=0.99)


def test_resnet50_recipe_contents():
    r = load_recipe(REPO / "recipes" / "resnet50.yaml")
    assert r.model.source == "torchvision:resnet50"
    assert (r.preprocess.resize, r.preprocess.crop) == (256, 224)
    assert r.calibration.data == DataSpec(kind="synthetic", count=32, seed=1)
    assert r.settings_for(Candidate(precision="int8")).method == "max"


def test_shipped_recipe_loads_from_another_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = load_recipe(REPO / "recipes" / "fashion_resnet.yaml")
    assert r.evaluation.data.path == REPO / "calib" / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"


# --------------------------------------------------------------------------- minimal recipe

def test_minimal_recipe_defaults(tmp_path):
    r = load_recipe(write(tmp_path, BASE))
    assert r.input.batch == BatchRange(min=1, opt=1, max=256)
    assert r.preprocess == Preprocess()
    assert [c.precision for c in r.precisions] == ["fp32", "int8"]
    assert r.precisions[1].target == "tensorrt"
    assert r.quantize == QuantizeOptions() and r.gates == {}


# --------------------------------------------------------------------------- unknown keys

def test_unknown_top_level_key(tmp_path):
    msg = load_err(tmp_path, variant(calibraton={"samples": 3}))
    assert "unknown key 'calibraton'" in msg


@pytest.mark.parametrize("section, value, key, loc", [
    ("bench", {"iterations": 3, "warmpu": 2}, "warmpu", "bench.warmpu"),
    ("input", {"shape": [3, 8, 8], "batch": {"min": 1, "maxx": 4}}, "maxx", "input.batch.maxx"),
    ("preprocess", {"colour": "rgb"}, "colour", "preprocess.colour"),
    ("gates", {"default": {"min_cosin": 0.9}}, "min_cosin", "gates.default.min_cosin"),
    ("quantize", {"methd": "max"}, "methd", "quantize.methd"),
])
def test_unknown_nested_key(tmp_path, section, value, key, loc):
    msg = load_err(tmp_path, variant(**{section: value}))
    assert f"unknown key '{key}'" in msg and loc in msg


def test_unknown_key_in_inline_data_spec(tmp_path):
    msg = load_err(tmp_path, variant(calibration={"data": {"kind": "synthetic", "count": 2,
                                                           "sead": 1}}))
    assert "unknown key 'sead'" in msg and "calibration.data" in msg


# --------------------------------------------------------------------------- precisions

def test_bad_precision_name(tmp_path):
    msg = load_err(tmp_path, variant(precisions=["fp32", "int4"]))
    assert "precisions.1.precision" in msg and "'int8'" in msg


def test_bad_target(tmp_path):
    msg = load_err(tmp_path, variant(precisions=["fp32", {"precision": "int8", "target": "tvm"}]))
    assert "precisions.1.target" in msg


def test_missing_fp32(tmp_path):
    msg = load_err(tmp_path, variant(precisions=["int8", "fp16"]))
    assert "precisions must include fp32" in msg


@pytest.mark.parametrize("precisions", [
    ["fp32", "fp16", "fp16"],
    ["fp32", "int8", {"precision": "int8", "target": "tensorrt"}],
    ["fp32", "fp32"],
])
def test_duplicated_precision(tmp_path, precisions):
    msg = load_err(tmp_path, variant(precisions=precisions))
    assert "precisions repeat an entry" in msg


def test_same_precision_two_targets_is_fine(tmp_path):
    r = load_recipe(write(tmp_path, variant(precisions=[
        "fp32", {"precision": "int8", "target": "tensorrt"},
        {"precision": "int8", "target": "onnxruntime"}])))
    assert [r.settings_for(c).tag for c in r.precisions] == ["fp32", "int8-tensorrt",
                                                            "int8-onnxruntime"]


def test_missing_required_sections(tmp_path):
    r = variant()
    del r["precisions"], r["model"]
    msg = load_err(tmp_path, r)
    assert "missing key model" in msg and "missing key precisions" in msg


# --------------------------------------------------------------------------- other validators

@pytest.mark.parametrize("batch, fragment", [
    ({"min": 8, "opt": 4, "max": 16}, "min <= opt <= max, got 8/4/16"),
    ({"min": 1, "opt": 32, "max": 16}, "got 1/32/16"),
    ({"min": 0, "opt": 1, "max": 1}, "input.batch.min"),
])
def test_bad_batch_range(tmp_path, batch, fragment):
    msg = load_err(tmp_path, variant(input={"shape": [3, 8, 8], "batch": batch}))
    assert fragment in msg and "input.batch" in msg


@pytest.mark.parametrize("shape", [[], [3, 0, 8], [3, -1, 8]])
def test_bad_input_shape(tmp_path, shape):
    msg = load_err(tmp_path, variant(input={"shape": shape}))
    assert "input.shape" in msg and "positive" in msg


def test_zero_std(tmp_path):
    msg = load_err(tmp_path, variant(preprocess={"std": [0.5, 0.0, 0.5]}))
    assert "preprocess.std" in msg and "non-zero" in msg


def test_bad_name(tmp_path):
    msg = load_err(tmp_path, variant(name="has space/slash"))
    assert msg.count("name") >= 1 and "pattern" in msg


def test_gates_for_unknown_precision(tmp_path):
    msg = load_err(tmp_path, variant(gates={"fp8-tensorrt": {"min_cosine": 0.9}}))
    assert "gates names 'fp8-tensorrt'" in msg


def test_gates_may_name_a_bare_precision_not_in_recipe(tmp_path):
    r = load_recipe(write(tmp_path, variant(gates={"bf16": {"min_cosine": 0.9}})))
    assert r.gates["bf16"].min_cosine == 0.9


@pytest.mark.parametrize("data, fragment", [
    ({"kind": "synthetic"}, "synthetic data needs a 'count'"),
    ({"kind": "npz"}, "data of kind 'npz' needs a 'path'"),
    ({"kind": "csv", "path": "x.csv"}, "kind"),
    ({"kind": "synthetic", "count": 0}, "count"),
])
def test_bad_data_spec(tmp_path, data, fragment):
    msg = load_err(tmp_path, variant(evaluation={"data": data}))
    assert fragment in msg and "evaluation.data" in msg


def test_export_opset_out_of_range(tmp_path):
    msg = load_err(tmp_path, variant(export={"opset": 13}))
    assert "export.opset" in msg


# --------------------------------------------------------------------------- YAML / file problems

def test_yaml_syntax_error(tmp_path):
    msg = load_err(tmp_path, "name: x\ninput: {shape: [1, 2\nmodel: {source: a:b}\n")
    assert "not valid YAML" in msg and "line" in msg


def test_yaml_not_a_mapping(tmp_path):
    msg = load_err(tmp_path, "- just\n- a list\n")
    assert "must be a YAML mapping" in msg


def test_empty_yaml(tmp_path):
    assert "must be a YAML mapping" in load_err(tmp_path, "")


def test_binary_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes(b"\xff\xfe\xfa\x00\x81")
    with pytest.raises(RecipeError, match="r.yaml"):
        load_recipe(path)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="file not found") as ei:
        load_recipe(tmp_path / "missing.yaml")
    assert "missing.yaml" in str(ei.value)


# --------------------------------------------------------------------------- relative paths

def test_data_spec_file_resolved_relative_to_recipe(tmp_path, monkeypatch):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "cal.yaml").write_text(
        "kind: npy\npath: data/x.npy\nlabels: data/y.npy\n")
    rpath = write(tmp_path, variant(calibration={"data": "../specs/cal.yaml", "samples": 8}),
                  name="recipes/r.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = load_recipe(rpath)
    assert r.calibration.samples == 8
    assert r.calibration.data.kind == "npy"
    assert r.calibration.data.path == (tmp_path / "specs" / "data" / "x.npy").resolve()
    assert r.calibration.data.labels == (tmp_path / "specs" / "data" / "y.npy").resolve()


def test_inline_data_path_resolved_relative_to_recipe(tmp_path, monkeypatch):
    rpath = write(tmp_path, variant(evaluation={"data": {"kind": "folder", "path": "imgs"}}),
                  name="recipes/r.yaml")
    monkeypatch.chdir(tmp_path)
    r = load_recipe(Path("recipes/r.yaml"))
    assert r.evaluation.data.path == (tmp_path / "recipes" / "imgs").resolve()


def test_absolute_data_path_kept(tmp_path):
    absolute = tmp_path / "abs" / "d.npz"
    r = load_recipe(write(tmp_path, variant(evaluation={"data": {"kind": "npz",
                                                                 "path": str(absolute)}}),
                          name="recipes/r.yaml"))
    assert r.evaluation.data.path == absolute


def test_weights_resolved_relative_to_recipe(tmp_path, monkeypatch):
    rpath = write(tmp_path, variant(model={"source": "torchvision:resnet18",
                                           "weights": "w/r18.safetensors"}), name="recipes/r.yaml")
    monkeypatch.chdir(tmp_path)
    assert load_recipe(rpath).model.weights == (tmp_path / "recipes" / "w" / "r18.safetensors")


def test_missing_data_spec_file(tmp_path):
    with pytest.raises(RecipeError, match="file not found") as ei:
        load_recipe(write(tmp_path, variant(calibration={"data": "nope.yaml"})))
    assert "nope.yaml" in str(ei.value)


def test_data_spec_file_with_bad_key_names_spec_file(tmp_path):
    (tmp_path / "cal.yaml").write_text("kind: synthetic\ncount: 3\nfoo: 1\n")
    with pytest.raises(RecipeError) as ei:
        load_recipe(write(tmp_path, variant(calibration={"data": "cal.yaml"})))
    assert "unknown key 'foo'" in str(ei.value) and "cal.yaml" in str(ei.value)


def test_load_data_spec_inline(tmp_path):
    spec = load_data_spec({"kind": "idx", "path": "a-idx3", "labels": "b-idx1"}, tmp_path, "here")
    assert spec.path == (tmp_path / "a-idx3").resolve()
    assert spec.labels == (tmp_path / "b-idx1").resolve()


# --------------------------------------------------------------------------- gates_for / settings_for

GATED = variant(
    precisions=["fp32", {"precision": "fp8", "target": "tensorrt"},
                {"precision": "fp8", "target": "onnxruntime"}, "fp16"],
    gates={
        "default": {"max_top1_drop": 1.0, "min_cosine": 0.99},
        "fp8": {"min_cosine": 0.995, "min_top1_agreement": 97.0},
        "fp8-tensorrt": {"max_top1_drop": 0.5},
        "fp16": {"max_abs_error": 0.01},
    },
)


@pytest.mark.parametrize("tag, expected", [
    ("fp8-tensorrt", Gates(max_top1_drop=0.5, min_cosine=0.995, min_top1_agreement=97.0)),
    ("fp8-onnxruntime", Gates(max_top1_drop=1.0, min_cosine=0.995, min_top1_agreement=97.0)),
    ("fp16", Gates(max_top1_drop=1.0, min_cosine=0.99, max_abs_error=0.01)),
    ("fp32", Gates(max_top1_drop=1.0, min_cosine=0.99)),
])
def test_gates_for_merges_default_precision_and_tag(tmp_path, tag, expected):
    r = load_recipe(write(tmp_path, GATED))
    assert r.gates_for(tag) == expected


def test_gates_for_without_gates_is_empty(tmp_path):
    r = load_recipe(write(tmp_path, BASE))
    assert r.gates_for("int8-tensorrt") == Gates()


def test_settings_for_carries_shared_quantize_options(tmp_path):
    r = load_recipe(write(tmp_path, variant(
        precisions=["fp32", {"precision": "int8", "target": "onnxruntime"}, "fp8"],
        quantize={"method": "percentile", "percentile": 99.9, "exclude_op_types": ["Resize"],
                  "exclude_nodes": ["/fc/Gemm"], "high_precision": "fp16"})))
    int8 = r.settings_for(r.precisions[1])
    fp8 = r.settings_for(r.precisions[2])
    for s in (int8, fp8):
        assert s.method == "percentile" and s.percentile == 99.9
        assert s.exclude_op_types == ("Resize",) and s.exclude_nodes == ("/fc/Gemm",)
        assert s.high_precision == "fp16"
    assert (int8.precision, int8.target, int8.tag) == ("int8", "onnxruntime", "int8-onnxruntime")
    assert (fp8.precision, fp8.target, fp8.tag) == ("fp8", "tensorrt", "fp8-tensorrt")


def test_precision_under_quantize_is_an_unknown_key(tmp_path):
    with pytest.raises(RecipeError, match="unknown key 'precision' at quantize.precision"):
        load_recipe(write(tmp_path, variant(quantize={"precision": "fp8"})))


def test_settings_for_without_quantize_uses_defaults(tmp_path):
    r = load_recipe(write(tmp_path, BASE))
    s = r.settings_for(Candidate(precision="fp16"))
    assert s.method == "entropy" and s.tag == "fp16" and s.precision == "fp16"


def test_recipe_is_frozen(tmp_path):
    r = load_recipe(write(tmp_path, BASE))
    with pytest.raises(Exception, match="frozen"):
        r.name = "other"


def test_input_spec_direct_validation():
    assert InputSpec(shape=(1, 2)).batch.max == 256
    with pytest.raises(ValueError, match="positive"):
        InputSpec(shape=(1, 0))


def test_recipe_model_validate_directly():
    r = Recipe.model_validate(variant())
    assert r.name == "tiny" and r.calibration.data.count == 4


def test_data_spec_file_that_is_a_bare_string(tmp_path):
    (tmp_path / "cal.yaml").write_text("cal.yaml\n")
    with pytest.raises(RecipeError, match="cal.yaml"):
        load_recipe(write(tmp_path, variant(calibration={"data": "cal.yaml"})))


def test_tuning_settings_and_budget_per_precision(tmp_path):
    r = load_recipe(write(tmp_path, variant(
        precisions=["fp32", "int8", {"precision": "int8", "target": "onnxruntime"}, "fp8"],
        tuning={"max_drop": {"int8": 0.3, "fp8-tensorrt": 0.2}, "data": {"kind": "photos", "count": 3}},
        calibration_study={"methods": ["max"], "sizes": [2]})))
    assert r.tuned_tags() == ["int8-tensorrt", "int8-onnxruntime", "fp8-tensorrt"]  # every placement
    assert r.tuning.budget_for("int8-tensorrt") == 0.3 and r.tuning.budget_for("fp8-tensorrt") == 0.2
    assert r.tuning.data.kind == "photos" and r.calibration_study.sizes == (2,)


@pytest.mark.parametrize("tuning,fragment", [
    ({"max_drop": -0.1}, "max_drop must be >= 0"),
    ({"max_drop": {"int8": -1}}, "max_drop must be >= 0"),
    ({"precisions": ["fp8"]}, "tuning applies to"),
    ({"budget": 1}, "unknown key 'budget'"),
    ({"metric": "map"}, "tuning.metric 'map' is not a budget metric of task classification: use auto, top1, agreement"),
])
def test_bad_tuning(tmp_path, tuning, fragment):
    assert fragment in load_err(tmp_path, variant(tuning=tuning))


def test_fused_preprocess_settings(tmp_path):
    r = load_recipe(write(tmp_path, variant(fused_preprocess={"frame": [32, 40], "channel_order": "BGR"},
                                            preprocess={"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]})))
    op = r.preprocess_op()
    assert (op.out_h, op.out_w, op.channel_order, op.mean) == (8, 8, "BGR", (0.5, 0.4, 0.3))
    assert load_recipe(write(tmp_path, BASE, "plain.yaml")).preprocess_op() is None
    assert "frame must be a positive" in load_err(tmp_path, variant(fused_preprocess={"frame": [0, 4]}))
    assert "1 or 3 preprocess mean/std" in load_err(tmp_path, variant(
        fused_preprocess={"frame": [8, 8]}, preprocess={"mean": [0.1, 0.2], "std": [1, 1]}))


# --------------------------------------------------------------------------- error order, values, hints

def test_gates_under_check_is_refused_with_a_hint(tmp_path):
    msg = load_err(tmp_path, variant(check={"batch_size": 8, "gates": {"default": {"min_cosine": 0.9}}}))
    assert "unknown key 'gates' at check.gates" in msg and "top-level 'gates:' key" in msg


def test_misspelt_key_is_named_before_missing_keys(tmp_path):
    msg = load_err(tmp_path, {"name": "x", "modle": "torchvision:resnet18"})
    assert "unknown key 'modle' at modle (value 'torchvision:resnet18')" in msg
    assert msg.index("modle") < msg.index("missing key model")


def test_bad_precision_value_is_echoed_before_missing_keys(tmp_path):
    r = variant(precisions=["int3"])
    del r["model"]
    msg = load_err(tmp_path, r)
    assert ("precisions.0.precision: Input should be 'fp32', 'int8', 'fp8', 'fp16' or 'bf16' (got 'int3')"
            in msg)
    assert msg.index("int3") < msg.index("missing key model")


def test_long_values_are_shortened_in_errors(tmp_path):
    msg = load_err(tmp_path, variant(name="a b" * 100, modle={"source": "x" * 200}))
    assert "(got 'a ba b" in msg and "(value {'source': 'xxx" in msg
    assert "a b" * 25 not in msg and "x" * 60 not in msg and "\n" not in msg


# --------------------------------------------------------------------------- apply_overrides

FASHION = REPO / "recipes" / "fashion_resnet.yaml"


def tags_of(r: Recipe) -> list[str]:
    return [r.settings_for(c).tag for c in r.precisions]


def test_apply_overrides_precision_name_keeps_every_entry_of_it():
    r = apply_overrides(load_recipe(FASHION), precisions="int8")
    assert tags_of(r) == ["fp32", "int8-tensorrt", "int8-onnxruntime"]


@pytest.mark.parametrize("text, expected", [
    ("int8-tensorrt", ["fp32", "int8-tensorrt"]),
    (" fp16, int8-onnxruntime ", ["fp32", "int8-onnxruntime", "fp16"]),
    ("fp8,bf16", ["fp32", "fp8-tensorrt", "bf16"]),
    ("int8,int8-tensorrt", ["fp32", "int8-tensorrt", "int8-onnxruntime"]),
    ("fp32", ["fp32"]),
])
def test_apply_overrides_tags_and_precisions(text, expected):
    assert tags_of(apply_overrides(load_recipe(FASHION), precisions=text)) == expected


@pytest.mark.parametrize("text", ["int3", "int8,int3", "int8-cuda"])
def test_apply_overrides_unknown_precision_name(text):
    with pytest.raises(InputError) as ei:
        apply_overrides(load_recipe(FASHION), precisions=text)
    msg = str(ei.value)
    bad = text.split(",")[-1]
    assert f"'{bad}'" in msg and "int8-onnxruntime" in msg and "fp8" in msg and "\n" not in msg


def test_apply_overrides_other_fields():
    r = load_recipe(FASHION)
    assert apply_overrides(r) is r
    o = apply_overrides(r, weights=Path("w.pt"), eval_samples=10, calib_samples=20, bench_iterations=3)
    assert o.model.weights == Path("w.pt").resolve() and o.model.source == r.model.source
    assert (o.evaluation.samples, o.calibration.samples, o.bench.iterations) == (10, 20, 3)
    assert o.calibration.data == r.calibration.data and tags_of(o) == tags_of(r)
    assert r.evaluation.samples is None  # the original is left as it was


# --------------------------------------------------------------------------- optim.settings

def test_settings_reexported_from_recipe():
    import optim.recipe
    import optim.settings

    for name in optim.settings.__all__:
        assert getattr(optim.recipe, name) is getattr(optim.settings, name), name


def test_settings_does_not_import_recipe():
    code = "import sys, optim.settings; assert 'optim.recipe' not in sys.modules, 'optim.recipe imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# --------------------------------------------------------------------------- the task decides
def test_unknown_task_is_named(tmp_path):
    msg = load_err(tmp_path, variant(task="segmentation"))
    assert "unknown task 'segmentation'; known: classification" in msg


def test_gates_are_the_tasks_gates(tmp_path):
    """A task registered elsewhere brings its own gates: the recipe validates them with its model."""
    from pydantic import BaseModel, ConfigDict

    from optim.tasks import register_task, unregister_task
    from optim.tasks.classification import Classification

    class CountGates(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        max_count_error: float | None = None

    class Counting(Classification):
        name = "counting"
        gates_model = CountGates

    register_task(Counting)
    try:
        r = load_recipe(write(tmp_path, variant(task="counting", gates={"default": {"max_count_error": 0.5},
                                                                        "int8": {"max_count_error": 0.2}})))
        assert r.gates_for("int8-tensorrt") == CountGates(max_count_error=0.2)
        assert r.gates_for("fp16") == CountGates(max_count_error=0.5)
        msg = load_err(tmp_path, variant(task="counting", gates={"default": {"min_cosine": 0.9}}))
        assert "unknown key 'min_cosine' at gates.default.min_cosine" in msg
    finally:
        unregister_task("counting")


@pytest.mark.parametrize("backends,fragment", [
    (["onnxruntime", "tflite"], "backends names ['tflite']; CPU backends are onnxruntime, openvino"),
    ([], "backends names nothing"),
])
def test_bad_cpu_backends(tmp_path, backends, fragment):
    assert fragment in load_err(tmp_path, variant(backends=backends))


def test_cpu_backends_default_to_every_installed_one(tmp_path):
    from optim.backends import cpu

    r = load_recipe(write(tmp_path, variant(backends=["openvino", "onnxruntime"])))
    assert r.backends == ("openvino", "onnxruntime")
    assert load_recipe(write(tmp_path, BASE)).backends is None
    assert cpu.installed()[0] == "onnxruntime"
    assert cpu.split("int8-tensorrt@openvino") == ("int8-tensorrt", "openvino") and cpu.split("fp16")[1] == "onnxruntime"


def test_cpu_routes(tmp_path):
    from optim.artifacts import Artifact
    from optim.backends import cpu

    fp32, bf16, int8 = (Artifact(n, tmp_path / f"model.{n}.onnx", n, "onnx", n) for n in ("fp32", "bf16", "int8-tensorrt"))
    assert cpu.route("onnxruntime", "bf16", bf16, fp32) == (bf16, "auto")
    src, backend = cpu.route("openvino", "bf16", bf16, fp32)
    assert (src.path, src.tag, backend) == (fp32.path, "bf16", "openvino-bf16")  # FP32 file, BF16 inference
    assert cpu.route("openvino", "int8-tensorrt", int8, fp32) == (int8, "openvino")  # the Q/DQ file as it is
