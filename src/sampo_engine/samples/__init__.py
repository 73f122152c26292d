"""A real H&E tile shipped with the engine (BSD-3-Clause; see ``NOTICE.md`` beside this file).

:func:`brca_tile` returns the BRCA-M2C breast-cancer tile with its expert dots (one per nucleus,
with a class), for the main job, the napari sample menu and tests that need real tissue.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources

import numpy as np

#: class id -> name of the sample's dots
CLASS_NAMES = {1: "lymphocyte", 2: "tumour", 3: "stromal"}
#: micrometres per pixel of the sample (20×)
UM_PER_PX = 0.5


@dataclass
class SampleTile:
    """image: (H, W, 3) uint8 RGB; dots_xy: (N, 2) float (x, y) = (column, row); dot_classes:
    (N,) class ids (:data:`CLASS_NAMES`); um_per_px; notice: the licence text."""

    image: np.ndarray
    dots_xy: np.ndarray
    dot_classes: np.ndarray
    class_names: dict
    um_per_px: float
    notice: str


def brca_tile() -> SampleTile:
    """The shipped BRCA-M2C tile (493 × 493 px at 20×) and its 315 classified dots."""
    from skimage.io import imread

    folder = resources.files(__name__)
    with resources.as_file(folder / "brca_m2c_tile.png") as path:
        image = imread(path)[..., :3]
    with resources.as_file(folder / "brca_m2c_tile_points.csv") as path:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    xy = np.array([[float(r["x"]), float(r["y"])] for r in rows])
    classes = np.array([int(r["class"]) for r in rows], np.int64)
    notice = (folder / "NOTICE.md").read_text(encoding="utf-8")
    return SampleTile(
        np.ascontiguousarray(image), xy, classes, dict(CLASS_NAMES), UM_PER_PX, notice
    )
