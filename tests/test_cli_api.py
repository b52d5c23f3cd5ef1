"""``optim export``, ``optim quantize`` (with and without ``--max-drop``) and ``optim build`` are the
Python API (``optim.api``) behind a command line: the same files and results from both, and the
same errors, named as options by the command and as keywords by the API."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.cli import invoke
from tests.helpers.models import TINY_SHAPE


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ok(*args) -> str:
    """optim in this process, which must succeed: what it printed."""
    code, text, exc = invoke(*args)
    assert code == 0 and exc is None, (text, exc)
    return text


def copy_of(src: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / src.name
    dst.write_bytes(src.read_bytes())
    return dst


@pytest.fixture(scope="module")
def labelled_npz(tmp_path_factory, tiny_onnx) -> Path:
    """Inputs with the FP32 model's own predictions as labels (so top-1 has a meaning)."""
    from optim.backends import open_runner

    x = np.random.default_rng(3).standard_normal((48, *TINY_SHAPE)).astype(np.float32)
    with open_runner(tiny_onnx) as r:
        y = r.infer({"input": x})["logits"].argmax(1)
    path = tmp_path_factory.mktemp("cli_api") / "data.npz"
    np.savez(path, images=x, labels=y.astype(np.int64))
    return path


def test_export_writes_the_same_file(tmp_path):
    from optim import api

    cli, py = tmp_path / "cli.onnx", tmp_path / "api.onnx"
    text = ok("export", "tests.conftest:tiny_cnn", "--input-shape", "3,16,16", "--output-name", "logits",
              "--batch-max", "8", "-o", cli)
    rep = api.export("tests.conftest:tiny_cnn", input_shape="3,16,16", output_names="logits", batch_max=8,
                     output=py)
    assert sha256(cli) == sha256(py)
    assert f"wrote {cli}: opset {rep.opset}, {rep.nodes} nodes, dynamic batch 1..8" in text
    assert f"verified vs PyTorch at batches {rep.verify_batches}" in text
    assert "no --weights given" in text


@pytest.mark.parametrize("precision, options, kwargs", [
    ("fp16", [], {}),
    ("int8", ["--target", "onnxruntime", "--method", "max", "--exclude-op-types", "Gemm", "--calib-samples", "16"],
     dict(target="onnxruntime", method="max", exclude_op_types="Gemm", calib_samples=16)),
])
def test_quantize_writes_the_same_file(tmp_path, tiny_onnx, labelled_npz, precision, options, kwargs):
    from optim import api

    cli_src, api_src = copy_of(tiny_onnx, tmp_path / "cli"), copy_of(tiny_onnx, tmp_path / "api")
    calib = ["--calib", labelled_npz] if precision == "int8" else []
    text = ok("quantize", cli_src, "--precision", precision, *options, *calib)
    rep = api.quantize(api_src, precision, calib=str(labelled_npz) if calib else None, **kwargs)
    cli_out = cli_src.with_name(Path(rep.path).name)  # both beside their input, NAME.TAG.onnx
    assert Path(rep.path).parent == api_src.parent and cli_out.is_file()
    assert sha256(cli_out) == sha256(rep.path)
    line = next(ln for ln in text.splitlines() if ln.startswith(f"wrote {cli_out} "))
    assert line.startswith(f"wrote {cli_out} ({rep.tool}{', ' + rep.method if rep.method else ''}")
    if rep.coverage:
        assert f"{rep.coverage['quantized']}/{rep.coverage['eligible']} Conv/Gemm/MatMul quantized" in line
    if precision == "int8":
        assert rep.kept and rep.coverage["quantized"] < rep.coverage["eligible"]
        assert f"calibrating with 16 samples from {labelled_npz} (first 16)" in text


@pytest.mark.slow  # quantizes and tunes twice
def test_quantize_to_a_budget_through_the_api(tmp_path, tiny_onnx, labelled_npz):
    from optim import api
    from optim.stages.quantize.stage import QuantizeReport

    opts = dict(target="onnxruntime", method="max", calib_samples=16, max_drop=100.0, tune_samples=32)
    cli_out, api_out = tmp_path / "cli.int8.onnx", tmp_path / "api.int8.onnx"
    text = ok("quantize", tiny_onnx, "--precision", "int8", "--target", "onnxruntime", "--method", "max",
              "--calib", labelled_npz, "--calib-samples", "16", "--max-drop", "100", "--tune-data", labelled_npz,
              "--tune-samples", "32", "-o", cli_out)
    rep = api.quantize(tiny_onnx, "int8", calib=str(labelled_npz), tune_data=str(labelled_npz), output=api_out,
                       **opts)
    assert isinstance(rep, api.TunedQuantizeReport) and rep.path == str(api_out)
    assert isinstance(rep.report, QuantizeReport) and rep.report.tag == "int8-onnxruntime"
    b = rep.tuning.budget
    assert b.metric == "top1" and b.after.drop <= 100.0 and rep.tuning.samples == 32
    assert sha256(cli_out) == sha256(api_out)
    assert f"tuning {cli_out.name} (onnxruntime quantize_static, max) on 32 samples" in text
    assert (f"wrote {cli_out}: drop {b.after.drop:.3f} points ({b.metric}) vs {b.before.drop:.3f} "
            "without the budget") in text
    assert rep.as_dict()["tuning"]["budget"]["metric"] == "top1"

    # without tune_data the budget is held on the calibration data, as --max-drop without --tune-data
    again = api.quantize(tiny_onnx, "int8", calib=str(labelled_npz), output=tmp_path / "calib.int8.onnx", **opts)
    assert again.tuning.samples == 32


