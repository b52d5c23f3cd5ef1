"""A YOLOv8-style object detector written here in PyTorch (the bundled ``fashion_detector``).

The inference structure follows YOLOv8's published design, written from its description:

* ``Conv`` = Conv2d (no bias) + BatchNorm + SiLU; ``C2f`` = a 1x1 conv split in two halves,
  ``n`` bottlenecks chained on the second half, every intermediate concatenated, a 1x1 conv;
  ``SPPF`` = three chained 5x5 max-pools concatenated.
* Backbone: stride-2 convs and C2f stages down to P5/32, then SPPF. Neck: FPN (top-down,
  nearest upsampling + concat + C2f) then PAN (bottom-up, stride-2 conv + concat + C2f),
  giving P3/8, P4/16, P5/32.
* Head: anchor-free and decoupled. Per level, a box branch (two 3x3 convs, a 1x1 conv to
  ``4 * reg_max`` channels) and a class branch (two 3x3 convs, a 1x1 conv to ``nc``).
  Box distances (left, top, right, bottom) are the expectation of a softmax over
  ``reg_max = 16`` bins (DFL), decoded around each grid cell's centre and scaled by the stride.

``forward`` returns the Ultralytics raw layout ``[N, 4 + nc, A]``: ``cx, cy, w, h`` in
input pixels, then the sigmoid class scores; ``A = sum((H/s) * (W/s))`` over strides 8/16/32
(8400 at 640x640, 525 at 160x160). ``forward_train`` returns the undecoded per-anchor
distributions and logits the training loss needs. Width and depth multipliers give the
``n`` (0.25 / 0.33) and ``s`` (0.50 / 0.33) variants. The network is fully convolutional:
any input whose sides are multiples of 32 runs (160, 640, 1280, ...).

Input: RGB in [0, 1] (uint8 / 255, no mean or std), NCHW.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from optim.sources.fashion_resnet import CLASSES

#: ONNX node names (regexes, as ``--exclude-nodes`` / a recipe's ``exclude_nodes`` take them) of the
#: head's decode after its last convolutions: DFL softmax, sigmoid, box arithmetic and the final
#: Concat of pixel boxes (0..640) with scores (0..1). ORT ``quantize_static`` puts one INT8 scale on
#: that Concat, which rounds every score to 0 (mAP 76.9 -> 0.0 on the evaluation scenes); with these
#: kept in FP32 the INT8 model lost 0.8 points. modelopt's TensorRT placement (Conv inputs only) needs none.
DECODE_NODES = ("/head/dfl/.*", "/head/Sigmoid", "/head/Concat.*", "/head/Add.*", "/head/Sub.*",
                "/head/Div.*", "/head/Mul_.*", "/head/Slice.*")
STRIDES = (8, 16, 32)
REG_MAX = 16
#: variant -> (depth multiple, width multiple, max channels), as in YOLOv8's scales
VARIANTS = {"n": (0.33, 0.25, 1024), "s": (0.33, 0.50, 1024)}


def _width(c: int, width: float, max_channels: int) -> int:
    return int(math.ceil(min(c, max_channels) * width / 8) * 8)


def _depth(n: int, depth: float) -> int:
    return max(round(n * depth), 1)


class Conv(nn.Module):
    """Conv2d + BatchNorm2d + SiLU."""

    def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool) -> None:
        super().__init__()
        self.cv1 = Conv(c, c, 3)
        self.cv2 = Conv(c, c, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP block with two convolutions and ``n`` bottlenecks whose outputs are all kept."""

    def __init__(self, cin: int, cout: int, n: int = 1, shortcut: bool = False) -> None:
        super().__init__()
        self.c = cout // 2
        self.cv1 = Conv(cin, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, cout, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).split((self.c, self.c), 1))
        for bottleneck in self.m:
            y.append(bottleneck(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, cin: int, cout: int, k: int = 5) -> None:
        super().__init__()
        c = cin // 2
        self.cv1 = Conv(cin, c, 1)
        self.cv2 = Conv(4 * c, cout, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class DFL(nn.Module):
    """Distribution focal loss integral: expectation of a softmax over ``reg_max`` bins (fixed 1x1 conv)."""

    def __init__(self, reg_max: int = REG_MAX) -> None:
        super().__init__()
        self.reg_max = reg_max
        self.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(reg_max, dtype=torch.float32).view(1, reg_max, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, 4 * reg_max, A] -> [N, 4, A]
        n, _, a = x.shape
        return self.conv(x.view(n, 4, self.reg_max, a).transpose(2, 1).softmax(1)).view(n, 4, a)


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Nearest 2x upsampling with explicit output sizes. ``nn.Upsample(scale_factor=2)`` exports
    a Resize with scales, whose batch dimension ONNX Runtime's symbolic shape inference names
    ``floor(1.0*batch)`` and cannot merge with ``batch`` at the following Concat, so its INT8
    ``quantize_static`` pre-processing fails ("Incomplete symbolic shape inference")."""
    return F.interpolate(x, size=(int(x.shape[2]) * 2, int(x.shape[3]) * 2), mode="nearest")


def make_anchors(shapes: list[tuple[int, int]], strides: tuple[int, ...] = STRIDES,
                 device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid-cell centres ``[A, 2]`` (in feature cells, x then y) and strides ``[A, 1]``."""
    points, stride_t = [], []
    for (h, w), s in zip(shapes, strides):
        sy, sx = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32) + 0.5,
                                torch.arange(w, device=device, dtype=torch.float32) + 0.5, indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_t.append(torch.full((h * w, 1), float(s), device=device))
    return torch.cat(points), torch.cat(stride_t)


def dist2bbox(dist: torch.Tensor, points: torch.Tensor, dim: int = 1, xywh: bool = True) -> torch.Tensor:
    """(left, top, right, bottom) distances around ``points`` -> xywh (or xyxy) boxes."""
    lt, rb = dist.chunk(2, dim)
    x1y1, x2y2 = points - lt, points + rb
    if xywh:
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)
    return torch.cat((x1y1, x2y2), dim)


