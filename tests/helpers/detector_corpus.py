"""A corpus of detector ONNX graphs shaped like real Ultralytics YOLOv8 exports (issue 21).

Every graph is the bundled, trained ``fashion_detector`` (``optim.sources.detector``: YOLOv8n
structure, 10 Fashion-MNIST classes, trained at 160x160) re-wrapped and exported differently,
so its detections on Fashion-MNIST scenes are real ones. The wrappers here reuse the trained
submodules (``b0`` .. ``b4``, ``fpn4``, ``fpn3``, ``down3``, ``pan4``, ``down4``, ``pan5``,
``head.cv2``, ``head.cv3``, ``head.dfl``) and change only what an exporter sees:

* module names: ``ultralytics`` is YOLOv8's own layout, ``self.model = nn.ModuleList`` of 23
  layers (0-9 backbone, 10-21 neck with ``nn.Upsample`` at 10 and 13 and a ``Concat`` module at
  11, 14, 17 and 20, 22 the ``Detect`` head), so the head's nodes are ``/model.22/...`` and its
  DFL ``/model.22/dfl/...``; ``flat`` keeps the branch convolutions in a ``head`` module but
  does the decode in the top-level module, so the raw output comes from a top-level
  ``/Concat_N`` (no module prefix) and the DFL is ``/dfl/...``, not under the head's name;
* the head's forward is Ultralytics' export forward: per level ``cat(cv2(x), cv3(x))``, one
  ``[N, 4 * 16 + nc, A]`` tensor, ``split`` into box distributions and class logits, DFL,
  ``dist2bbox`` (xywh) times the strides, ``cat((boxes, scores.sigmoid()), 1)``;
* nearest 2x upsampling by scale factor (``nn.Upsample(scale_factor=2)`` or
  ``F.interpolate(scale_factor=2)``), not the bundled model's explicit sizes: ONNX Runtime's
  symbolic shape inference then names the batch ``floor(1.0*batch)``;
* opset 17 or 18, dynamic batch always, dynamic height/width where ``dynamic_hw`` (then the
  anchor grid is computed in the graph from the feature maps' shapes, as Ultralytics does);
* the number of classes. 18 and 80: the class convolution (the last ``nn.Conv2d`` of every
  ``cv3`` branch) keeps its 10 trained channels first, then extra channels with zero weights
  and bias -20 (score sigmoid(-20) ~ 2e-9: never confident, never a best class above the
  decode's 0.001). 1 class: an "object" channel, the largest of the 10 trained class
  logits (the trained class convolution, then ``amax`` over its channels: a ``ReduceMax`` at
  the end of each ``cv3`` branch), so the one score is exactly the trained model's best class
  score, sigmoid(max logit) = max sigmoid, "some Fashion-MNIST item is here". One trained
  channel alone (say Bag) would be a plain ``Conv2d(c3, 1, 1)`` but finds only 15-35 boxes in
  48 scenes, too few for an agreement figure (optim flags fewer than 20); the object channel
  finds about 200. The scene labels (0..9) do not fit one class, so the 1-class graph is
  checked on unlabelled images. It is opset 17: at opset 18 ReduceMax takes its axes as an input,
  which ONNX Runtime's symbolic shape inference (INT8 pre-processing) cannot follow.

Output layout stays the Ultralytics raw ``[N, 4 + nc, A]`` (cx, cy, w, h in input pixels, then
sigmoid scores); input ``images`` (RGB 0..1, NCHW, 160x160), output ``output0``.

``CORPUS`` names the graphs and their features; ``export(name, path)`` writes one;
``verify(name, path)`` checks it with ONNX Runtime against its PyTorch wrapper and against the
bundled model (same boxes and scores for the trained classes). Not a test module.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SIZE = 160  # the trained input size
TRAINED = 10  # classes the bundled detector was trained on
STRIDES = (8, 16, 32)
PAD_BIAS = -20.0  # class logits of the padded channels


@dataclass(frozen=True)
class Graph:
    name: str
    description: str
    nc: int  # classes: 1, 10 (as trained), or more (padded)
    opset: int
    layout: str  # "ultralytics" (/model.22 head, /model.22/dfl) or "flat" (decode in the top-level module)
    upsample: str  # "module" (nn.Upsample(scale_factor=2)) or "functional" (F.interpolate(scale_factor=2))
    dynamic_hw: bool  # height and width dynamic too (batch always is)
    labelled: bool  # scene labels (classes 0..9) fit: the test scores mAP

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, SIZE, SIZE)


#: name -> the graph and a one-line description of its features
CORPUS: dict[str, Graph] = {g.name: g for g in (
    Graph("v8_coco80_op17",
          "Ultralytics module names (/model.22 head, DFL /model.22/dfl), nn.Upsample(scale_factor=2), "
          "80 classes (10 trained + 70 never confident), opset 17, dynamic batch",
          80, 17, "ultralytics", "module", False, True),
    Graph("flat_nc18_op18_dynhw",
          "raw output from a top-level /Concat_N (no module prefix), DFL at /dfl (not under the head), "
          "F.interpolate(scale_factor=2), 18 classes (10 trained + 8 never confident), opset 18, "
          "dynamic batch/height/width (anchors computed in the graph)",
          18, 18, "flat", "functional", True, True),
    Graph("v8_1class_op17_dynhw",
          "one \"object\" class (max of the 10 trained class logits), Ultralytics module names (/model.22, /model.22/dfl), "
          "nn.Upsample(scale_factor=2), opset 17, dynamic batch/height/width; unlabelled",
          1, 17, "ultralytics", "module", True, False),
)}


# -- the pieces ---------------------------------------------------------------------------------

class Concat(nn.Module):
    """Ultralytics' ``Concat`` layer: ``torch.cat`` of a list along channels."""

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, 1)


