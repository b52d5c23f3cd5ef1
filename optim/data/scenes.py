"""Fashion-MNIST detection scenes, made offline and reproducibly.

A scene is an RGB image (160x160 by default) on a textured background (smooth noise,
a linear gradient, stripes or a checkerboard, plus fine grain) with 2-6 Fashion-MNIST
items, each scaled (22-67 px, aspect jittered by up to 15%), tinted and placed so that no
two boxes overlap by more than ``MAX_IOU``. Boxes are the tight extent of the item's
visible pixels (``alpha > 0.5``), in pixels, ``[x1, y1, x2, y2]``; classes are the
Fashion-MNIST labels 0-9. Training scenes use only training images, evaluation scenes only
test images.

Reproducible: scene ``i`` of a split is drawn from ``numpy.random.default_rng([seed,
split, i])`` and does not depend on how many scenes are made, so the same seed gives the
same arrays and (through ``write_split``) the same file bytes; another seed gives others.

On disk (``write_split``): ``<split>.npz`` holds ``images`` (N, H, W, 3) uint8 plus the
boxes as plain arrays (``boxes`` (M, 4) float32 xyxy, ``classes`` (M,) int64,
``image_index`` (M,) int64); ``<split>.json`` holds the same boxes as COCO annotations
(image and category ids start at 1; category ``k + 1`` is class ``k``). One .npz rather
than a folder of PNGs: optim's data loaders already read ``.npz`` images (``images`` key,
``allow_pickle=False``), one file hashes and caches as one artifact, and it is written
with fixed zip timestamps so its sha256 is a function of the seed. ``png=True`` also
writes one PNG per scene for COCO tools and viewers.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optim.data.idx import read_idx
from optim.errors import DataError

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
REPO = Path(__file__).resolve().parents[2]
DEBIAN = Path("/usr/share/datasets/fashion-mnist")
BUNDLED = REPO / "calib" / "fashion-mnist"
SPLITS = {"train": 1, "eval": 2}
MAX_IOU = 0.1
SIZE_RANGE = (22, 67)  # longer side of the scaled 28x28 item, in pixels
ITEMS = (2, 6)


@dataclass
class Scenes:
    """Images (N, H, W, 3) uint8 and, per image, boxes (k, 4) float32 xyxy and classes (k,) int64."""

    images: np.ndarray
    boxes: list[np.ndarray]
    classes: list[np.ndarray]
    split: str = ""
    seed: int = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: slice) -> Scenes:
        return Scenes(self.images[key], self.boxes[key], self.classes[key], self.split, self.seed)

    def flat(self) -> dict[str, np.ndarray]:
        """The boxes as three flat arrays (``boxes``, ``classes``, ``image_index``)."""
        idx = np.concatenate([np.full(len(b), i, np.int64) for i, b in enumerate(self.boxes)] or
                             [np.zeros(0, np.int64)])
        return {"boxes": np.concatenate(self.boxes or [np.zeros((0, 4), np.float32)]).astype(np.float32),
                "classes": np.concatenate(self.classes or [np.zeros(0, np.int64)]).astype(np.int64),
                "image_index": idx}


def source_images(split: str) -> tuple[np.ndarray, np.ndarray, str]:
    """The Fashion-MNIST images and labels a split draws from, and where they came from.

    ``train``: the 60k training images of Debian's ``dataset-fashion-mnist``, else the 1,024
    training images bundled in ``calib/fashion-mnist/train-calib-1024.npz``. ``eval``: the
    10k test images (bundled in ``calib/fashion-mnist``; Debian's copy as a fallback)."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {sorted(SPLITS)}, not {split!r}")
    if split == "train":
        if (DEBIAN / "train-images-idx3-ubyte.gz").is_file():
            return (read_idx(DEBIAN / "train-images-idx3-ubyte.gz"),
                    read_idx(DEBIAN / "train-labels-idx1-ubyte.gz").astype(np.int64), str(DEBIAN / "train-*"))
        small = BUNDLED / "train-calib-1024.npz"
        if small.is_file():
            with np.load(small, allow_pickle=False) as z:
                return z["images"], z["labels"].astype(np.int64), str(small)
        raise DataError("no Fashion-MNIST training images: apt-get install dataset-fashion-mnist")
    for root in (BUNDLED, DEBIAN):
        if (root / "t10k-images-idx3-ubyte.gz").is_file():
            return (read_idx(root / "t10k-images-idx3-ubyte.gz"),
                    read_idx(root / "t10k-labels-idx1-ubyte.gz").astype(np.int64), str(root / "t10k-*"))
    raise DataError("no Fashion-MNIST test images (calib/fashion-mnist/t10k-*)")


def _upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of a (gh, gw, C) grid to (h, w, C)."""
    gh, gw = grid.shape[:2]
    ys, xs = np.linspace(0, gh - 1, h), np.linspace(0, gw - 1, w)
    y0, x0 = np.floor(ys).astype(int).clip(0, gh - 2), np.floor(xs).astype(int).clip(0, gw - 2)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    a, b = grid[y0][:, x0], grid[y0][:, x0 + 1]
    c, d = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured (h, w, 3) float background in [0, 1]."""
    kind = rng.integers(4)
    c1, c2 = rng.uniform(0.05, 0.75, 3), rng.uniform(0.05, 0.75, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    if kind == 0:  # smooth noise
        g = int(rng.integers(3, 12))
        t = _upsample(rng.uniform(0, 1, (g, g, 1)), h, w)
        img = c1 * (1 - t) + c2 * t
    elif kind == 1:  # linear gradient
        a = rng.uniform(0, 2 * np.pi)
        t = (np.cos(a) * xx + np.sin(a) * yy)
        t = ((t - t.min()) / max(np.ptp(t), 1e-9))[..., None]
        img = c1 * (1 - t) + c2 * t
    elif kind == 2:  # stripes
        a, period = rng.uniform(0, np.pi), rng.uniform(6, 40)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (np.cos(a) * xx + np.sin(a) * yy) / period + rng.uniform(0, 6.3))
        img = c1 * (1 - t[..., None]) + c2 * t[..., None]
    else:  # checkerboard
        cell = int(rng.integers(8, 33))
        t = (((xx // cell) + (yy // cell)) % 2)[..., None]
        img = c1 * (1 - t) + c2 * t
    return np.clip(img + rng.normal(0, rng.uniform(0.0, 0.06), (h, w, 1)), 0, 1)


def _item(rng: np.random.Generator, item: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale a 28x28 item: its alpha (h, w) and a tinted colour (h, w, 3), both in [0, 1]."""
    from PIL import Image

    size = rng.uniform(*SIZE_RANGE)
    aspect = rng.uniform(0.85, 1.15)
    w, h = max(8, round(size * min(1.0, aspect))), max(8, round(size * min(1.0, 1 / aspect)))
    v = np.asarray(Image.fromarray(item).resize((w, h), Image.BILINEAR), dtype=np.float64) / 255.0
    if rng.random() < 0.5:
        v = v[:, ::-1]
    alpha = np.clip((v - 0.04) / 0.08, 0, 1)
    tint = rng.uniform(0.45, 1.0, 3)
    color = tint * (0.3 + 0.7 * v[..., None])
    return alpha, color


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box ``a`` (4,) with boxes ``b`` (k, 4), xyxy."""
    iw = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return inter / np.maximum(union, 1e-9)


def make_scene(rng: np.random.Generator, items: np.ndarray, labels: np.ndarray,
               size: tuple[int, int] = (160, 160)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene: (H, W, 3) uint8 image, boxes (k, 4) float32 xyxy, classes (k,) int64."""
    h, w = size
    img = background(rng, h, w)
    boxes: list[np.ndarray] = []
    classes: list[int] = []
    want = int(rng.integers(ITEMS[0], ITEMS[1] + 1))
    for _ in range(8 * want):
        if len(boxes) == want:
            break
        k = int(rng.integers(len(items)))
        alpha, color = _item(rng, items[k])
        ys, xs = np.nonzero(alpha > 0.5)
        if len(ys) == 0:
            continue
        ih, iw = alpha.shape
        if ih > h or iw > w:
            continue
        top, left = int(rng.integers(0, h - ih + 1)), int(rng.integers(0, w - iw + 1))
        box = np.array([left + xs.min(), top + ys.min(), left + xs.max() + 1, top + ys.max() + 1], np.float32)
        if boxes and _iou(box, np.stack(boxes)).max() > MAX_IOU:
            continue
        region = img[top:top + ih, left:left + iw]
        img[top:top + ih, left:left + iw] = region * (1 - alpha[..., None]) + color * alpha[..., None]
        boxes.append(box)
        classes.append(int(labels[k]))
    image = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    return (image, np.stack(boxes) if boxes else np.zeros((0, 4), np.float32),
            np.asarray(classes, dtype=np.int64))


def make_scenes(split: str, n: int, seed: int = 0, size: tuple[int, int] = (160, 160),
                start: int = 0, source: tuple[np.ndarray, np.ndarray] | None = None) -> Scenes:
    """Scenes ``start .. start + n - 1`` of ``split`` (``train``: training images, ``eval``: test images)."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {sorted(SPLITS)}, not {split!r}")
    if size[0] < 80 or size[1] < 80:
        raise DataError(f"scenes must be at least 80x80 pixels, not {size[1]}x{size[0]}")
    items, labels = source if source is not None else source_images(split)[:2]
    images, boxes, classes = [], [], []
    for i in range(start, start + n):
        image, b, c = make_scene(np.random.default_rng([seed, SPLITS[split], i]), items, labels, size)
        images.append(image)
        boxes.append(b)
        classes.append(c)
    arr = np.stack(images) if images else np.zeros((0, *size, 3), np.uint8)
    return Scenes(arr, boxes, classes, split, seed)


def coco_dict(scenes: Scenes, file_names: list[str] | None = None) -> dict:
    """COCO-format annotations (ids from 1; category ``k + 1`` is class ``k``)."""
    h, w = scenes.images.shape[1:3]
    images, anns = [], []
    for i, (b, c) in enumerate(zip(scenes.boxes, scenes.classes)):
        images.append({"id": i + 1, "file_name": file_names[i] if file_names else f"{i:06d}.png",
                       "width": int(w), "height": int(h)})
        for box, cls in zip(b.tolist(), c.tolist()):
            x, y, bw, bh = box[0], box[1], box[2] - box[0], box[3] - box[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(cls) + 1,
                         "bbox": [round(x, 2), round(y, 2), round(bw, 2), round(bh, 2)],
                         "area": round(bw * bh, 2), "iscrowd": 0})
    return {"info": {"description": f"Fashion-MNIST detection scenes, split {scenes.split}, seed {scenes.seed}"},
            "images": images, "annotations": anns,
            "categories": [{"id": k + 1, "name": name} for k, name in enumerate(CLASSES)]}


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz whose bytes depend only on the arrays (fixed zip timestamps, fixed order)."""
    tmp = path.with_name(f".{path.name}.partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())
    tmp.replace(path)


def write_split(scenes: Scenes, out_dir: Path, png: bool = False) -> dict[str, Path]:
    """Write ``<split>.npz`` and ``<split>.json`` (and PNGs with ``png``) under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = scenes.split or "scenes"
    paths = {"npz": out_dir / f"{name}.npz", "json": out_dir / f"{name}.json"}
    _write_npz(paths["npz"], {"images": scenes.images, **scenes.flat()})
    files = [f"{name}/{i:06d}.png" for i in range(len(scenes))]
    paths["json"].write_text(json.dumps(coco_dict(scenes, files), separators=(",", ":")) + "\n")
    if png:
        from PIL import Image

        (out_dir / name).mkdir(exist_ok=True)
        for f, im in zip(files, scenes.images):
            Image.fromarray(im).save(out_dir / f, format="PNG", compress_level=6)
        paths["png"] = out_dir / name
    return paths


def read_split(path: Path) -> Scenes:
    """Read a ``<split>.npz`` written by ``write_split``."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            images, boxes, classes, index = z["images"], z["boxes"], z["classes"], z["image_index"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path} is not a scenes file (images, boxes, classes, image_index): {exc}") from None
    order = np.argsort(index, kind="stable")
    splits = np.searchsorted(index[order], np.arange(1, len(images)))
    return Scenes(images, [b.astype(np.float32) for b in np.split(boxes[order], splits)],
                  [c.astype(np.int64) for c in np.split(classes[order], splits)], path.stem)
