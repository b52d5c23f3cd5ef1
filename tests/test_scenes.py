"""Fashion-MNIST detection scenes: reproducible bytes, sane boxes, COCO annotations, split sources."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from optim.data.scenes import (
    CLASSES,
    MAX_IOU,
    Scenes,
    coco_dict,
    make_scenes,
    read_split,
    source_images,
    write_split,
)
from optim.errors import DataError
from optim.tasks.detect_ops import BoxLabels, box_iou

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def eval_scenes() -> Scenes:
    return make_scenes("eval", 12, seed=3)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = write_split(make_scenes("eval", 5, seed=7), tmp_path / "a", png=True)
    b = write_split(make_scenes("eval", 5, seed=7), tmp_path / "b", png=True)
    c = write_split(make_scenes("eval", 5, seed=8), tmp_path / "c")
    for key in ("npz", "json"):
        assert _sha(a[key]) == _sha(b[key])
        assert _sha(a[key]) != _sha(c[key])
    pngs = sorted(p.name for p in a["png"].iterdir())
    assert pngs == [f"{i:06d}.png" for i in range(5)]
    assert all(_sha(a["png"] / p) == _sha(b["png"] / p) for p in pngs)


def test_scene_does_not_depend_on_how_many_are_made():
    few, more = make_scenes("train", 2, seed=1), make_scenes("train", 4, seed=1)
    assert np.array_equal(few.images, more.images[:2])
    later = make_scenes("train", 2, seed=1, start=2)
    assert np.array_equal(later.images, more.images[2:])
    assert all(np.array_equal(x, y) for x, y in zip(later.boxes, more.boxes[2:]))


def test_splits_draw_from_their_own_images():
    tr, te = source_images("train"), source_images("eval")
    assert "t10k" in te[2] and "train" in tr[2]
    assert len(te[0]) == 10000 and te[0].shape[1:] == (28, 28)
    with pytest.raises(DataError, match="split"):
        source_images("test")
    with pytest.raises(DataError, match="split"):
        make_scenes("val", 1)


def test_scenes_boxes_classes_and_layout(eval_scenes):
    s = eval_scenes
    assert s.images.shape == (12, 160, 160, 3) and s.images.dtype == np.uint8
    for img, b, c in zip(s.images, s.boxes, s.classes):
        assert 1 <= len(b) <= 6 and b.dtype == np.float32 and c.dtype == np.int64
        assert (b[:, :2] >= 0).all() and (b[:, 2] <= 160).all() and (b[:, 3] <= 160).all()
        sides = np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
        assert (sides.max(1) >= 10).all() and (sides.max(1) <= 67).all()
        assert ((c >= 0) & (c < len(CLASSES))).all()
        iou = box_iou(b, b) - np.eye(len(b))
        assert iou.max() <= MAX_IOU + 1e-6
        assert img.std() > 3  # a texture, not a flat colour
    assert len({int(c) for cs in s.classes for c in cs}) >= 5
    assert make_scenes("eval", 2, seed=0, size=(320, 256)).images.shape == (2, 320, 256, 3)
    with pytest.raises(DataError, match="at least"):
        make_scenes("eval", 1, size=(64, 64))


def test_item_pixels_are_inside_their_boxes(eval_scenes):
    """Items change the image inside their boxes: a box's border rows differ from the texture around."""
    s = eval_scenes
    for img, boxes in zip(s.images[:4], s.boxes[:4]):
        for x1, y1, x2, y2 in boxes.astype(int):
            patch = img[y1:y2, x1:x2].astype(float)
            assert patch.size and patch.std() > 5


def test_coco_annotations_and_npz_round_trip(tmp_path, eval_scenes):
    paths = write_split(eval_scenes, tmp_path)
    coco = json.loads(paths["json"].read_text())
    assert [c["id"] for c in coco["categories"]] == list(range(1, 11))
    assert coco["categories"][0]["name"] == "T-shirt/top"
    assert len(coco["images"]) == 12 and coco["images"][0]["width"] == 160
    assert len(coco["annotations"]) == sum(len(b) for b in eval_scenes.boxes)
    a = coco["annotations"][0]
    assert set(a) == {"id", "image_id", "category_id", "bbox", "area", "iscrowd"}
    assert a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3])
    labels = BoxLabels.from_coco(paths["json"])
    for b, c, gb, gc in zip(labels.boxes, labels.classes, eval_scenes.boxes, eval_scenes.classes):
        np.testing.assert_allclose(b, gb, atol=0.01)
        assert np.array_equal(c, gc)
    back = read_split(paths["npz"])
    assert np.array_equal(back.images, eval_scenes.images)
    assert all(np.array_equal(x, y) for x, y in zip(back.boxes, eval_scenes.boxes))
    with np.load(paths["npz"], allow_pickle=False) as z:
        assert sorted(z.files) == ["boxes", "classes", "image_index", "images"]
    assert coco_dict(eval_scenes)["images"][1]["file_name"] == "000001.png"


def test_project_loader_reads_the_images(tmp_path, eval_scenes):
    from optim.data.loaders import load_dataset, parse_data_arg

    paths = write_split(eval_scenes, tmp_path)
    ds = load_dataset(parse_data_arg(str(paths["npz"])), (3, 160, 160))
    assert ds.images.shape == (12, 160, 160, 3)
    # the boxes come with the images, per image and in order
    assert len(ds.labels) == 12 and ds.labels.count == sum(len(b) for b in eval_scenes.boxes)
    assert all(np.array_equal(a, b) for a, b in zip(ds.labels.boxes, eval_scenes.boxes))
    assert all(np.array_equal(a, b) for a, b in zip(ds.labels.classes, eval_scenes.classes))
    assert ds.head(5).labels.count == sum(len(b) for b in eval_scenes.boxes[:5])


def test_scenes_data_spec_makes_the_scenes_at_the_model_size():
    from optim.data.loaders import load_dataset, parse_data_arg
    from optim.errors import DataError
    from optim.settings import DataSpec

    ds = load_dataset(parse_data_arg("scenes:6"), (3, 160, 160))
    ref = make_scenes("eval", 6)
    assert np.array_equal(ds.images, ref.images) and ds.labels.count == sum(len(b) for b in ref.boxes)
    big = load_dataset(DataSpec(kind="scenes", split="train", count=2, seed=3), (3, 224, 192))
    assert big.images.shape == (2, 224, 192, 3) and big.labels.count > 0
    with pytest.raises(DataError, match="RGB"):
        load_dataset(DataSpec(kind="scenes", count=2), (1, 28, 28))


def test_make_scenes_script(tmp_path):
    out = tmp_path / "scenes"
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "make_scenes.py"), "--out", str(out),
                        "--train", "3", "--eval", "2", "--seed", "5"],
                       check=False, capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert {p.name for p in out.iterdir()} == {"train.npz", "train.json", "eval.npz", "eval.json"}
    assert read_split(out / "eval.npz").images.shape == (2, 160, 160, 3)
    assert np.array_equal(read_split(out / "eval.npz").images, make_scenes("eval", 2, seed=5).images)
    assert "eval" in r.stdout and "sha256" in r.stdout
