"""Training data from napari layers: the annotated area cut into regions, some held out. No Qt.

A user corrects the labels of one image and fine-tunes on it. The trainer holds out *whole
images* for validation, so the annotated area (the bounding box of the labels, plus a margin) is
cut into a grid of 1-9 regions of about the model's input size, each its own
:class:`~sampo_engine.data.sample.NucleiSample`; whole regions are held out (``val_fraction`` is
set so that one region, or two of seven or more, are; docs/plugin.md, "Fine-tune on this
layer"). A nucleus cut by a region border shows up in both regions; that small overlap is
accepted.

Classes (for T2) come from a class Labels layer (per-pixel class ids; each nucleus takes the most
frequent non-zero class under it) or from a column of the instance layer's features table (one
value per label: class names or integer ids).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from sampo_engine.data.sample import NucleiDataset, NucleiSample
from sampo_engine.errors import DataError

MIN_NUCLEI = 5
MAX_GRID = 3  # at most 3 x 3 regions
MARGIN = 16  # px of context kept around the annotated area


@dataclass
class TrainingData:
    dataset: NucleiDataset
    val_fraction: float
    num_nuclei: int
    num_regions: int
    num_val_regions: int
    unclassified: int  # nuclei without a class (T2 treats them as "another class")
    box: tuple[int, int, int, int]  # (row0, row1, col0, col1) of the annotated area

    def describe(self) -> str:
        r0, r1, c0, c1 = self.box
        held = (
            f"{self.num_val_regions} held out for validation"
            if self.num_val_regions
            else "none held out (annotate a larger area for a validation score)"
        )
        text = (
            f"{self.num_nuclei} nuclei in a {c1 - c0} x {r1 - r0} px area, cut into "
            f"{self.num_regions} region(s), {held}"
        )
        if self.unclassified:
            text += f"; {self.unclassified} nuclei without a class"
        return text


def annotated_box(inst: np.ndarray, margin: int = MARGIN) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1), end exclusive: the labelled pixels' bounding box plus ``margin``."""
    rows = np.flatnonzero(inst.any(axis=1))
    cols = np.flatnonzero(inst.any(axis=0))
    if rows.size == 0:
        raise DataError("the Labels layer is empty: annotate (or correct) some nuclei first")
    h, w = inst.shape
    return (
        max(0, int(rows[0]) - margin),
        min(h, int(rows[-1]) + 1 + margin),
        max(0, int(cols[0]) - margin),
        min(w, int(cols[-1]) + 1 + margin),
    )


def _cuts(length: int, size: int) -> list[int]:
    n = int(np.clip(round(length / max(1, size)), 1, MAX_GRID))
    return [round(i * length / n) for i in range(n + 1)]


def region_grid(h: int, w: int, size: int) -> list[tuple[int, int, int, int]]:
    """Up to 3 x 3 regions (row0, row1, col0, col1) of about ``size`` px covering (h, w)."""
    rows, cols = _cuts(h, size), _cuts(w, size)
    return [
        (rows[i], rows[i + 1], cols[j], cols[j + 1])
        for i in range(len(rows) - 1)
        for j in range(len(cols) - 1)
    ]


def classes_from_map(inst: np.ndarray, class_map: np.ndarray) -> np.ndarray:
    """(H, W) uint8 class map with one class per instance: the most frequent non-zero class id
    under it (0 where none)."""
    class_map = np.asarray(class_map)
    if class_map.shape != inst.shape:
        raise DataError(
            f"the class Labels layer has shape {class_map.shape}, the instance layer "
            f"{inst.shape}; they must cover the same pixels"
        )
    if class_map.max(initial=0) > 255 or class_map.min(initial=0) < 0:
        raise DataError("class ids must be 0-255 (0 = background / unknown)")
    ids = inst.ravel()
    classes = class_map.ravel().astype(np.int64)
    fg = (ids > 0) & (classes > 0)
    if not fg.any():
        return np.zeros(inst.shape, np.uint8)
    top = int(ids.max()) + 1
    counts = np.zeros((top, 256), np.int64)
    np.add.at(counts, (ids[fg], classes[fg]), 1)
    per_label = counts.argmax(axis=1)
    per_label[counts.max(axis=1) == 0] = 0
    return per_label[inst].astype(np.uint8)


def _missing(value) -> bool:
    """A features cell that means "no class": None, NaN, "", blanks, 0 or "0"."""
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return bool(np.isnan(value)) or value == 0
    if isinstance(value, int | np.integer):
        return value == 0
    return str(value).strip() in ("", "0")