class Up2(nn.Module):
    """``F.interpolate(scale_factor=2)`` as a module (the functional flavour)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="nearest")


class ObjectLogit(nn.Module):
    """One "object" logit: the largest of the trained class convolution's logits."""

    def __init__(self, trained: nn.Conv2d) -> None:
        super().__init__()
        self.conv = trained

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).amax(1, keepdim=True)


def class_conv(trained: nn.Conv2d, nc: int) -> nn.Module:
    """The end of a ``cv3`` branch with ``nc`` outputs: see the module docstring."""
    if nc == 1:
        return ObjectLogit(trained)
    if nc == TRAINED:
        return trained
    assert nc > TRAINED, nc
    conv = nn.Conv2d(trained.in_channels, nc, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.fill_(PAD_BIAS)
        conv.weight[:TRAINED] = trained.weight
        conv.bias[:TRAINED] = trained.bias
    return conv


def class_branches(cv3: nn.ModuleList, nc: int) -> nn.ModuleList:
    return nn.ModuleList(nn.Sequential(*list(b)[:-1], class_conv(b[-1], nc)) for b in cv3)


def make_anchors(feats: list[torch.Tensor], dynamic: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid-cell centres ``[2, A]`` and strides ``[1, A]`` (Ultralytics' ``make_anchors``, transposed).
    ``dynamic``: from the traced shapes (Range/Shape ops in the graph); else constants."""
    points, strides = [], []
    for f, s in zip(feats, STRIDES):
        h, w = (f.shape[2], f.shape[3]) if dynamic else (int(f.shape[2]), int(f.shape[3]))
        sx = torch.arange(end=w, dtype=f.dtype) + 0.5
        sy = torch.arange(end=h, dtype=f.dtype) + 0.5
        sy, sx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        strides.append(torch.full((h * w, 1), float(s), dtype=f.dtype))
    return torch.cat(points).transpose(0, 1), torch.cat(strides).transpose(0, 1)


def decode(feats: list[torch.Tensor], nc: int, dfl: nn.Module, dynamic: bool) -> torch.Tensor:
    """Ultralytics' ``Detect._inference`` on the per-level ``cat(cv2, cv3)`` maps -> ``[N, 4 + nc, A]``."""
    n = feats[0].shape[0]
    no = 4 * 16 + nc
    x_cat = torch.cat([f.view(n, no, -1) for f in feats], 2)
    box, cls = x_cat.split((4 * 16, nc), 1)
    anchors, strides = make_anchors(feats, dynamic)
    lt, rb = dfl(box).chunk(2, 1)
    x1y1, x2y2 = anchors.unsqueeze(0) - lt, anchors.unsqueeze(0) + rb
    dbox = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * strides
    return torch.cat((dbox, cls.sigmoid()), 1)


class Detect(nn.Module):
    """The head, Ultralytics style: branch convs, and (``decode_here``) the decode with its DFL."""

    def __init__(self, head: nn.Module, nc: int, dynamic: bool, decode_here: bool = True) -> None:
        super().__init__()
        self.nc, self.dynamic, self.decode_here = nc, dynamic, decode_here
        self.cv2 = head.cv2
        self.cv3 = class_branches(head.cv3, nc)
        if decode_here:
            self.dfl = head.dfl

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        maps = [torch.cat((self.cv2[i](x), self.cv3[i](x)), 1) for i, x in enumerate(xs)]
        return decode(maps, self.nc, self.dfl, self.dynamic) if self.decode_here else maps


class UltralyticsLayout(nn.Module):
    """``self.model``: YOLOv8n's 23 layers with its ``from`` indices; 22 is the Detect head."""

    #: layer -> the earlier layers it reads (-1: the previous one), as in yolov8.yaml
    FROM = {11: (-1, 6), 14: (-1, 4), 17: (-1, 12), 20: (-1, 9), 22: (15, 18, 21)}

    def __init__(self, det: nn.Module, graph: Graph) -> None:
        super().__init__()
        up = (lambda: nn.Upsample(scale_factor=2, mode="nearest")) if graph.upsample == "module" else Up2
        self.model = nn.ModuleList([
            det.b0, det.b1[0], det.b1[1], det.b2[0], det.b2[1], det.b3[0], det.b3[1],  # 0-6
            det.b4[0], det.b4[1], det.b4[2],                                              # 7-9 (9: SPPF)
            up(), Concat(), det.fpn4, up(), Concat(), det.fpn3,                           # 10-15 (15: P3)
            det.down3, Concat(), det.pan4, det.down4, Concat(), det.pan5,                 # 16-21 (18: P4, 21: P5)
            Detect(det.head, graph.nc, graph.dynamic_hw),                                 # 22
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: list[torch.Tensor] = []
        for i, m in enumerate(self.model):
            f = self.FROM.get(i)
            if f is not None:
                x = [y[j] if j >= 0 else y[i + j] for j in f]
            x = m(x)
            y.append(x)
        return x


class FlatLayout(nn.Module):
    """The bundled model's names for backbone and neck, a ``head`` of branch convs only, and the
    decode in this (top-level) module: its DFL is ``/dfl/...`` and the output ``/Concat_N``."""

    def __init__(self, det: nn.Module, graph: Graph) -> None:
        super().__init__()
        self.nc, self.dynamic = graph.nc, graph.dynamic_hw
        for name in ("b0", "b1", "b2", "b3", "b4", "fpn4", "fpn3", "down3", "pan4", "down4", "pan5"):
            setattr(self, name, getattr(det, name))
        self.up = nn.Upsample(scale_factor=2, mode="nearest") if graph.upsample == "module" else Up2()
        self.head = Detect(det.head, graph.nc, graph.dynamic_hw, decode_here=False)
        self.dfl = det.head.dfl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.b2(self.b1(self.b0(x)))
        p4 = self.b3(p3)
        p5 = self.b4(p4)
        f4 = self.fpn4(torch.cat((self.up(p5), p4), 1))
        o3 = self.fpn3(torch.cat((self.up(f4), p3), 1))
        o4 = self.pan4(torch.cat((self.down3(o3), f4), 1))
        o5 = self.pan5(torch.cat((self.down4(o4), p5), 1))
        return decode(self.head([o3, o4, o5]), self.nc, self.dfl, self.dynamic)


# -- building, exporting, verifying -------------------------------------------------------------

def bundled() -> nn.Module:
    """The trained bundled detector (a fresh copy each call), eval mode."""
    from optim.sources import load_model

    loaded = load_model("bundled:fashion_detector")
    assert loaded.trained
    return loaded.module.eval()


def build(name: str) -> nn.Module:
    """The PyTorch wrapper of corpus graph ``name`` (eval mode)."""
    graph = CORPUS[name]
    layout = {"ultralytics": UltralyticsLayout, "flat": FlatLayout}[graph.layout]
    return layout(bundled(), graph).eval()


def export(name: str, path: Path) -> Path:
    """Write corpus graph ``name`` to ``path`` (TorchScript exporter, ``dynamo=False``)."""
    graph = CORPUS[name]
    axes = {0: "batch", 2: "height", 3: "width"} if graph.dynamic_hw else {0: "batch"}
    out_axes = {0: "batch", 2: "anchors"} if graph.dynamic_hw else {0: "batch"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the traced shapes are meant
        torch.onnx.export(build(name), (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=False,
                          opset_version=graph.opset, input_names=["images"], output_names=["output0"],
                          dynamic_axes={"images": axes, "output0": out_axes})
    return path


def scene_images(n: int, seed: int = 0, size: tuple[int, int] = (SIZE, SIZE)) -> np.ndarray:
    """``n`` evaluation scenes as the model input: float32 NCHW RGB 0..1."""
    from optim.data.scenes import make_scenes

    return (make_scenes("eval", n, seed, size=size).images.transpose(0, 3, 1, 2) / 255.0).astype(np.float32)


def trained_view(name: str, bundled_out: np.ndarray) -> np.ndarray:
    """The bundled model's raw output restricted (1 class) or padded (18/80: score 0) to graph ``name``."""
    nc = CORPUS[name].nc
    if nc == 1:
        return np.concatenate([bundled_out[:, :4], bundled_out[:, 4:].max(1, keepdims=True)], 1)
    pad = np.zeros((bundled_out.shape[0], nc - TRAINED, bundled_out.shape[2]), bundled_out.dtype)
    return np.concatenate([bundled_out, pad], 1)


def verify(name: str, path: Path, n: int = 6) -> dict[str, float]:
    """Check the file with ONNX Runtime: it equals its PyTorch wrapper (batch ``n`` at 160x160, and
    batch 2 at 224x192 where H/W are dynamic), and the bundled model's boxes and trained-class
    scores (padded classes: below 1e-8), so ``decode`` finds the same detections. Returns the
    largest differences seen."""
    import onnxruntime as ort

    from optim.tasks.detect_ops import decode as np_decode

    graph = CORPUS[name]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["images"]
    assert [o.name for o in sess.get_outputs()] == ["output0"]
    wrapper, ref_model = build(name), bundled()
    sizes = [(SIZE, SIZE, n)] + ([(192, 224, 2)] if graph.dynamic_hw else [])
    worst = {"box_px": 0.0, "score": 0.0, "wrapper": 0.0}
    for h, w, batch in sizes:
        x = scene_images(batch, size=(h, w))
        got = sess.run(None, {"images": x})[0]
        with torch.no_grad():
            mine = wrapper(torch.from_numpy(x)).numpy()
            ref = trained_view(name, ref_model(torch.from_numpy(x)).numpy())
        anchors = sum((h // s) * (w // s) for s in STRIDES)
        assert got.shape == (batch, 4 + graph.nc, anchors), got.shape
        worst["wrapper"] = max(worst["wrapper"], float(np.abs(got - mine).max()))
        worst["box_px"] = max(worst["box_px"], float(np.abs(got[:, :4] - ref[:, :4]).max()))
        worst["score"] = max(worst["score"], float(np.abs(got[:, 4:] - ref[:, 4:]).max()))
        if graph.nc > TRAINED:
            assert got[:, 4 + TRAINED:].max() < 1e-8
        for a, b in zip(np_decode(got), np_decode(ref)):
            assert len(a) == len(b), (len(a), len(b))
            np.testing.assert_array_equal(a.classes, b.classes)
            np.testing.assert_allclose(a.boxes, b.boxes, atol=0.05)
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    assert worst["wrapper"] < 1e-2 and worst["box_px"] < 1e-2 and worst["score"] < 1e-4, worst
    return worst


def write_all(folder: Path) -> dict[str, Path]:
    """Every corpus graph under ``folder`` as ``<name>.onnx``."""
    return {name: export(name, Path(folder) / f"{name}.onnx") for name in CORPUS}


if __name__ == "__main__":  # python -m tests.helpers.detector_corpus OUT_DIR: write and verify every graph
    import sys

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "detector_corpus")
    for gname, p in write_all(out).items():
        print(f"{gname}: {p} {verify(gname, p)}  -- {CORPUS[gname].description}")
