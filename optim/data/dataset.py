"""A loaded data set: images (raw uint8 or model-ready floats), labels as the task reads them, and where
they came from. Every loader (``loaders.py``, ``coco.py``) returns one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from optim.console import info


@dataclass
class Dataset:
    images: np.ndarray  # uint8 raw images (N,H,W[,C]) or float model-ready inputs
    labels: Any  # class ids (N,) int array, detection BoxLabels, or None
    source: str
    synthetic: bool = False
    class_names: tuple[str, ...] = ()
    total: int | None = None  # size of the set before ``head``

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def head(self, n: int | None) -> Dataset:
        """The first ``n`` samples; asking for more than there are gives all (``clamp_note`` says so)."""
        if n is None or n >= len(self):
            return self
        labels = None if self.labels is None else self.labels[:n]
        return Dataset(self.images[:n], labels, f"{self.source} (first {n})",
                       self.synthetic, self.class_names, total=len(self))

    def clamp_note(self, n: int | None) -> None:
        """Say so when ``n`` samples were asked for and the set has fewer (a number is never cut silently)."""
        if n is not None and n > len(self):
            info(f"asked for {n} samples of {self.source}, which has {len(self)}: using all {len(self)}")
