"""The one in-memory form every dataset reader produces."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class NucleiSample:
    """One annotated image.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        inst: (H, W) int32 instance map, 0 = background, nuclei 1..N (ids need not be contiguous).
        cls: (H, W) uint8 per-pixel class id, 0 = background, or None where the dataset has no
            classes. Every instance carries exactly one class.
        name: an identifier unique within its dataset (file stem, ``fold2/000123`` ...).
        tissue: tissue type where known (PanNuke), else None.
        debris: (H, W) bool, the non-nucleus objects drawn on a generated tile (pigment
            deposits: background in ``inst``), or None (real data, or none drawn).
    Arrays are indexed [row, col] (y, x).
    """

    image: np.ndarray
    inst: np.ndarray
    cls: np.ndarray | None = None
    name: str = ""
    tissue: str | None = None
    debris: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.inst.shape[:2]

    @property
    def num_nuclei(self) -> int:
        return int(len(np.unique(self.inst))) - int((self.inst == 0).any())


@dataclass
class NucleiDataset(Sequence):
    """A list-like collection of :class:`NucleiSample` (readers may load lazily per index).

    ``class_names`` maps class id -> name (empty when the dataset has no classes); ``format``
    names the reader that produced it ('folder', 'pannuke', 'consep', 'monuseg', 'synthetic').
    """

    samples: Sequence
    class_names: dict[int, str] = field(default_factory=dict)
    format: str = "folder"
    root: str = ""

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return NucleiDataset(
                [self[i] for i in range(*index.indices(len(self)))],
                self.class_names,
                self.format,
                self.root,
            )
        item = self.samples[index]
        return item() if callable(item) else item

    @property
    def has_classes(self) -> bool:
        return bool(self.class_names)
