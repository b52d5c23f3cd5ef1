"""COCO-format detection data: an image folder plus an instances JSON, letterboxed to the model input.

``load_coco(spec, input_shape)`` reads ``spec.annotations`` (COCO "instances" JSON: ``images``,
``annotations``, ``categories``) and the files ``spec.path / file_name`` of its ``images``, in
the JSON's order (the first ``spec.count`` of them when ``count`` is set), and returns uint8
RGB images of the model's input size with their boxes moved into the same pixels.

Letterbox (how Ultralytics evaluates a model exported at a fixed size): each image of
``w x h`` pixels is scaled by ``r = min(H / h, W / w)`` (up or down, aspect ratio kept) to
``round(w * r) x round(h * r)`` with bilinear interpolation (PIL), centred on an ``H x W``
canvas of grey 114 (left/top padding ``floor((W - nw) / 2)``, ``floor((H - nh) / 2)``, the
extra pixel of an odd padding going right/bottom, as Ultralytics does). A COCO box
``[x, y, w, h]`` (original pixels, top-left corner) becomes ``[x1, y1, x2, y2]`` in input
pixels by the same scale per axis (``nw / w``, ``nh / h``: the factor the pixels were
actually resized by, which is ``r`` up to the rounding of the new size) plus the padding.
Boxes are clipped to the image first (one wholly outside it is left out).

Classes: the category ids of ``categories``, sorted, are numbered 0..nc-1 (COCO's 80
categories have ids 1..90 with gaps; sorted, they give the 80-class order that YOLO models
trained on COCO use). The JSON must therefore list every category the model was trained
on, not only those present in the annotations; class names come from the same list.

Left out, like Ultralytics' COCO converter does: crowd annotations (``iscrowd: 1``; COCO
evaluation treats them as regions to ignore, which optim's mAP does not have) and boxes of
zero width or height. An image may have no annotations (it then has no boxes); a file with no
annotations at all (its ``categories`` then optional) is unlabelled data: no mAP, only agreement
with FP32 (an mAP against no boxes would read 100 or 0 whatever the model does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from optim.errors import DataError

PAD_VALUE = 114


def letterbox_geometry(w: int, h: int, out_w: int, out_h: int) -> tuple[int, int, int, int]:
    """(new width, new height, left pad, top pad) of a ``w x h`` image letterboxed to ``out_w x out_h``."""
    r = min(out_h / h, out_w / w)
    nw = min(out_w, max(1, round(w * r)))
    nh = min(out_h, max(1, round(h * r)))
    return nw, nh, (out_w - nw) // 2, (out_h - nh) // 2


def letterbox(image: np.ndarray, out_w: int, out_h: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """uint8 RGB (h, w, 3) -> (out_h, out_w, 3) letterboxed, and its geometry (see ``letterbox_geometry``)."""
    from PIL import Image

    h, w = image.shape[:2]
    nw, nh, left, top = letterbox_geometry(w, h, out_w, out_h)
    if (nw, nh) != (w, h):
        image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    out = np.full((out_h, out_w, 3), PAD_VALUE, np.uint8)
    out[top:top + nh, left:left + nw] = image
    return out, (nw, nh, left, top)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"COCO annotations file not found: {path} (annotations: the instances JSON of the images)")
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                        "annotations must be a COCO instances JSON file") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise DataError(f"cannot read COCO annotations {path}: {exc}") from None
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise DataError(f"{path} is not a COCO instances file: it needs an 'images' list "
                        "(with 'annotations' and 'categories')")
    for key in ("annotations", "categories"):
        if not isinstance(coco.get(key, []), list):
            raise DataError(f"{path}: '{key}' must be a list")
    return coco


def _field(entry: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(entry, dict) or key not in entry or not isinstance(entry[key], kind) \
            or isinstance(entry[key], bool):
        raise DataError(f"{where} has no valid '{key}'" + (f" (got {entry.get(key)!r})" if isinstance(entry, dict)
                                                           and key in entry else ""))
    return entry[key]


def _categories(coco: dict[str, Any], path: Path) -> tuple[dict[int, int], tuple[str, ...]]:
    cats = coco.get("categories") or []
    if not cats:
        raise DataError(f"{path} lists no 'categories': list every category the model was trained on "
                        "(their sorted ids become classes 0..nc-1)")
    names: dict[int, str] = {}
    for i, c in enumerate(cats):
        cid = _field(c, "id", int, f"{path}: category {i}")
        if cid in names:
            raise DataError(f"{path}: category id {cid} appears twice in 'categories'")
        names[cid] = str(c.get("name", cid))
    ids = sorted(names)
    return {cid: k for k, cid in enumerate(ids)}, tuple(names[cid] for cid in ids)


def _read_image(file: Path, entry: dict[str, Any], where: str) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not file.is_file():
        raise DataError(f"{where}: image file not found: {file} (images are read from the data 'path' "
                        "folder joined with each image's file_name)")
    try:
        with Image.open(file) as im:
            want = (entry.get("width"), entry.get("height"))
            if None not in want and im.size != want:
                im = ImageOps.exif_transpose(im)  # a camera's orientation tag may turn it the JSON's way
            if None not in want and im.size != want:
                raise DataError(f"{where}: {file} is {im.size[0]}x{im.size[1]} pixels but the annotations say "
                                f"{want[0]}x{want[1]}: its boxes would not fit; fix width/height or the file")
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{where}: cannot read image {file}: {exc}") from None


def load_coco(spec, input_shape: tuple[int, ...]):
    """A ``Dataset`` of letterboxed uint8 images (N, H, W, 3) with ``BoxLabels`` in input pixels."""
    from optim.data.dataset import Dataset
    from optim.tasks.detect_ops import BoxLabels

    if len(input_shape) != 3 or input_shape[0] != 3:
        raise DataError(f"COCO images are RGB: the model input must be [3, H, W], not {list(input_shape)}")
    out_h, out_w = int(input_shape[1]), int(input_shape[2])
    folder, ann_path = Path(spec.path), Path(spec.annotations)
    coco = _read_json(ann_path)
    if not folder.is_dir():
        raise DataError(f"COCO image folder not found: {folder} (data 'path' must be the folder of the images)")
    unlabelled = not coco.get("annotations")  # no boxes at all: no labels, not "nothing to find"
    class_of, names = ({}, ()) if unlabelled and not coco.get("categories") else _categories(coco, ann_path)
    images = coco["images"]
    if not images:
        raise DataError(f"{ann_path} lists no images")
    index: dict[Any, int] = {}
    for i, im in enumerate(images):
        iid = _field(im, "id", (int, str), f"{ann_path}: image {i}")
        _field(im, "file_name", str, f"{ann_path}: image {i} (id {iid})")
        if iid in index:
            raise DataError(f"{ann_path}: image id {iid} appears twice in 'images'")
        index[iid] = i
    boxes: list[list[list[float]]] = [[] for _ in images]
    classes: list[list[int]] = [[] for _ in images]
    for j, a in enumerate(coco.get("annotations") or []):
        where = f"{ann_path}: annotation {a.get('id', j) if isinstance(a, dict) else j}"
        iid = _field(a, "image_id", (int, str), where)
        if iid not in index:
            raise DataError(f"{where} names image id {iid}, which is not in 'images'")
        cid = _field(a, "category_id", int, where)
        if cid not in class_of:
            raise DataError(f"{where} names category id {cid}, which is not in 'categories' "
                            f"(ids {', '.join(map(str, sorted(class_of)))})")
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
            raise DataError(f"{where} has no valid 'bbox' [x, y, width, height] (got {bbox!r})")
        if a.get("iscrowd", 0) or bbox[2] <= 0 or bbox[3] <= 0:
            continue
        x, y, w, h = (float(v) for v in bbox)
        boxes[index[iid]].append([x, y, x + w, y + h])
        classes[index[iid]].append(class_of[cid])

    n = len(images) if spec.count is None else min(spec.count, len(images))
    out = np.empty((n, out_h, out_w, 3), np.uint8)
    moved: list[np.ndarray] = []
    kept: list[np.ndarray] = []
    for i in range(n):
        entry = images[i]
        where = f"{ann_path}: image id {entry['id']}"
        pixels = _read_image(folder / entry["file_name"], entry, where)
        h, w = pixels.shape[:2]
        out[i], (nw, nh, left, top) = letterbox(pixels, out_w, out_h)
        b = np.asarray(boxes[i], np.float64).reshape(-1, 4)
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, w) * (nw / w) + left
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, h) * (nh / h) + top
        keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])  # a box wholly outside the image is left out
        moved.append(b[keep].astype(np.float32))
        kept.append(np.asarray(classes[i], np.int64)[keep])
    first = f"first {n} of " if n < len(images) else ""
    what = "no annotations" if unlabelled else f"{len(names)} categories"
    source = f"COCO {ann_path.name} ({first}{len(images)} images from {folder}, {what}, letterboxed to {out_w}x{out_h})"
    return Dataset(out, None if unlabelled else BoxLabels(moved, kept), source, class_names=names)