class Detect(nn.Module):
    """Anchor-free decoupled head with DFL box regression."""

    def __init__(self, nc: int, channels: tuple[int, ...], reg_max: int = REG_MAX) -> None:
        super().__init__()
        self.nc, self.reg_max, self.nl = nc, reg_max, len(channels)
        c2 = max(16, channels[0] // 4, 4 * reg_max)
        c3 = max(channels[0], min(nc, 100))
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(c, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1))
                                 for c in channels)
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(c, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1))
                                 for c in channels)
        self.dfl = DFL(reg_max)

    def init_bias(self, image_size: int = 640) -> None:
        """Box bias 1, class bias for a prior of about 5 objects per image (YOLOv8's choice)."""
        for box, cls, s in zip(self.cv2, self.cv3, STRIDES):
            box[-1].bias.data[:] = 1.0
            cls[-1].bias.data[:] = math.log(5 / self.nc / (image_size / s) ** 2)

    def raw(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        """Per-anchor box distributions ``[N, 4*reg_max, A]``, class logits ``[N, nc, A]``, level shapes."""
        n = feats[0].shape[0]
        box = torch.cat([self.cv2[i](f).view(n, 4 * self.reg_max, -1) for i, f in enumerate(feats)], 2)
        cls = torch.cat([self.cv3[i](f).view(n, self.nc, -1) for i, f in enumerate(feats)], 2)
        return box, cls, [(int(f.shape[2]), int(f.shape[3])) for f in feats]

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        box, cls, shapes = self.raw(feats)
        points, strides = make_anchors(shapes, STRIDES[: self.nl], box.device)
        xywh = dist2bbox(self.dfl(box), points.t().unsqueeze(0), dim=1) * strides.t().unsqueeze(0)
        return torch.cat((xywh, cls.sigmoid()), 1)


class FashionDetector(nn.Module):
    """YOLOv8-structured detector; ``variant`` "n" (about 3.0M parameters) or "s" (about 11M)."""

    def __init__(self, num_classes: int = len(CLASSES), variant: str = "n") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, not {variant!r}")
        d, w, mc = VARIANTS[variant]
        c = [_width(x, w, mc) for x in (64, 128, 256, 512, 1024)]
        self.variant, self.nc = variant, num_classes
        # backbone
        self.b0 = Conv(3, c[0], 3, 2)                                                  # P1/2
        self.b1 = nn.Sequential(Conv(c[0], c[1], 3, 2), C2f(c[1], c[1], _depth(3, d), True))  # P2/4
        self.b2 = nn.Sequential(Conv(c[1], c[2], 3, 2), C2f(c[2], c[2], _depth(6, d), True))  # P3/8
        self.b3 = nn.Sequential(Conv(c[2], c[3], 3, 2), C2f(c[3], c[3], _depth(6, d), True))  # P4/16
        self.b4 = nn.Sequential(Conv(c[3], c[4], 3, 2), C2f(c[4], c[4], _depth(3, d), True),
                                SPPF(c[4], c[4]))                                       # P5/32
        # neck: FPN top-down, then PAN bottom-up
        n = _depth(3, d)
        self.fpn4 = C2f(c[4] + c[3], c[3], n)
        self.fpn3 = C2f(c[3] + c[2], c[2], n)
        self.down3 = Conv(c[2], c[2], 3, 2)
        self.pan4 = C2f(c[2] + c[3], c[3], n)
        self.down4 = Conv(c[3], c[3], 3, 2)
        self.pan5 = C2f(c[3] + c[4], c[4], n)
        self.head = Detect(num_classes, (c[2], c[3], c[4]))
        self.head.init_bias()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        p3 = self.b2(self.b1(self.b0(x)))
        p4 = self.b3(p3)
        p5 = self.b4(p4)
        f4 = self.fpn4(torch.cat((upsample2(p5), p4), 1))
        o3 = self.fpn3(torch.cat((upsample2(f4), p3), 1))
        o4 = self.pan4(torch.cat((self.down3(o3), f4), 1))
        o5 = self.pan5(torch.cat((self.down4(o4), p5), 1))
        return [o3, o4, o5]

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        return self.head.raw(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def fashion_detector(variant: str = "n", num_classes: int = len(CLASSES)) -> FashionDetector:
    return FashionDetector(num_classes, variant)
