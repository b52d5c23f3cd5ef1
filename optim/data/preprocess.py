"""Turn raw uint8 images into the model's float input, and validate what comes out."""

from __future__ import annotations

import numpy as np

from optim.data.dataset import Dataset
from optim.errors import DataError
from optim.settings import InputSpec, Preprocess


def _to_channels(images: np.ndarray, color: str) -> np.ndarray:
    """(N,H,W) or (N,H,W,C) uint8 -> (N,H,W,C) with the channels the model wants."""
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise DataError(f"raw images must be (N,H,W) or (N,H,W,C), got shape {images.shape}")
    c = images.shape[-1]
    if color == "gray":
        if c == 3:
            w = np.array([0.299, 0.587, 0.114], dtype=np.float32)
            images = (images.astype(np.float32) @ w)[..., None].round().clip(0, 255).astype(np.uint8)
        elif c != 1:
            raise DataError(f"cannot make grey images from {c} channels")
        return images
    if c == 1:
        images = np.repeat(images, 3, axis=-1)
    elif c == 4:
        images = images[..., :3]
    elif c != 3:
        raise DataError(f"cannot make {color.upper()} images from {c} channels")
    return images[..., ::-1] if color == "bgr" else images


def _resize_crop(images: np.ndarray, pp: Preprocess) -> np.ndarray:
    if pp.resize is None and pp.crop is None:
        return images
    from PIL import Image

    out = []
    for im in images:
        pil = Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im)
        if pp.resize is not None:
            w, h = pil.size
            s = pp.resize / min(w, h)
            pil = pil.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
        if pp.crop is not None:
            w, h = pil.size
            if pp.crop > min(w, h):
                raise DataError(f"crop {pp.crop} is larger than the image ({w}x{h}); set resize")
            left, top = (w - pp.crop) // 2, (h - pp.crop) // 2
            pil = pil.crop((left, top, left + pp.crop, top + pp.crop))
        arr = np.asarray(pil)
        out.append(arr[..., None] if arr.ndim == 2 else arr)
    return np.stack(out)


def preprocess(images: np.ndarray, pp: Preprocess) -> np.ndarray:
    """uint8 (N,H,W[,C]) -> float32 in the recipe's layout, scaled and normalised."""
    x = _resize_crop(_to_channels(images, pp.color), pp).astype(np.float32) * np.float32(pp.scale)
    c = x.shape[-1]
    mean = np.asarray(pp.mean, dtype=np.float32)
    std = np.asarray(pp.std, dtype=np.float32)
    for name, v in (("mean", mean), ("std", std)):
        if v.size not in (1, c):
            raise DataError(f"preprocess {name} has {v.size} values but images have {c} channels")
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if pp.layout == "NCHW" else x)


def validate_inputs(x: np.ndarray, spec: InputSpec, source: str) -> np.ndarray:
    if x.shape[0] == 0:
        raise DataError(f"{source}: the data set is empty")
    if tuple(x.shape[1:]) != tuple(spec.shape):
        raise DataError(f"{source}: samples have shape {list(x.shape[1:])} but the model input "
                        f"'{spec.name}' wants {list(spec.shape)} (per sample, without batch)")
    if x.dtype.kind != "f":
        raise DataError(f"{source}: model inputs must be floating point, got {x.dtype}")
    bad = ~np.isfinite(x)
    if bad.any():
        n = int(bad.reshape(len(x), -1).any(axis=1).sum())
        raise DataError(f"{source}: {n} sample(s) contain NaN or inf values")
    return x.astype(np.float32, copy=False)


def model_inputs(ds: Dataset, pp: Preprocess, spec: InputSpec) -> np.ndarray:
    """The model-ready float32 array for a data set (raw uint8 images are preprocessed)."""
    x = ds.images
    if x.dtype == np.uint8:
        x = preprocess(x, pp)
    return validate_inputs(x, spec, ds.source)
