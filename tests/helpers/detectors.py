"""A user's own detector in the Ultralytics/YOLOv8 layout, and its COCO data (tests/test_user_detector.py,
tests/test_unlabelled_detection.py).

The model is made here: a fixed-weight "square detector" with the Ultralytics ONNX layout
(input ``images`` [N, 3, 64, 64] float RGB 0..1, output ``output0`` [N, 4 + 3, 4096]:
cx, cy, w, h in input pixels, then per-class sigmoid scores). A 1x1 convolution turns each
pixel into per-class colour evidence (pure red, green or blue: 1; grey, white, dark: 0; 16
channels, each class several times, as modelopt leaves narrower convolutions in FP32), a
16x16 convolution averages it over the 16x16 window whose top-left corner is each pixel,
and a steep sigmoid of that mean is the class score of the anchor's fixed box (that window).
So a 16x16 coloured square in the model input is found exactly, with score ~1, and the
detections of an INT8 copy can be compared with FP32's. The data: PNG images of several
sizes (the letterbox scales them up, down or not at all) with coloured squares drawn where
they become 16x16 in the model input, and a COCO JSON with non-contiguous category ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SIZE, SIDE = 64, 16  # model input (square) and the box side it finds, in input pixels
COLOURS = {3: ("red", (230, 20, 20)), 7: ("green", (20, 230, 20)), 11: ("blue", (20, 20, 230))}
CLASS_OF = {3: 0, 7: 1, 11: 2}  # sorted category ids -> classes


def square_detector():
    """Modules named as in an Ultralytics export: the head's own nodes are ``/model.1/<Op>``, its
    convolution ``/model.1/cv3/Conv`` (optim keeps the first kind in FP32, quantizes the second)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    nc, width = 3, 16  # 16 evidence channels (channel j: class j % 3): modelopt skips narrower convs
    k, t = 60.0, 0.85  # score = sigmoid(k * (window mean - t))
    of = torch.arange(width) % nc

    class Evidence(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, width, 1)
            with torch.no_grad():
                self.conv.weight.copy_((3 * torch.eye(nc) - 1)[of].view(width, nc, 1, 1))  # 2 own - 1 each other
                self.conv.bias.fill_(-0.5)

        def forward(self, x):
            return self.conv(x).clamp(0, 1)

    class Detect(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cv3 = nn.Conv2d(width, nc, SIDE)
            with torch.no_grad():
                mine = (of[None, :] == torch.arange(nc)[:, None]).float()  # (nc, width)
                self.cv3.weight.copy_((mine / mine.sum(1, keepdim=True) * k / SIDE ** 2)[:, :, None, None]
                                      .expand(nc, width, SIDE, SIDE))
                self.cv3.bias.fill_(-k * t)
            ys, xs = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
            boxes = np.stack([xs + SIDE / 2, ys + SIDE / 2, np.full_like(xs, SIDE), np.full_like(ys, SIDE)])
            self.register_buffer("boxes", torch.tensor(boxes.reshape(1, 4, -1), dtype=torch.float32))

        def forward(self, e):
            s = torch.sigmoid(self.cv3(F.pad(e, (0, SIDE - 1, 0, SIDE - 1)))).flatten(2)
            return torch.cat([self.boxes.expand(e.shape[0], -1, -1), s], 1)

    class SquareDetector(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = nn.ModuleList([Evidence(), Detect()])

        def forward(self, x):
            for m in self.model:
                x = m(x)
            return x

    return SquareDetector().eval()


#: the head's own nodes (optim run keeps them in FP32 for detection; optim quantize takes them as
#: --exclude-nodes): ORT's quantize_static would put one INT8 scale on the Concat of pixel boxes
#: and 0..1 scores, which rounds every score to 0
HEAD = r"^/model\.1/[^/]+$"


def export(path: Path, *, dynamic: bool = True) -> Path:
    import torch

    axes = {"images": {0: "batch"}, "output0": {0: "batch"}} if dynamic else None
    torch.onnx.export(square_detector(), (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=False,
                      opset_version=17, input_names=["images"], output_names=["output0"], dynamic_axes=axes)
    return path


# (width, height), and squares (category id, x, y) in the image's own pixels; the square's side
# there is SIDE / r, so that the letterbox (scale r) makes it SIDE pixels of the model input
IMAGES = [
    ((128, 96), [(7, 20, 30), (3, 80, 10)]),       # r = 1/2: 64x48, 8 px grey above and below
    ((64, 64), [(3, 5, 7), (11, 40, 30)]),          # r = 1
    ((96, 128), [(11, 10, 70), (7, 50, 4)]),       # r = 1/2: 48x64, 8 px left and right
    ((32, 32), [(3, 2, 3), (7, 20, 21)]),           # r = 2: scaled up
    ((64, 48), [(7, 30, 20), (3, 1, 1), (11, 45, 2)]),  # r = 1, 8 px above and below
    ((40, 64), [(3, 12, 40), (11, 20, 5)]),         # r = 1, 12 px left and right
    ((32, 24), [(11, 3, 3), (3, 14, 6)]),           # r = 2: 64x48
    ((64, 64), []),                                 # nothing to find
    ((128, 96), [(3, 60, 50), (11, 2, 2)]),
    ((64, 64), [(7, 44, 44), (7, 3, 40), (3, 22, 2)]),
]


def write_data(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """PNGs under root/images and root/ann.json (COCO, image ids not in file order)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i, ((w, h), squares) in enumerate(IMAGES):
        r = min(SIZE / h, SIZE / w)
        side = round(SIDE / r)
        px = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
        for cid, x, y in squares:
            assert x + side <= w and y + side <= h
            px[y:y + side, x:x + side] = COLOURS[cid][1]
            anns.append({"id": len(anns) + 1, "image_id": 500 - 7 * i, "category_id": cid,
                         "bbox": [x, y, side, side], "area": side * side, "iscrowd": 0})
        name = f"img_{i:02d}.png"
        Image.fromarray(px).save(folder / name)
        images.append({"id": 500 - 7 * i, "file_name": name, "width": w, "height": h})
    anns.append({"id": 999, "image_id": 500, "category_id": 3, "bbox": [0, 0, 50, 50], "area": 2500,
                 "iscrowd": 1})  # a crowd region: left out
    cats = [{"id": cid, "name": name} for cid, (name, _) in sorted(COLOURS.items(), reverse=True)]
    ann = root / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return folder, ann


def coco_spec(root: Path, **kw):
    from optim.settings import DataSpec

    return DataSpec(kind="coco", path=root / "images", annotations=root / "ann.json", **kw)


# -- raw detection outputs (for graphs that take them as input: models.identity_model) --------

def raw_scene(rng, n: int, nc: int, anchors: int, empty: tuple[int, ...] = ()) -> np.ndarray:
    """Raw [n, 4 + nc, anchors] outputs: half the boxes in a few tight clusters (heavy overlap,
    several classes per cluster), half small and scattered (mostly alone, so ``conf`` decides
    them); distinct scores (no ties), many best scores near any ``conf``."""
    x = np.zeros((n, 4 + nc, anchors), np.float32)
    for i in range(n):
        centres = rng.uniform(30, 130, (6, 2))
        which = rng.integers(0, len(centres), anchors)
        x[i, 0:2] = (centres[which] + rng.normal(0, 4, (anchors, 2))).T
        x[i, 2:4] = rng.uniform(15, 45, (2, anchors))
        alone = rng.random(anchors) < 0.5
        x[i, 0:2, alone] = rng.uniform(0, 2000, (int(alone.sum()), 2))
        x[i, 2:4, alone] = rng.uniform(2, 12, (int(alone.sum()), 2))
        scores = rng.permutation(np.linspace(0.01, 0.99, nc * anchors)).reshape(nc, anchors)
        x[i, 4:] = (scores * rng.uniform(0.2, 1.0, anchors)).astype(np.float32)  # spread the best scores
        if i in empty:
            x[i, 4:] *= 0.2  # every score below conf 0.25
    assert all(len(np.unique(img[4:].max(0))) == anchors for img in x)  # no ties within an image
    return x
