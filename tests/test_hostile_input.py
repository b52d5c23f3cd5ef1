"""Hostile or odd input is refused in one line (issue 24): alias bombs, models that are not files."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from optim.errors import RecipeError
from optim.recipe import load_recipe
from tests.helpers.cli import assert_one_line_error, optim
from tests.helpers.runs import TINY

BOMB = """
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def _bomb_recipe(tmp_path):
    body = "\n".join("    " + ln for ln in BOMB.strip().splitlines())
    text = TINY.replace('model: {source: "tests.conftest:tiny_cnn"}',
                        'model:\n  source: "tests.conftest:tiny_cnn"\n  kwargs:\n' + body)
    (tmp_path / "bomb.yaml").write_text(text)
    return tmp_path / "bomb.yaml"


def test_an_alias_bomb_is_refused_fast_and_small(tmp_path):
    path = _bomb_recipe(tmp_path)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(RecipeError, match="aliases expand to more than"):
            load_recipe(path)
        seconds, (_, peak) = time.perf_counter() - t0, tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seconds < 1.0 and peak < 50 << 20


def test_too_many_aliases_are_refused(tmp_path):
    many = "x: &x 1\ny: [" + ", ".join(["*x"] * 500) + "]\n"
    (tmp_path / "r.yaml").write_text(TINY + many)
    with pytest.raises(RecipeError, match="500 YAML aliases"):
        load_recipe(tmp_path / "r.yaml")


def test_a_few_aliases_still_work(tmp_path):
    text = TINY.replace("bench: {", "x-batches: &bs [1, 2]\nbench: {").replace("batch_sizes: [1, 2]",
                                                                               "batch_sizes: *bs")
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(RecipeError, match="unknown key 'x-batches'"):  # parsed fine; pydantic has the last word
        load_recipe(tmp_path / "r.yaml")


def test_the_bomb_on_the_command_line_is_one_line(tmp_path):
    p = optim("run", _bomb_recipe(tmp_path), "--out-root", tmp_path / "art")
    assert_one_line_error(p, 2, "aliases expand to more than")


# -- 9: bad models are input errors (exit 2), not internal errors ---------------------------
def _outside_external_data(tmp_path, tiny_onnx):
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    folder = tmp_path / "m"
    folder.mkdir()
    m = onnx.load(str(tiny_onnx))
    convert_model_to_external_data(m, all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    onnx.save(m, str(folder / "model.onnx"))
    (folder / "w.bin").rename(tmp_path / "w.bin")
    m = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../w.bin"
    onnx.save(m, str(folder / "model.onnx"))
    return folder / "model.onnx"


def test_external_data_outside_the_models_folder_is_exit_2(tmp_path, tiny_onnx):
    model = _outside_external_data(tmp_path, tiny_onnx)
    p = optim("bench", model)
    assert_one_line_error(p, 2, str(model), "points outside", "move the data file beside the model")


@pytest.mark.parametrize("cmd", ["bench", "quantize"])
def test_a_directory_as_the_model_is_exit_2(tmp_path, cmd):
    args = ["--precision", "fp16", "-o", tmp_path / "q.onnx"] if cmd == "quantize" else []
    p = optim(cmd, tmp_path, *args)
    assert_one_line_error(p, 2, f"{tmp_path} is a directory")


# -- 10: smaller items ----------------------------------------------------------------------
def test_check_takes_the_recipes_gates(tmp_path, tiny_onnx):
    (tmp_path / "r.yaml").write_text(TINY + "gates: {default: {min_cosine: 0.123}}\n")
    p = optim("check", tiny_onnx, "--reference", tiny_onnx, "--data", "synthetic:8", "--recipe", tmp_path / "r.yaml")
    assert p.returncode == 0, p.stderr
    assert "limit 0.123" in p.stdout


def test_photos_are_resized_to_the_model_input_without_a_recipe(tiny_onnx):
    p = optim("check", tiny_onnx, "--reference", tiny_onnx, "--data", "photos:4")
    assert p.returncode == 0, p.stderr


def test_a_corrupt_pt_does_not_claim_python_objects(tmp_path):
    import io

    import torch

    from optim.errors import ModelError
    from optim.sources import load_state_dict

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(4096)}, buf)
    (tmp_path / "w.pt").write_bytes(buf.getvalue()[:4000])  # a truncated checkpoint
    with pytest.raises(ModelError, match="refused by the safe loader") as info:
        load_state_dict(tmp_path / "w.pt")
    assert "Python objects" not in str(info.value) and "corrupt or truncated" in str(info.value)


def test_export_of_a_factory_does_not_claim_random_weights(tmp_path):
    p = optim("export", "tests.conftest:tiny_cnn", "--input-shape", "3,16,16", "-o", tmp_path / "m.onnx")
    assert p.returncode == 0, p.stderr
    assert "random weights" not in p.stderr and "whatever weights its factory gives it" in p.stderr