def classes_from_table(inst: np.ndarray, label_ids, values) -> tuple[np.ndarray, dict[int, str]]:
    """(H, W) uint8 class map and class names from one value per label (a features column).

    ``values`` may be names (each distinct name becomes id 1, 2, ... in sorted order) or integer
    class ids (names ``class <id>``). Missing values (None, NaN, "", blanks, 0) mean no class; a
    column of missing values only (a T1 Segment result's empty ``class`` column) gives an
    all-zero map and no names.
    """
    label_ids = np.asarray(label_ids).astype(np.int64)
    values = list(values)
    present = [
        (int(label), v) for label, v in zip(label_ids, values, strict=False) if not _missing(v)
    ]
    lookup: dict[int, int] = {}
    numeric = all(
        isinstance(v, int | np.integer | float | np.floating) and float(v) == int(v)
        for _, v in present
    )
    if present and numeric:
        names = {int(v): f"class {int(v)}" for _, v in present}
        if any(k < 0 for k in names):
            raise DataError("class ids must be 1-255 (0 or empty = no class)")
        lookup = {label: int(v) for label, v in present}
    else:
        unique = sorted({str(v).strip() for _, v in present})
        ids = {name: k for k, name in enumerate(unique, start=1)}
        names = {k: name for name, k in ids.items()}
        lookup = {label: ids[str(v).strip()] for label, v in present}
    if any(k > 255 for k in names):
        raise DataError("class ids must be 1-255 (at most 255 class names)")
    top = int(max(int(inst.max(initial=0)), max(lookup, default=0))) + 1
    table = np.zeros(top, np.uint8)
    for label, cid in lookup.items():
        if 0 < label < top:
            table[label] = cid
    return table[inst], names


def training_data(
    image: np.ndarray,
    inst: np.ndarray,
    cls: np.ndarray | None = None,
    class_names: dict[int, str] | None = None,
    image_size: int = 224,
    min_nuclei: int = MIN_NUCLEI,
    name: str = "layer",
) -> TrainingData:
    """Cut the annotated area of one image into training/validation regions.

    Args:
        image: (H, W, 3) uint8 RGB.
        inst: (H, W) integer instance labels, 0 = background.
        cls: (H, W) per-pixel class ids (one per instance), or None.
        class_names: class id -> name (needed for T2 names; default ``class <id>``).
        image_size: the model's input size; regions are about this size.
    """
    inst = np.asarray(inst)
    if image.shape[:2] != inst.shape:
        raise DataError(
            f"the image is {image.shape[1]} x {image.shape[0]} px but the labels are "
            f"{inst.shape[1]} x {inst.shape[0]} px; pick the Labels layer drawn on this image"
        )
    if not np.issubdtype(inst.dtype, np.integer) or inst.min(initial=0) < 0:
        raise DataError("instance labels must be non-negative integers (0 = background)")
    num = int(np.unique(inst[inst > 0]).size)
    if num < min_nuclei:
        raise DataError(
            f"only {num} annotated nuclei; fine-tuning needs at least {min_nuclei} — "
            f"annotate or correct more nuclei in the Labels layer"
        )
    inst = inst.astype(np.int32, copy=False)
    unclassified = 0
    names: dict[int, str] = {}
    if cls is not None:
        ids = np.unique(cls[inst > 0])
        names = {int(c): (class_names or {}).get(int(c), f"class {int(c)}") for c in ids if c > 0}
        labelled = ndi.maximum(cls, labels=inst, index=np.unique(inst[inst > 0]))
        unclassified = int((np.asarray(labelled) == 0).sum())
        if not names:
            cls = None
    box = annotated_box(inst)
    r0, r1, c0, c1 = box
    regions = region_grid(r1 - r0, c1 - c0, image_size)
    samples = []
    for k, (a, b, c, d) in enumerate(regions):
        rows, cols = slice(r0 + a, r0 + b), slice(c0 + c, c0 + d)
        samples.append(
            NucleiSample(
                image=np.ascontiguousarray(image[rows, cols]),
                inst=np.ascontiguousarray(inst[rows, cols]),
                cls=None if cls is None else np.ascontiguousarray(cls[rows, cols], np.uint8),
                name=f"{name}/region{k}",
            )
        )
    n = len(samples)
    n_val = 0 if n < 2 else (1 if n <= 6 else 2)
    dataset = NucleiDataset(samples, names, format="napari")
    return TrainingData(
        dataset=dataset,
        val_fraction=n_val / n if n_val else 0.0,
        num_nuclei=num,
        num_regions=n,
        num_val_regions=n_val,
        unclassified=unclassified,
        box=box,
    )
