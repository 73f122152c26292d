"""Point-labelled nuclei sets (``../shared/data``'s ``brca_m2c_points``, ``crchisto_points``): one
dot and a class per nucleus, no outlines.

Per image ``<id>``: ``<id>_image.png`` and ``<id>_points.csv`` (header ``x,y,class``; x = column,
y = row, 0-based pixels; class ≥ 1, names in ``meta.json``'s ``classes``; the split of each image
in ``meta.json``'s ``images`` records).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from sampo_engine.errors import DataError


def read_class_points(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """((P, 2) float (x, y) dots, (P,) int class; 0 where a row has none) of a points CSV."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as err:
        raise DataError(f"cannot read the points file {path}: {err}") from None
    try:
        xy = np.array([[float(r["x"]), float(r["y"])] for r in rows]).reshape(-1, 2)
        cls = np.array([int(r.get("class", 0) or 0) for r in rows], np.int64)
    except (KeyError, ValueError) as err:
        raise DataError(f"{path}: expected a header x,y,class and numbers ({err})") from None
    return xy, cls


def point_set_images(folder: str | Path, splits: tuple[str, ...]) -> tuple[list[str], dict]:
    """(image ids of the given splits, in the meta's order; ``meta.json``) of a point set."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{folder} is not a point set (meta.json: {err})") from None
    return [m["id"] for m in meta.get("images", []) if m.get("split") in splits], meta
