"""Data loading (IDX, npz/npy, image folders, synthetic), preprocessing and validation."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from optim.data import prepare
from optim.data.idx import read_idx
from optim.data.loaders import Dataset, load_dataset, parse_data_arg
from optim.data.preprocess import model_inputs, preprocess, validate_inputs
from optim.errors import DataError, RecipeError
from optim.settings import DataSpec, InputSpec, Preprocess

# --------------------------------------------------------------------------- helpers

_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
              np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(arr: np.ndarray, big_endian_dtype: str | None = None) -> bytes:
    """Encode ``arr`` in IDX: magic 0 0 TYPE NDIM, big-endian dims, big-endian data."""
    dt = np.dtype(big_endian_dtype) if big_endian_dtype else arr.dtype
    header = bytes([0, 0, _IDX_CODES[dt], arr.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(dt).tobytes()


def write_png(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (4, 5)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    Image.fromarray(np.full((h, w, 3), rgb, dtype=np.uint8)).save(path)


# --------------------------------------------------------------------------- IDX

@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_idx_round_trip_uint8(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_bytes(arr)
    path = tmp_path / ("images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(raw) if gz else raw)
    out = read_idx(path)
    assert out.dtype == np.uint8
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("dt", [">i2", ">i4", ">f4", ">f8"])
def test_idx_round_trip_big_endian_types_come_back_native(tmp_path, dt):
    arr = np.array([[-3, 1000], [7, -70000 if dt != ">i2" else -7000]], dtype=np.float64)
    path = tmp_path / "x-idx2"
    path.write_bytes(idx_bytes(arr, dt))
    out = read_idx(path)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, arr.astype(dt))


def test_idx_labels_1d(tmp_path):
    labels = np.array([9, 0, 3], dtype=np.uint8)
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(idx_bytes(labels))
    np.testing.assert_array_equal(read_idx(path), labels)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_idx_truncated_is_data_error(tmp_path, gz):
    raw = idx_bytes(np.zeros((2, 3, 3), np.uint8))[:-5]
    path = tmp_path / ("t-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_idx_padded_is_data_error(tmp_path):
    path = tmp_path / "p-idx1-ubyte"
    path.write_bytes(idx_bytes(np.zeros(3, np.uint8)) + b"\x00")
    with pytest.raises(DataError, match="truncated or padded"):
        read_idx(path)


@pytest.mark.parametrize("magic", [b"\x00\x00\x07\x01", b"\x01\x00\x08\x01", b"PK\x03\x04", b"\x00"])
def test_idx_bad_magic_is_data_error(tmp_path, magic):
    path = tmp_path / "bad-idx"
    path.write_bytes(magic + b"\x00\x00\x00\x01\x05")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(path)


def test_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="IDX file not found"):
        read_idx(tmp_path / "nope-idx3-ubyte")


def test_idx_gz_that_is_not_gzip(tmp_path):
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(idx_bytes(np.zeros((1, 2, 2), np.uint8)))  # not compressed
    with pytest.raises(DataError, match="cannot read IDX file"):
        read_idx(path)


def test_idx_gz_with_corrupt_body_is_data_error(tmp_path):
    # a valid gzip header followed by a deflate block of the reserved (invalid) type 3
    path = tmp_path / "c-idx3-ubyte.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"\x07" + b"\x00" * 8)
    with pytest.raises(DataError, match="cannot read IDX file"):
        read_idx(path)


def test_load_dataset_idx_images_and_labels(tmp_path):
    imgs = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2)
    (tmp_path / "i-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(imgs)))
    (tmp_path / "l-idx1-ubyte").write_bytes(idx_bytes(np.array([2, 0, 1], np.uint8)))
    ds = load_dataset(DataSpec(kind="idx", path=tmp_path / "i-idx3-ubyte.gz",
                               labels=tmp_path / "l-idx1-ubyte"), (1, 2, 2))
    np.testing.assert_array_equal(ds.images, imgs)
    assert ds.labels.tolist() == [2, 0, 1]


def test_load_dataset_idx_label_count_mismatch(tmp_path):
    (tmp_path / "i-idx3").write_bytes(idx_bytes(np.zeros((3, 2, 2), np.uint8)))
    (tmp_path / "l-idx1").write_bytes(idx_bytes(np.zeros(2, np.uint8)))
    with pytest.raises(DataError, match="3 images but 2 labels"):
        load_dataset(DataSpec(kind="idx", path=tmp_path / "i-idx3", labels=tmp_path / "l-idx1"),
                     (1, 2, 2))


# --------------------------------------------------------------------------- npz / npy

def test_npz_loads_images_and_labels(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (4, 5, 5), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=imgs, labels=np.array([3, 1, 0, 2]))
    ds = load_dataset(DataSpec(kind="npz", path=tmp_path / "d.npz"), (1, 5, 5))
    np.testing.assert_array_equal(ds.images, imgs)
    assert ds.labels.tolist() == [3, 1, 0, 2]
    assert len(ds) == 4 and not ds.synthetic


def test_npz_custom_keys_and_no_labels(tmp_path):
    x = np.ones((2, 1, 3, 3), np.float32)
    np.savez(tmp_path / "d.npz", x=x, other=np.zeros(2, np.int64))
    ds = load_dataset(DataSpec(kind="npz", path=tmp_path / "d.npz", images_key="x",
                               labels_key="y"), (1, 3, 3))
    assert ds.images.dtype == np.float32 and ds.images.shape == (2, 1, 3, 3)
    assert ds.labels is None


def test_npz_missing_key_lists_available_keys(tmp_path):
    np.savez(tmp_path / "d.npz", pics=np.zeros((2, 3, 3), np.uint8), y=np.zeros(2, np.int64))
    with pytest.raises(DataError) as ei:
        load_dataset(DataSpec(kind="npz", path=tmp_path / "d.npz"), (1, 3, 3))
    msg = str(ei.value)
    assert "'images'" in msg and "pics, y" in msg and "d.npz" in msg


@pytest.mark.parametrize("which", ["images", "labels"])
def test_npz_object_array_is_refused_without_unpickling(tmp_path, which):
    obj = np.array([{"a": 1}, None], dtype=object)
    good = {"images": np.zeros((2, 3, 3), np.uint8), "labels": np.array([0, 1])}
    good[which] = obj
    np.savez(tmp_path / "o.npz", allow_pickle=True, **good)
    with pytest.raises(DataError, match="never unpickles"):
        load_dataset(DataSpec(kind="npz", path=tmp_path / "o.npz"), (1, 3, 3))


def test_npy_object_array_is_refused_without_unpickling(tmp_path):
    np.save(tmp_path / "o.npy", np.array([[1, 2], "x"], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="never unpickles") as ei:
        load_dataset(DataSpec(kind="npy", path=tmp_path / "o.npy"), (1, 3, 3))
    assert "o.npy" in str(ei.value)


def test_npy_images_with_labels_file(tmp_path):
    imgs = np.full((3, 2, 2, 3), 7, np.uint8)
    np.save(tmp_path / "x.npy", imgs)
    np.save(tmp_path / "y.npy", np.array([1, 1, 0], np.int32))
    ds = load_dataset(DataSpec(kind="npy", path=tmp_path / "x.npy", labels=tmp_path / "y.npy"),
                      (3, 2, 2))
    np.testing.assert_array_equal(ds.images, imgs)
    assert ds.labels.tolist() == [1, 1, 0]


def test_npy_missing_labels_file(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(DataError, match="labels file not found"):
        load_dataset(DataSpec(kind="npy", path=tmp_path / "x.npy", labels=tmp_path / "y.npy"),
                     (1, 2, 2))


@pytest.mark.parametrize("kind", ["npz", "npy"])
def test_label_image_count_mismatch(tmp_path, kind):
    imgs, labels = np.zeros((4, 2, 2), np.uint8), np.array([0, 1, 2])
    if kind == "npz":
        np.savez(tmp_path / "d.npz", images=imgs, labels=labels)
        spec = DataSpec(kind="npz", path=tmp_path / "d.npz")
    else:
        np.save(tmp_path / "x.npy", imgs)
        np.save(tmp_path / "y.npy", labels)
        spec = DataSpec(kind="npy", path=tmp_path / "x.npy", labels=tmp_path / "y.npy")
    with pytest.raises(DataError, match="4 images but 3 labels"):
        load_dataset(spec, (1, 2, 2))


@pytest.mark.parametrize("labels, fragment", [
    (np.array([0.5, 1.0]), "labels must be a 1-D integer array"),
    (np.array([[0], [1]]), "labels must be a 1-D integer array"),
])
def test_bad_labels_dtype_or_shape(tmp_path, labels, fragment):
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 2, 2), np.uint8), labels=labels)
    with pytest.raises(DataError, match=fragment):
        load_dataset(DataSpec(kind="npz", path=tmp_path / "d.npz"), (1, 2, 2))


@pytest.mark.parametrize("kind", ["npz", "npy"])
def test_empty_array_is_data_error(tmp_path, kind):
    empty = np.zeros((0, 3, 3), np.uint8)
    if kind == "npz":
        np.savez(tmp_path / "e.npz", images=empty)
    else:
        np.save(tmp_path / "e.npy", empty)
    with pytest.raises(DataError, match="empty"):
        load_dataset(DataSpec(kind=kind, path=tmp_path / f"e.{kind}"), (1, 3, 3))


def test_non_numeric_images_refused(tmp_path):
    np.savez(tmp_path / "s.npz", images=np.array(["a", "b"]))
    with pytest.raises(DataError, match="numeric array"):
        load_dataset(DataSpec(kind="npz", path=tmp_path / "s.npz"), (1,))


def test_npy_file_given_as_npz(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(DataError, match="use kind: npy"):
        load_dataset(DataSpec(kind="npz", path=tmp_path / "x.npy"), (1, 2, 2))


def test_npz_file_given_as_npy(tmp_path):
    np.savez(tmp_path / "x.npz", images=np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(DataError, match="kind: npz"):
        load_dataset(DataSpec(kind="npy", path=tmp_path / "x.npz"), (1, 2, 2))


@pytest.mark.parametrize("kind", ["npz", "npy"])
@pytest.mark.parametrize("content", [b"not numpy at all", b"PK\x03\x04garbage", b""])
def test_garbage_array_file_is_data_error_naming_file(tmp_path, kind, content):
    (tmp_path / f"g.{kind}").write_bytes(content)
    with pytest.raises(DataError) as ei:
        load_dataset(DataSpec(kind=kind, path=tmp_path / f"g.{kind}"), (1,))
    assert f"g.{kind}" in str(ei.value)


def test_damaged_zip_npz_is_not_readable(tmp_path):
    (tmp_path / "g.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="not a readable .npy/.npz file"):
        load_dataset(DataSpec(kind="npz", path=tmp_path / "g.npz"), (1,))


def test_text_file_as_npz_is_not_reported_as_python_objects(tmp_path):
    (tmp_path / "g.npz").write_bytes(b"not numpy at all")
    with pytest.raises(DataError, match="not a readable .npy/.npz file"):
        load_dataset(DataSpec(kind="npz", path=tmp_path / "g.npz"), (1,))


def test_missing_npz_is_data_error(tmp_path):
    with pytest.raises(DataError, match="npz file not found"):
        load_dataset(DataSpec(kind="npz", path=tmp_path / "none.npz"), (1,))


# --------------------------------------------------------------------------- folders

def test_folder_class_subfolders_labelled_by_sorted_name(tmp_path):
    # created in non-sorted order on purpose
    write_png(tmp_path / "zebra" / "a.png", (0, 0, 255))
    write_png(tmp_path / "apple" / "b.png", (255, 0, 0))
    write_png(tmp_path / "apple" / "a.png", (250, 0, 0))
    write_png(tmp_path / "mango" / "x.png", (0, 255, 0))
    (tmp_path / "mango" / "notes.txt").write_text("ignored")
    (tmp_path / ".hidden").mkdir()
    write_png(tmp_path / ".hidden" / "h.png", (1, 1, 1))
    ds = load_dataset(DataSpec(kind="folder", path=tmp_path), (3, 5, 4))
    assert ds.class_names == ("apple", "mango", "zebra")
    assert ds.labels.tolist() == [0, 0, 1, 2]
    assert ds.images.shape == (4, 5, 4, 3) and ds.images.dtype == np.uint8
    # files within a class are in sorted order: apple/a.png (250) then apple/b.png (255)
    assert ds.images[0, 0, 0].tolist() == [250, 0, 0]
    assert ds.images[1, 0, 0].tolist() == [255, 0, 0]
    assert ds.images[3, 0, 0].tolist() == [0, 0, 255]


def test_flat_folder_has_no_labels(tmp_path):
    write_png(tmp_path / "b.png", (10, 20, 30))
    write_png(tmp_path / "a.png", (40, 50, 60))
    ds = load_dataset(DataSpec(kind="folder", path=tmp_path), (3, 5, 4))
    assert ds.labels is None
    assert ds.class_names == ()
    assert ds.images[0, 0, 0].tolist() == [40, 50, 60]  # sorted: a.png first


def test_folder_grey_png_becomes_rgb(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((3, 3), 77, np.uint8)).save(tmp_path / "g.png")
    ds = load_dataset(DataSpec(kind="folder", path=tmp_path), (3, 3, 3))
    assert ds.images.shape == (1, 3, 3, 3)
    assert ds.images[0, 1, 1].tolist() == [77, 77, 77]


def test_folder_mixed_sizes_resized_to_smallest(tmp_path):
    write_png(tmp_path / "a.png", (1, 2, 3), size=(8, 6))
    write_png(tmp_path / "b.png", (1, 2, 3), size=(5, 10))
    ds = load_dataset(DataSpec(kind="folder", path=tmp_path), (3, 6, 5))
    assert ds.images.shape == (2, 6, 5, 3)


@pytest.mark.parametrize("layout", ["empty", "empty_class_dirs", "only_text"])
def test_folder_without_images_is_data_error(tmp_path, layout):
    if layout == "empty_class_dirs":
        (tmp_path / "cat").mkdir()
        (tmp_path / "dog").mkdir()
    elif layout == "only_text":
        (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no images") as ei:
        load_dataset(DataSpec(kind="folder", path=tmp_path), (3, 4, 4))
    assert str(tmp_path) in str(ei.value)


def test_folder_missing_is_data_error(tmp_path):
    with pytest.raises(DataError, match="image folder not found"):
        load_dataset(DataSpec(kind="folder", path=tmp_path / "nope"), (3, 4, 4))


def test_folder_corrupt_image_is_data_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image .*bad.png"):
        load_dataset(DataSpec(kind="folder", path=tmp_path), (3, 4, 4))


# --------------------------------------------------------------------------- synthetic / Dataset

def test_synthetic_is_seeded_and_shaped():
    a = load_dataset(DataSpec(kind="synthetic", count=3, seed=5), (2, 4, 4))
    b = load_dataset(DataSpec(kind="synthetic", count=3, seed=5), (2, 4, 4))
    c = load_dataset(DataSpec(kind="synthetic", count=3, seed=6), (2, 4, 4))
    assert a.images.shape == (3, 2, 4, 4) and a.images.dtype == np.float32
    assert a.synthetic and a.labels is None
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)


def test_dataset_head():
    ds = Dataset(np.arange(5)[:, None].astype(np.float32), np.arange(5), "src")
    h = ds.head(2)
    assert len(h) == 2 and h.labels.tolist() == [0, 1] and "first 2" in h.source
    assert ds.head(None) is ds and ds.head(10) is ds


# --------------------------------------------------------------------------- preprocess

def test_preprocess_scale_mean_std_nchw_by_hand():
    img = np.array([[[[0, 51, 255], [255, 102, 0]]]], dtype=np.uint8)  # (1,1,2,3) NHWC
    pp = Preprocess(color="rgb", scale=1 / 255, mean=(0.5, 0.2, 0.0), std=(0.5, 0.1, 2.0))
    out = preprocess(img, pp)
    assert out.shape == (1, 3, 1, 2) and out.dtype == np.float32
    assert out.flags["C_CONTIGUOUS"]
    expected = np.array([[[[(0 - 0.5) / 0.5, (1 - 0.5) / 0.5]],          # R: 0, 255
                          [[(0.2 - 0.2) / 0.1, (0.4 - 0.2) / 0.1]],      # G: 51, 102
                          [[(1 - 0) / 2.0, (0 - 0) / 2.0]]]],            # B: 255, 0
                        dtype=np.float32)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_preprocess_nhwc_layout_and_scalar_mean():
    img = np.array([[[10, 20]]], dtype=np.uint8)  # (1,1,2) grey
    pp = Preprocess(color="gray", scale=1.0, mean=(10.0,), std=(5.0,), layout="NHWC")
    out = preprocess(img, pp)
    assert out.shape == (1, 1, 2, 1)
    np.testing.assert_allclose(out[0, 0, :, 0], [0.0, 2.0])


def test_preprocess_gray_from_rgb():
    img = np.array([[[[255, 0, 0], [0, 255, 0], [0, 0, 255], [100, 100, 100]]]], np.uint8)
    out = preprocess(img, Preprocess(color="gray", scale=1.0))
    assert out.shape == (1, 1, 1, 4)
    # 0.299*255 = 76.2, 0.587*255 = 149.7, 0.114*255 = 29.1, grey stays grey
    np.testing.assert_array_equal(out[0, 0, 0], [76, 150, 29, 100])


def test_preprocess_gray_to_rgb_repeats_channel_and_bgr_reverses():
    grey = np.full((1, 1, 1), 9, np.uint8)
    out = preprocess(grey, Preprocess(color="rgb", scale=1.0))
    assert out.shape == (1, 3, 1, 1) and out.ravel().tolist() == [9, 9, 9]
    rgb = np.array([[[[1, 2, 3]]]], np.uint8)
    bgr = preprocess(rgb, Preprocess(color="bgr", scale=1.0))
    assert bgr.ravel().tolist() == [3, 2, 1]


def test_preprocess_rgba_drops_alpha():
    rgba = np.array([[[[1, 2, 3, 200]]]], np.uint8)
    out = preprocess(rgba, Preprocess(color="rgb", scale=1.0))
    assert out.ravel().tolist() == [1, 2, 3]


@pytest.mark.parametrize("images, color, fragment", [
    (np.zeros((1, 2, 2, 2), np.uint8), "gray", "cannot make grey images from 2 channels"),
    (np.zeros((1, 2, 2, 2), np.uint8), "rgb", "cannot make RGB images from 2 channels"),
    (np.zeros((2, 2), np.uint8), "rgb", "raw images must be (N,H,W) or (N,H,W,C)"),
])
def test_preprocess_bad_channels(images, color, fragment):
    with pytest.raises(DataError) as ei:
        preprocess(images, Preprocess(color=color))
    assert fragment in str(ei.value)


def test_preprocess_mean_count_must_match_channels():
    with pytest.raises(DataError, match="mean has 2 values but images have 3 channels"):
        preprocess(np.zeros((1, 2, 2, 3), np.uint8), Preprocess(mean=(0.1, 0.2)))


@pytest.mark.parametrize("hw, resize, crop, expected_hw", [
    ((10, 20), 8, 6, (6, 6)),      # shorter side 10 -> 8 (so 8x16), centre crop 6
    ((10, 20), 5, None, (5, 10)),  # resize keeps aspect ratio
    ((12, 12), None, 4, (4, 4)),   # crop only
])
def test_preprocess_resize_and_crop_size(hw, resize, crop, expected_hw):
    img = np.random.default_rng(0).integers(0, 256, (2, *hw, 3), dtype=np.uint8)
    out = preprocess(img, Preprocess(resize=resize, crop=crop))
    assert out.shape == (2, 3, *expected_hw)


def test_preprocess_crop_is_centred():
    img = np.zeros((1, 5, 5), np.uint8)
    img[0, 2, 2] = 200
    out = preprocess(img, Preprocess(color="gray", crop=1, scale=1.0))
    assert out.ravel().tolist() == [200.0]


def test_preprocess_crop_larger_than_image():
    with pytest.raises(DataError, match="crop 9 is larger than the image"):
        preprocess(np.zeros((1, 4, 4, 3), np.uint8), Preprocess(crop=9))


# --------------------------------------------------------------------------- validate_inputs

SPEC = InputSpec(name="input", shape=(1, 2, 2))


def test_validate_inputs_accepts_and_returns_float32():
    x = np.zeros((3, 1, 2, 2), np.float64)
    out = validate_inputs(x, SPEC, "src")
    assert out.dtype == np.float32 and out.shape == (3, 1, 2, 2)


def _with(value):
    x = np.zeros((3, 1, 2, 2), np.float32)
    x[1, 0, 1, 1] = value
    return x


@pytest.mark.parametrize("x, fragments", [
    (np.zeros((2, 3, 2, 2), np.float32), ["src", "[3, 2, 2]", "'input'", "[1, 2, 2]"]),
    (np.zeros((2, 2, 2), np.float32), ["shape [2, 2]"]),
    (_with(np.nan), ["1 sample(s) contain NaN or inf"]),
    (_with(np.inf), ["1 sample(s) contain NaN or inf"]),
    (_with(-np.inf), ["NaN or inf"]),
    (np.zeros((0, 1, 2, 2), np.float32), ["src: the data set is empty"]),
    (np.zeros((2, 1, 2, 2), np.int32), ["must be floating point", "int32"]),
], ids=["wrong-shape", "missing-channel-axis", "nan", "inf", "neg-inf", "empty", "int"])
def test_validate_inputs_rejects(x, fragments):
    with pytest.raises(DataError) as ei:
        validate_inputs(x, SPEC, "src")
    for frag in fragments:
        assert frag in str(ei.value)


def test_validate_inputs_counts_bad_samples():
    x = np.zeros((4, 1, 2, 2), np.float32)
    x[0, 0, 0, 0] = x[0, 0, 1, 1] = np.nan
    x[3, 0, 0, 1] = np.inf
    with pytest.raises(DataError, match="2 sample"):
        validate_inputs(x, SPEC, "src")


def test_model_inputs_skips_preprocess_for_float():
    x = np.full((2, 1, 2, 2), 3.0, np.float32)
    out = model_inputs(Dataset(x, None, "f"), Preprocess(mean=(1.0,)), SPEC)
    np.testing.assert_array_equal(out, x)  # not scaled or normalised


# --------------------------------------------------------------------------- prepare

def test_prepare_npz_head_preprocess_and_labels(tmp_path):
    imgs = np.stack([np.full((2, 2), v, np.uint8) for v in (0, 255, 51)])
    np.savez(tmp_path / "d.npz", images=imgs, labels=np.array([4, 5, 6]))
    spec = DataSpec(kind="npz", path=tmp_path / "d.npz")
    x, y, ds = prepare(spec, Preprocess(color="gray", mean=(0.5,), std=(0.5,)),
                       InputSpec(shape=(1, 2, 2)), samples=2)
    assert x.shape == (2, 1, 2, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0, 0, 0], [-1.0, 1.0], atol=1e-6)
    assert y.tolist() == [4, 5]
    assert len(ds) == 2


def test_prepare_shape_mismatch_is_data_error(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(DataError, match=r"samples have shape \[1, 3, 3\]"):
        prepare(DataSpec(kind="npz", path=tmp_path / "d.npz"), Preprocess(color="gray"),
                InputSpec(shape=(1, 4, 4)))


# --------------------------------------------------------------------------- parse_data_arg

def test_parse_synthetic():
    spec = parse_data_arg("synthetic:12")
    assert spec.kind == "synthetic" and spec.count == 12 and spec.path is None


@pytest.mark.parametrize("arg", ["synthetic:abc", "synthetic:", "synthetic:0", "synthetic:-3"])
def test_parse_bad_synthetic(arg):
    with pytest.raises(DataError, match="use synthetic:N") as ei:
        parse_data_arg(arg)
    assert arg in str(ei.value)


@pytest.mark.parametrize("name, kind", [
    ("d.npz", "npz"), ("d.npy", "npy"), ("train-images-idx3-ubyte", "idx"),
    ("t10k-labels-idx1-ubyte.gz", "idx"), ("foo-ubyte.gz", "idx"),
])
def test_parse_files(tmp_path, name, kind):
    (tmp_path / name).write_bytes(b"x")
    spec = parse_data_arg(str(tmp_path / name))
    assert spec.kind == kind and spec.path == (tmp_path / name).resolve()


def test_parse_relative_path_is_resolved(tmp_path, monkeypatch):
    (tmp_path / "d.npz").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    spec = parse_data_arg("d.npz")
    assert spec.path.is_absolute() and spec.path == (tmp_path / "d.npz").resolve()


def test_parse_folder(tmp_path):
    spec = parse_data_arg(str(tmp_path))
    assert spec.kind == "folder" and spec.path == tmp_path.resolve()


def test_parse_missing_path(tmp_path):
    missing = str(tmp_path / "nothing.npz")
    with pytest.raises(DataError, match="data not found") as ei:
        parse_data_arg(missing)
    assert missing in str(ei.value)


@pytest.mark.parametrize("name", ["data.txt", "data.csv", "weights.pt"])
def test_parse_unknown_suffix(tmp_path, name):
    (tmp_path / name).write_text("x")
    with pytest.raises(DataError, match="cannot tell the format") as ei:
        parse_data_arg(str(tmp_path / name))
    assert name in str(ei.value)


def test_parse_yaml_spec_resolved_relative_to_spec_file(tmp_path, monkeypatch):
    sub = tmp_path / "specs"
    sub.mkdir()
    (sub / "cal.yaml").write_text("kind: npz\npath: data/x.npz\nimages_key: pics\n")
    monkeypatch.chdir(tmp_path)
    spec = parse_data_arg("specs/cal.yaml")
    assert spec.kind == "npz" and spec.images_key == "pics"
    assert spec.path == (sub / "data" / "x.npz").resolve()


def test_parse_yaml_spec_with_unknown_key(tmp_path):
    (tmp_path / "cal.yaml").write_text("kind: npz\npath: x.npz\nimagez_key: a\n")
    with pytest.raises(RecipeError, match="unknown key 'imagez_key'") as ei:
        parse_data_arg(str(tmp_path / "cal.yaml"))
    assert "cal.yaml" in str(ei.value)
