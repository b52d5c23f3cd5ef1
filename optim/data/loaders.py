"""Load images and labels from the formats a DataSpec names.

Arrays are read with ``allow_pickle=False``: an object array (which would need
unpickling) is refused with a clear error.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from optim.data.dataset import Dataset
from optim.data.idx import read_idx
from optim.errors import DataError
from optim.settings import DataSpec

if TYPE_CHECKING:
    from optim.tasks import Task

BOX_KEYS = {"boxes", "classes", "image_index"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _load_array(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{what} file not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(6)
    if not (magic.startswith(b"\x93NUMPY") or magic.startswith(b"PK")):
        raise DataError(f"{path} is not a readable .npy/.npz file (no NumPy or zip header)")
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(f"{path} holds Python objects, which optim never unpickles; "
                            "save plain numeric arrays (np.save with a numeric dtype)") from None
        raise DataError(f"{path} is not a readable .npy/.npz file: {exc}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path} is not a readable .npy/.npz file: {exc}") from None
    return arr


def _from_npz(spec: DataSpec) -> Dataset:
    assert spec.path is not None
    archive = _load_array(spec.path, "npz")
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{spec.path} is a .npy array, not an .npz archive; use kind: npy")
    with archive:
        keys = set(archive.files)
        if spec.images_key not in keys:
            raise DataError(f"{spec.path} has no array '{spec.images_key}' (it has: "
                            f"{', '.join(sorted(keys)) or 'nothing'}); set images_key")
        try:
            images = archive[spec.images_key]
            if BOX_KEYS <= keys:  # detection boxes (optim.data.scenes.write_split's layout)
                from optim.tasks.detect_ops import BoxLabels

                labels = BoxLabels.from_flat(archive["boxes"], archive["classes"], archive["image_index"],
                                             len(images))
            else:
                labels = archive[spec.labels_key] if spec.labels_key in keys else None
        except ValueError:
            raise DataError(f"{spec.path} holds Python objects, which optim never unpickles") from None
    return Dataset(images, labels, str(spec.path))


def _plain_array(path: Path, what: str) -> np.ndarray:
    arr = _load_array(path, what)
    if isinstance(arr, np.lib.npyio.NpzFile):
        arr.close()
        raise DataError(f"{path} is an .npz archive, not a .npy array; use kind: npz")
    return arr


def _from_npy(spec: DataSpec) -> Dataset:
    assert spec.path is not None
    images = _plain_array(spec.path, "images")
    labels = _plain_array(spec.labels, "labels") if spec.labels else None
    return Dataset(images, labels, str(spec.path))


def _from_idx(spec: DataSpec) -> Dataset:
    assert spec.path is not None
    labels = read_idx(spec.labels) if spec.labels else None
    return Dataset(read_idx(spec.path), labels, str(spec.path))


def _from_folder(spec: DataSpec, fit: tuple[int, int] | None = None) -> Dataset:
    """Images of a folder: one sub-folder per class (labels), or flat (no labels). ``fit`` (out_w,
    out_h): letterbox every image of a flat folder to that size (detection's unlabelled data)."""
    from PIL import Image, UnidentifiedImageError

    root = spec.path
    assert root is not None
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if fit is not None and classes:
        raise DataError(f"{root} has sub-folders ({', '.join(classes[:3])}{', ...' if len(classes) > 3 else ''}), "
                        "which name classes; detection data is a flat folder of images (no labels) or "
                        "kind: coco (an image folder with a COCO annotations JSON)")
    if classes:
        files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).rglob("*"))
                 if f.suffix.lower() in IMAGE_SUFFIXES]
    else:
        files = [(f, -1) for f in sorted(root.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    files = files[:spec.count] if spec.count else files
    images = []
    for f, _ in files:
        try:
            with Image.open(f) as im:
                images.append(np.asarray(im.convert("RGB")))
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"cannot read image {f}: {exc}") from None
    if fit is not None:
        from optim.data.coco import letterbox

        images = [letterbox(im, *fit)[0] for im in images]
        return Dataset(np.stack(images), None, f"{root} ({len(images)} images letterboxed to {fit[0]}x{fit[1]})")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        images = _same_size(images)
    labels = np.array([lab for _, lab in files]) if classes else None
    return Dataset(np.stack(images), labels, str(root), class_names=tuple(classes))


def _same_size(images: list[np.ndarray]) -> list[np.ndarray]:
    """Folders of mixed sizes: resize every image to the smallest height/width seen.

    The recipe's resize/crop then acts on these; give a ``resize`` in the recipe to
    control the final size.
    """
    from PIL import Image

    h = min(im.shape[0] for im in images)
    w = min(im.shape[1] for im in images)
    return [np.asarray(Image.fromarray(im).resize((w, h), Image.BILINEAR)) for im in images]


def _synthetic(spec: DataSpec, input_shape: tuple[int, ...]) -> Dataset:
    assert spec.count is not None
    rng = np.random.default_rng(spec.seed)
    x = rng.standard_normal((spec.count, *input_shape)).astype(np.float32)
    return Dataset(x, None, f"synthetic normal (seed {spec.seed}, {spec.count} samples)", synthetic=True)


def _photos(spec: DataSpec) -> Dataset:
    from optim.data.photos import natural_photos

    assert spec.count is not None
    return Dataset(natural_photos(spec.count, spec.seed), None,
                   f"natural photos (scikit-image, seed {spec.seed}, {spec.count} images)")


def _scenes(spec: DataSpec, input_shape: tuple[int, ...]) -> Dataset:
    from optim.data.scenes import CLASSES, make_scenes
    from optim.tasks.detect_ops import BoxLabels

    assert spec.count is not None
    if len(input_shape) != 3 or input_shape[0] != 3:
        raise DataError(f"scenes are RGB images: the model input must be [3, H, W], not {list(input_shape)}")
    sc = make_scenes(spec.split, spec.count, spec.seed, size=(input_shape[1], input_shape[2]))
    return Dataset(sc.images, BoxLabels(sc.boxes, sc.classes),
                   f"Fashion-MNIST scenes ({spec.split} split, seed {spec.seed}, {spec.count} images "
                   f"{input_shape[2]}x{input_shape[1]})", class_names=CLASSES)


def _coco(spec: DataSpec, input_shape: tuple[int, ...]) -> Dataset:
    from optim.data.coco import load_coco

    return load_coco(spec, input_shape)


def load_dataset(spec: DataSpec, input_shape: tuple[int, ...], task: Task | None = None) -> Dataset:
    """The images (and labels, as ``task`` reads them: ``Task.check_labels``) a spec names.

    ``task`` decides what labels it takes, and whether a flat image folder is letterboxed to the
    model's ``[3, H, W]`` input, as detection evaluates (``optim.data.coco``). Without one, box
    labels are read as detection reads them and other labels as classification does."""
    if spec.kind == "folder" and task is not None and task.letterbox_images:
        if len(input_shape) != 3 or input_shape[0] != 3:
            raise DataError(f"letterboxed images are RGB: the model input must be [3, H, W], not {list(input_shape)}")
        ds = _from_folder(spec, (int(input_shape[2]), int(input_shape[1])))
    elif spec.kind == "synthetic":
        ds = _synthetic(spec, input_shape)
    elif spec.kind == "photos":
        ds = _photos(spec)
    elif spec.kind == "scenes":
        ds = _scenes(spec, input_shape)
    elif spec.kind == "coco":
        ds = _coco(spec, input_shape)
    else:
        ds = {"npz": _from_npz, "npy": _from_npy, "idx": _from_idx, "folder": _from_folder}[spec.kind](spec)
    if ds.images.dtype == object or ds.images.dtype.kind not in "uif":
        raise DataError(f"{ds.source}: images must be a numeric array, got dtype {ds.images.dtype}")
    if len(ds) == 0:
        raise DataError(f"{ds.source}: the data set is empty")
    if ds.labels is not None:
        rule = task or _task("detection" if hasattr(ds.labels, "boxes") else "classification")
        ds.labels = rule.check_labels(ds.labels, len(ds), ds.source)
    return ds


def _task(name: str) -> Task:
    from optim.tasks import get_task

    return get_task(name)


def parse_data_arg(arg: str) -> DataSpec:
    """A command-line ``--data`` value: a spec .yaml, .npz, .npy, an IDX file, a folder,
    ``photos:N``, ``scenes:N`` (detection scenes with boxes) or ``synthetic:N``."""
    from optim.recipe import load_data_spec

    if arg.startswith("photos:"):
        try:
            return DataSpec(kind="photos", count=int(arg.split(":", 1)[1]))
        except ValueError:
            raise DataError(f"bad data '{arg}': use photos:N with N a positive count") from None
    if arg.startswith("scenes:"):
        try:
            return DataSpec(kind="scenes", count=int(arg.split(":", 1)[1]))
        except ValueError:
            raise DataError(f"bad data '{arg}': use scenes:N (N evaluation scenes, with boxes)") from None
    if arg.startswith("synthetic:"):
        try:
            return DataSpec(kind="synthetic", count=int(arg.split(":", 1)[1]))
        except ValueError:
            raise DataError(f"bad data '{arg}': use synthetic:N with N a positive count") from None
    p = Path(arg)
    if p.suffix in (".yaml", ".yml"):
        return load_data_spec(p.name, p.parent.resolve(), arg)
    if p.is_dir():
        return DataSpec(kind="folder", path=p.resolve())
    if not p.exists():
        raise DataError(f"data not found: {arg}")
    kind = {".npz": "npz", ".npy": "npy"}.get(p.suffix)
    if kind is None and ("idx" in p.name or p.name.endswith("-ubyte.gz")):
        kind = "idx"
    if kind is None:
        raise DataError(f"cannot tell the format of {arg}: give a .npz, .npy, IDX file, "
                        "image folder, data spec .yaml, or synthetic:N")
    return DataSpec(kind=kind, path=p.resolve())
