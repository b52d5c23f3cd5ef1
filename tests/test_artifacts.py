"""Atomic writes, hashing, and the run manifest / stage cache."""

from __future__ import annotations

import hashlib
import json

import pytest

from optim.artifacts import MANIFEST, RunDir, atomic_path, sha256_file, sha256_json, write_json, \
    write_text
from optim.errors import InputError


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


# --------------------------------------------------------------------------- hashing

def test_sha256_file_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 5000  # > 1 MiB, so more than one read block
    (tmp_path / "f.bin").write_bytes(data)
    assert sha256_file(tmp_path / "f.bin") == hashlib.sha256(data).hexdigest()


def test_sha256_file_of_empty_file(tmp_path):
    (tmp_path / "e").write_bytes(b"")
    assert sha256_file(tmp_path / "e") == hashlib.sha256(b"").hexdigest()


def test_sha256_json_ignores_key_order_but_not_values():
    assert sha256_json({"a": 1, "b": [1, 2]}) == sha256_json({"b": [1, 2], "a": 1})
    assert sha256_json({"a": 1}) != sha256_json({"a": 2})
    assert len(sha256_json({"p": __file__})) == 64


# --------------------------------------------------------------------------- atomic_path

def test_atomic_path_renames_on_success(tmp_path):
    final = tmp_path / "sub" / "out.bin"
    with atomic_path(final) as tmp:
        assert tmp.parent == final.parent and tmp != final
        assert tmp.name.startswith(".out.bin.partial-")
        tmp.write_bytes(b"done")
        assert not final.exists()  # nothing visible before the body finishes
    assert final.read_bytes() == b"done"
    assert _leftovers(final.parent) == []


def test_atomic_path_leaves_nothing_when_body_raises(tmp_path):
    final = tmp_path / "out.onnx"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"half written")
            raise RuntimeError("boom")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_old_file_when_body_raises(tmp_path):
    final = tmp_path / "out.txt"
    final.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(final) as tmp:
            tmp.write_text("new, incomplete")
            raise KeyboardInterrupt
    assert final.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_atomic_path_body_that_writes_nothing_raises_and_leaves_nothing(tmp_path):
    final = tmp_path / "out.txt"
    with pytest.raises(FileNotFoundError):
        with atomic_path(final):
            pass
    assert list(tmp_path.iterdir()) == []


def test_write_json_result_parses(tmp_path):
    obj = {"a": 1, "b": [1.5, "x"], "path": tmp_path}  # Path goes through default=str
    write_json(tmp_path / "o.json", obj)
    back = json.loads((tmp_path / "o.json").read_text())
    assert back == {"a": 1, "b": [1.5, "x"], "path": str(tmp_path)}
    assert _leftovers(tmp_path) == []


def test_write_json_replaces_existing(tmp_path):
    write_json(tmp_path / "o.json", {"v": 1})
    write_json(tmp_path / "o.json", {"v": 2})
    assert json.loads((tmp_path / "o.json").read_text()) == {"v": 2}


def test_write_text_unwritable_content_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        write_text(tmp_path / "t.txt", b"bytes, not str")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- RunDir

@pytest.fixture()
def run(tmp_path) -> RunDir:
    rd = RunDir(tmp_path / "run")
    rd.root.mkdir()
    (rd.root / "model.onnx").write_bytes(b"onnx bytes")
    return rd


def test_record_writes_manifest_with_matching_sha(run):
    rec = run.record("fp32", "model.onnx", "export", parents=["src"], settings={"opset": 17},
                     key="k1", seconds=1.23456)
    data = json.loads((run.root / MANIFEST).read_text())
    entry = data["artifacts"]["fp32"]
    assert entry["sha256"] == hashlib.sha256(b"onnx bytes").hexdigest() == rec.sha256
    assert entry["bytes"] == len(b"onnx bytes")
    assert entry["path"] == "model.onnx" and entry["stage"] == "export"
    assert entry["parents"] == ["src"] and entry["settings"] == {"opset": 17}
    assert entry["cache_key"] == "k1" and entry["seconds"] == 1.235
    assert data["tools"]["optim"] and data["host"]["cpu_count"] >= 1
    assert _leftovers(run.root) == []


def test_manifest_survives_reopen(run):
    run.record("fp32", "model.onnx", "export", key="k1")
    again = RunDir(run.root)
    assert set(again.manifest.artifacts) == {"fp32"}
    assert again.cached("fp32", "k1") is not None


def test_cached_same_key_returns_record(run):
    rec = run.record("fp32", "model.onnx", "export", key="k1")
    hit = run.cached("fp32", "k1")
    assert hit is not None and hit.sha256 == rec.sha256 and hit.path == "model.onnx"


@pytest.mark.parametrize("name, key", [("fp32", "k2"), ("fp32", ""), ("int8", "k1")])
def test_cached_other_key_or_name_is_none(run, name, key):
    run.record("fp32", "model.onnx", "export", key="k1")
    assert run.cached(name, key) is None


def test_cached_none_after_file_modified(run):
    run.record("fp32", "model.onnx", "export", key="k1")
    (run.root / "model.onnx").write_bytes(b"onnx bytEs")  # same size, different content
    assert run.cached("fp32", "k1") is None


def test_cached_none_after_file_deleted(run):
    run.record("fp32", "model.onnx", "export", key="k1")
    (run.root / "model.onnx").unlink()
    assert run.cached("fp32", "k1") is None


def test_verify_lists_tampered_and_missing(run):
    (run.root / "a.json").write_text("{}")
    (run.root / "b.json").write_text("[]")
    run.record("fp32", "model.onnx", "export")
    run.record("a", "a.json", "check")
    run.record("b", "b.json", "check")
    assert run.verify() == []
    (run.root / "model.onnx").write_bytes(b"tampered")
    (run.root / "b.json").unlink()
    assert sorted(run.verify()) == ["b", "fp32"]


def test_verify_after_reopen_sees_tampering(run):
    run.record("fp32", "model.onnx", "export")
    (run.root / "model.onnx").write_bytes(b"x")
    assert RunDir(run.root).verify() == ["fp32"]


def test_new_rundir_without_manifest_is_empty(tmp_path):
    rd = RunDir(tmp_path / "fresh")
    assert rd.manifest.artifacts == {} and rd.verify() == []
    assert not (tmp_path / "fresh").exists()  # opening writes nothing


@pytest.mark.parametrize("content", ["{not json", "[]", '{"artifacts": 5}',
                                     '{"artifacts": {"x": {"name": "x"}}}'])
def test_corrupt_manifest_is_input_error(tmp_path, content):
    (tmp_path / MANIFEST).write_text(content)
    with pytest.raises(InputError) as ei:
        RunDir(tmp_path)
    msg = str(ei.value)
    assert "manifest.json" in msg and "not a valid optim manifest" in msg and "--force" in msg


def test_binary_manifest_is_input_error(tmp_path):
    (tmp_path / MANIFEST).write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="not a valid optim manifest"):
        RunDir(tmp_path)