def test_build_gives_the_same_engine_description(tmp_path, tiny_onnx):
    pytest.importorskip("tensorrt_rtx")
    from optim import api

    cli_src, api_src = copy_of(tiny_onnx, tmp_path / "cli"), copy_of(tiny_onnx, tmp_path / "api")
    text = ok("build", cli_src, "--target", "rtx", "--batch", "1,2,4")
    rep = api.build(api_src, target="rtx", batch="1,2,4")
    cli_engine = cli_src.with_name("tiny.fp32.rtx.plan")
    assert Path(rep.engine) == api_src.with_name("tiny.fp32.rtx.plan") and cli_engine.is_file()
    cli_manifest = json.loads(cli_engine.with_name(cli_engine.name + ".json").read_text())
    api_manifest = json.loads(json.dumps(rep.manifest))  # as written: lists, not tuples
    for key in ("plan", "timing_cache", "compute_capabilities", "tensorrt"):
        assert cli_manifest[key] == api_manifest[key], key
    assert f"wrote {cli_engine} (" in text and "profile 1/2/4" in text
    assert f"manifest {cli_engine.name}.json" in text


def _api(name: str, **kwargs):
    from optim import api

    return lambda d, m: getattr(api, name)(**{k: (v(d, m) if callable(v) else v) for k, v in kwargs.items()})


@pytest.mark.parametrize("cli, call, error, cli_says, api_says", [
    (["export", "tests.conftest:tiny_cnn"], _api("export", model="tests.conftest:tiny_cnn"), "InputError",
     "give MODEL and --input-shape (or --recipe)", "give model and input_shape (or a recipe)"),
    (["export", "tests.conftest:tiny_cnn", "--input-shape", "0,16"],
     _api("export", model="tests.conftest:tiny_cnn", input_shape="0,16", output=lambda d, m: d / "e.onnx"),
     "InputError", "--input-shape must be positive integers", "input_shape must be positive integers"),
    (["export", "tests.conftest:tiny_cnn", "--input-shape", "3,16,16", "--opset", "10"],
     _api("export", model="tests.conftest:tiny_cnn", input_shape="3,16,16", opset=10), "RecipeError",
     "bad option: opset", "bad option: opset"),
    (["quantize", "{m}", "--precision", "int8"], _api("quantize", onnx=lambda d, m: m, precision="int8"),
     "InputError", "int8 needs calibration data: pass --calib (or --recipe)",
     "int8 needs calibration data: pass calib (or a recipe)"),
    (["quantize", "{m}", "--precision", "fp16", "--max-drop", "1"],
     _api("quantize", onnx=lambda d, m: m, precision="fp16", max_drop=1.0), "InputError",
     "--max-drop works on INT8/FP8 models", "max_drop works on INT8/FP8 models"),
    (["quantize", "{m}", "--precision", "int8", "--calib", "synthetic:8", "--max-drop", "-1", "-o", "{d}/q.onnx"],
     _api("quantize", onnx=lambda d, m: m, precision="int8", calib="synthetic:8", max_drop=-1.0,
          output=lambda d, m: d / "q.onnx"), "InputError",
     "--max-drop must be >= 0 points", "max_drop must be >= 0 points"),
    (["quantize", "{m}", "--precision", "fp16", "-o", "{d}"],
     _api("quantize", onnx=lambda d, m: m, precision="fp16", output=lambda d, m: d), "OutputPathError",
     "-o/--output", "output"),
    (["build", "{m}", "--batch", "1,2"], _api("build", onnx=lambda d, m: m, batch="1,2"), "InputError",
     "--batch takes min,opt,max, got '1,2'", "batch takes min,opt,max, got '1,2'"),
    (["build", "{m}", "--precision", "int8"], _api("build", onnx=lambda d, m: m, precision="int8"), "InputError",
     "--precision takes fp16 or bf16", "precision takes fp16 or bf16"),
    (["build", "{d}/missing.onnx"], _api("build", onnx=lambda d, m: d / "missing.onnx"), "ModelError",
     "ONNX file not found", "ONNX file not found"),
    (["quantize", "{d}", "--precision", "int8", "--calib", "synthetic:8"],
     _api("quantize", onnx=lambda d, m: d, precision="int8", calib="synthetic:8"), "ModelError",
     "is a directory, not an ONNX file", "is a directory, not an ONNX file"),
])
def test_the_same_errors_named_as_options_or_keywords(tmp_path, tiny_onnx, cli, call, error, cli_says, api_says):
    from optim import errors

    code, text, exc = invoke(*(a.format(d=tmp_path, m=tiny_onnx) for a in cli))
    with pytest.raises(errors.OptimError) as raised:
        call(tmp_path, tiny_onnx)
    for e in (exc, raised.value):
        assert type(e) is getattr(errors, error), repr(e)
    assert code != 0 and exc.exit_code == raised.value.exit_code == 2  # what optim exits with
    assert cli_says in str(exc), str(exc)
    assert api_says in str(raised.value) and not re.search(r"--[a-z]", str(raised.value)), str(raised.value)
