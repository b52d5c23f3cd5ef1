"""A few hundred natural photos that install offline, for models without labelled data.

scikit-image ships a handful of real photographs (a cat, a coffee cup, a rocket,
an astronaut, a motorcycle, microscopy and textures). This module reads them as
plain image files (no scikit-image import) and makes deterministic variants:
random-resized crops, horizontal flips, and brightness / contrast / saturation
changes, each drawn from a generator seeded by (seed, index), so the same
(count, seed, size) always gives the same uint8 images.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from optim.errors import DataError

PHOTOS = (
    "chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "motorcycle_left.png",
    "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "camera.png",
    "coins.png", "moon.png", "brick.png", "grass.png", "gravel.png", "cell.png", "clock_motion.png",
)


def photo_dir() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("natural photos need scikit-image installed (pip install scikit-image)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def base_photos() -> list[np.ndarray]:
    from PIL import Image

    d = photo_dir()
    out = []
    for name in PHOTOS:
        p = d / name
        if p.is_file():
            with Image.open(p) as im:
                out.append(np.asarray(im.convert("RGB")))
    if len(out) < 5:
        raise DataError(f"found only {len(out)} of scikit-image's photos under {d}")
    return out


def _variant(img: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    from PIL import Image, ImageEnhance

    h, w = img.shape[:2]
    area = rng.uniform(0.25, 1.0) * h * w
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    ch = int(min(h, round(np.sqrt(area / aspect))))
    cw = int(min(w, round(np.sqrt(area * aspect))))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    pil = Image.fromarray(img[top : top + ch, left : left + cw]).resize((size, size), Image.BILINEAR)
    if rng.random() < 0.5:
        pil = pil.transpose(Image.FLIP_LEFT_RIGHT)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        pil = enhance(pil).enhance(float(rng.uniform(0.75, 1.25)))
    return np.asarray(pil)


def natural_photos(count: int, seed: int = 0, size: int = 256) -> np.ndarray:
    """``count`` uint8 RGB images of ``size`` x ``size``: the photos first, then variants."""
    from PIL import Image

    bases = base_photos()
    out = []
    for i in range(count):
        img = bases[i % len(bases)]
        if i < len(bases) and seed == 0:  # the untouched photos, centre-cropped
            h, w = img.shape[:2]
            s = min(h, w)
            sq = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
            out.append(np.asarray(Image.fromarray(sq).resize((size, size), Image.BILINEAR)))
        else:
            out.append(_variant(img, np.random.default_rng([seed, i]), size))
    return np.stack(out)
