"""Export an instance label map: TIFF, GeoJSON for QuPath, and a per-nucleus CSV table.

Coordinates. ``labels`` is an (H, W) integer array indexed [row, col]; 0 is background. The
exports use (x, y) = (column, row) but differ in where a pixel sits, each following its reader:

- GeoJSON follows QuPath: pixel [r, c] covers the square x ∈ [c, c+1], y ∈ [r, r+1] (pixel
  corners at integers), so polygons outline the pixels and their area ≈ the pixel count.
- The CSV follows numpy/napari/scikit-image: pixel [r, c] is the point (x=c, y=r) (centres at
  integers), so ``labels[round(centroid_y), round(centroid_x)]`` lands in the nucleus. Add 0.5 to
  compare a CSV centroid with a GeoJSON / QuPath centroid.

``offset`` is (x, y) in pixels, added to every exported coordinate: the position of this label map
in a larger image (e.g. a tile's column and row origin).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import approximate_polygon, find_contours, regionprops_table
from skimage.segmentation import relabel_sequential

from sampo_engine.errors import DataError
from sampo_engine.utils.atomic import atomic_path, write_text_atomic

# Distinct colours (RGB 0–255) for class ids 1, 2, ... (cycled); id 0 gets grey.
PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (0, 128, 128),
)

CSV_COLUMNS = (
    "label",
    "centroid_x",
    "centroid_y",
    "area",
    "perimeter",
    "eccentricity",
    "mean_intensity",
    "class_id",
    "class",
    "probability",
)


def _check_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise DataError(
            f"an instance label map must be (H, W), got shape {labels.shape}; export one "
            f"2-D label image at a time"
        )
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"instance labels have dtype {labels.dtype}; pass integer labels (0 = background), "
            f"e.g. the output of split_instances"
        )
    if labels.size and labels.min() < 0:
        raise DataError("instance labels contain negative ids; use 0 for background, ids ≥ 1")
    return labels


def class_color(class_id: int) -> list[int]:
    """RGB colour (0–255) of a class id: grey for 0, then the palette, cycled."""
    if class_id <= 0:
        return [128, 128, 128]
    return list(PALETTE[(class_id - 1) % len(PALETTE)])


def _class_of(label: int, label_classes, class_names) -> tuple[int | None, str | None]:
    if not label_classes or label not in label_classes:
        return None, None
    class_id = int(label_classes[label])
    names = class_names or {}
    return class_id, str(names.get(class_id, f"class {class_id}"))


# ------------------------------------------------------------------------------------- TIFF


def write_instance_tiff(path: str | os.PathLike, labels) -> Path:
    """Write ``labels`` ((H, W), 0 = background) as a zlib-compressed single-page TIFF, atomically.

    Stored as uint16 when the largest id fits (≤ 65535), else uint32.
    """
    import tifffile

    labels = _check_labels(labels)
    top = int(labels.max()) if labels.size else 0
    if top > np.iinfo(np.uint32).max:
        raise DataError(
            f"label id {top} does not fit in uint32; renumber the labels 1..N first (remap_label)"
        )
    dtype = np.uint16 if top <= np.iinfo(np.uint16).max else np.uint32
    path = Path(path)
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp, labels.astype(dtype, copy=False), compression="zlib", photometric="minisblack"
        )
    return path


# ---------------------------------------------------------------------------------- GeoJSON


def _signed_area(ring: np.ndarray) -> float:
    """Shoelace area of a closed ring of (x, y) points (> 0 when counter-clockwise, y up)."""
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def _drop_collinear(contour: np.ndarray) -> np.ndarray:
    """Remove the vertices of a closed (K, 2) contour (first == last) where it runs straight on.

    Marching squares on a binary mask yields edges in 8 directions only, half a pixel long; this
    keeps the exact outline with 3–4× fewer vertices. Returns a closed contour.
    """
    pts = contour[:-1]
    before = pts - np.roll(pts, 1, axis=0)
    after = np.roll(pts, -1, axis=0) - pts
    turn = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    keep = np.abs(turn) > 1e-9
    if keep.sum() < 3:
        return contour
    pts = pts[keep]
    return np.vstack([pts, pts[:1]])


def _rings(mask: np.ndarray, x0: float, y0: float, tolerance: float) -> list[list[list[float]]]:
    """Outer rings (holes filled) of a cropped boolean mask, in exported (x, y) coordinates.

    ``mask`` is the crop padded by one background pixel; (x0, y0) the exported position of the
    padded crop's pixel [0, 0] centre.
    """
    mask = ndi.binary_fill_holes(mask)
    rings = []
    # level 0.5 runs half-way between pixel centres, i.e. along the pixel edges (corners cut);
    # 'high' keeps diagonally touching pixels of one nucleus in one outline.
    for contour in find_contours(mask.astype(np.uint8), 0.5, fully_connected="high"):
        if not np.array_equal(contour[0], contour[-1]):
            contour = np.vstack([contour, contour[:1]])
        contour = _drop_collinear(contour)
        if tolerance > 0:
            simple = approximate_polygon(contour, tolerance=tolerance)
            if len(simple) >= 4 and abs(_signed_area(simple[:, ::-1])) > 0:
                contour = simple
        ring = np.column_stack([contour[:, 1] + x0, contour[:, 0] + y0])  # (x, y)
        area = _signed_area(ring)
        if len(ring) < 4 or area == 0:
            continue
        if area < 0:  # RFC 7946: exterior rings counter-clockwise
            ring = ring[::-1]
        rings.append(np.round(ring, 3).tolist())
    return rings


def labels_to_geojson(
    labels,
    class_names: dict[int, str] | None = None,
    label_classes: dict[int, int] | None = None,
    offset: tuple[float, float] = (0, 0),
    class_colors: dict[int, tuple[int, int, int]] | None = None,
    simplify: float = 0.0,
    label_probability: dict[int, float] | None = None,
) -> dict:
    """A GeoJSON FeatureCollection with one detection per label, as QuPath imports it.

    Args:
        labels: (H, W) int label map, 0 = background.
        class_names: class id → name (e.g. {1: "Neoplastic"}).
        label_classes: label id → class id; labels without an entry get no classification.
        offset: (x, y) added to every coordinate (the map's origin in a larger image).
        class_colors: class id → RGB 0–255 (default: :func:`class_color`).
        label_probability: label id → probability of its class (few-shot T2 and class
            labelling), written as the measurement ``probability``.
        simplify: extra Douglas–Peucker tolerance in pixels (slow: pure Python). Without it the
            outline runs along the pixel edges, each outer corner cut by a half-pixel diagonal,
            with straight runs merged into one edge: faithful and already compact.

    Each feature has a ``Polygon`` (or ``MultiPolygon`` when one label has several separate
    pieces) with closed counter-clockwise rings in (x, y) image pixels, QuPath's pixel-corner
    convention (see the module docstring), and properties ``objectType: "detection"``,
    ``measurements: {"label": id}`` and, when the label's class is known,
    ``classification: {"name", "color"}``.
    """
    labels = _check_labels(labels)
    ox, oy = float(offset[0]), float(offset[1])
    compact, fwd, _ = relabel_sequential(labels)
    original = np.asarray(fwd.in_values)
    original = original[original != 0]
    features = []
    for index, box in enumerate(ndi.find_objects(compact), start=1):
        if box is None:
            continue
        label = int(original[index - 1])
        mask = np.pad(compact[box] == index, 1)
        # padded pixel [0, 0] is labels[r0 - 1, c0 - 1], whose centre QuPath puts at +0.5
        x0 = box[1].start - 1 + 0.5 + ox
        y0 = box[0].start - 1 + 0.5 + oy
        rings = _rings(mask, x0, y0, simplify)
        if not rings:
            continue
        if len(rings) == 1:
            geometry = {"type": "Polygon", "coordinates": [rings[0]]}
        else:
            geometry = {"type": "MultiPolygon", "coordinates": [[r] for r in rings]}
        measurements: dict = {"label": label}
        if label_probability and label in label_probability:
            measurements["probability"] = round(float(label_probability[label]), 4)
        properties: dict = {"objectType": "detection", "measurements": measurements}
        class_id, class_name = _class_of(label, label_classes, class_names)
        if class_id is not None:
            color = (class_colors or {}).get(class_id) or class_color(class_id)
            properties["classification"] = {"name": class_name, "color": [int(c) for c in color]}
        features.append({"type": "Feature", "geometry": geometry, "properties": properties})
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | os.PathLike, labels, **kwargs) -> Path:
    """Write :func:`labels_to_geojson` (same keyword arguments) to ``path``, atomically."""
    collection = labels_to_geojson(labels, **kwargs)
    path = Path(path)
    write_text_atomic(path, json.dumps(collection, separators=(",", ":")) + "\n")
    return path


# -------------------------------------------------------------------------------------- CSV


def _gray(image, shape: tuple[int, int]) -> np.ndarray:
    image = np.asarray(image)
    if image.shape[:2] != shape:
        raise DataError(
            f"image shape {image.shape} does not match the label map {shape}; pass the image "
            f"the labels were predicted on"
        )
    if image.ndim == 2:
        return image.astype(np.float64, copy=False)
    if image.ndim == 3 and image.shape[2] == 1:
        return image[..., 0].astype(np.float64)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        # scikit-image's rgb2gray weights, kept in the image's own units (0–255 for uint8)
        return image[..., :3].astype(np.float64) @ np.array([0.2125, 0.7154, 0.0721])
    raise DataError(
        f"image shape {image.shape} is neither (H, W), (H, W, 1) nor RGB(A) (H, W, 3|4)"
    )


def _eccentricity(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Eccentricity of the ellipse with the same second moments as each region of ``ids``:
    regionprops' ``eccentricity``, for all regions at once
    (:func:`~sampo_engine.nuclei.descriptors.label_moments`; regionprops' per-region version
    takes ~0.5 ms a nucleus)."""
    from sampo_engine.nuclei.descriptors import label_moments

    compact, fwd, _ = relabel_sequential(labels)
    ecc = label_moments(compact)[3]
    return ecc[np.asarray(fwd[ids.astype(labels.dtype)], dtype=np.int64)]


def nucleus_table(
    labels,
    image=None,
    label_classes: dict[int, int] | None = None,
    class_names: dict[int, str] | None = None,
    offset: tuple[float, float] = (0, 0),
    label_probability: dict[int, float] | None = None,
) -> list[dict]:
    """One row per nucleus, in ascending label order.

    Columns (see ``CSV_COLUMNS``): ``label``; ``centroid_x`` = column and ``centroid_y`` = row of
    the centroid (pixel centres at integers) plus ``offset`` (x, y); ``area`` (pixels);
    ``perimeter`` (pixels, scikit-image's estimate); ``eccentricity``; ``mean_intensity``, the
    mean gray value of ``image`` ((H, W) or RGB(A) (H, W, 3|4), luminance in the image's own
    units) inside the nucleus, or None without an image; ``class_id`` and ``class`` (name) from
    ``label_classes`` / ``class_names``, or None; ``probability`` of that class from
    ``label_probability`` (few-shot T2 and class labelling), or None.
    """
    labels = _check_labels(labels)
    properties = ["label", "centroid", "area", "perimeter"]
    gray = None
    if image is not None:
        gray = _gray(image, labels.shape)
        properties.append("intensity_mean")
    if not labels.any():
        return []
    table = regionprops_table(labels, intensity_image=gray, properties=properties)
    eccentricity = _eccentricity(labels, np.asarray(table["label"]))
    ox, oy = float(offset[0]), float(offset[1])
    rows = []
    for i, label in enumerate(table["label"]):
        label = int(label)
        class_id, class_name = _class_of(label, label_classes, class_names)
        rows.append(
            {
                "label": label,
                "centroid_x": float(table["centroid-1"][i]) + ox,
                "centroid_y": float(table["centroid-0"][i]) + oy,
                "area": int(table["area"][i]),
                "perimeter": float(table["perimeter"][i]),
                "eccentricity": float(eccentricity[i]),
                "mean_intensity": (float(table["intensity_mean"][i]) if gray is not None else None),
                "class_id": class_id,
                "class": class_name,
                "probability": (
                    round(float(label_probability[label]), 4)
                    if label_probability and label in label_probability
                    else None
                ),
            }
        )
    return rows


def write_csv(path: str | os.PathLike, labels, **kwargs) -> Path:
    """Write :func:`nucleus_table` (same keyword arguments) as CSV with a header, atomically.

    None is written as an empty cell.
    """
    rows = nucleus_table(labels, **kwargs)
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path


# ------------------------------------------------------------------------------- prediction


def prediction_classes(labels, class_name: str | None = None, nucleus=None, task: str = ""):
    """(label → class id, class id → name, label → probability) for exporting ``labels``, a
    prediction's instance map (or the user's edit of it); Nones where they do not apply.

    Class ids start at 1 (0 is background in QuPath's and our class maps). Class labelling
    (``task == "classes"``, ``nucleus`` its
    :class:`~sampo_engine.predict.nucleus_classes.NucleusClasses`): class k of ``nucleus`` is
    id k + 1, for every nucleus it classified. Otherwise, with a
    ``class_name`` (T2, or T1 when one was given), every label of ``labels`` is id 1 named so, with
    its probability from ``nucleus`` (T2 by nucleus) when it has one — labels painted in later
    have none; without a class name there is no class and no probability.
    """
    if nucleus is not None and task == "classes":
        label_classes = {int(i): int(c) + 1 for i, c in zip(nucleus.ids, nucleus.classes)}
        class_names = {k + 1: n for k, n in enumerate(nucleus.class_names)}
        return label_classes, class_names, nucleus.label_probability()
    if not class_name:
        return None, None, None
    ids = np.unique(np.asarray(labels))
    ids = ids[ids > 0].tolist()
    label_classes = dict.fromkeys(ids, 1)
    probability = None
    if nucleus is not None:
        everything = nucleus.label_probability()
        probability = {i: everything[i] for i in ids if i in everything}
    return label_classes, {1: class_name}, probability


def write_prediction(
    paths,
    labels,
    image=None,
    class_name: str | None = None,
    nucleus=None,
    task: str = "",
) -> list[Path]:
    """Write the exports of one prediction: the instance TIFF, the QuPath GeoJSON and the
    per-nucleus CSV, to ``paths["labels"]``, ``paths["geojson"]`` and ``paths["csv"]`` (in that
    order; returned as a list). ``image``: the pixels the labels were predicted on, for the
    CSV's ``mean_intensity`` (None: empty). Classes and probabilities: :func:`prediction_classes`.
    """
    labels = _check_labels(labels)
    label_classes, class_names, probability = prediction_classes(
        labels, class_name=class_name, nucleus=nucleus, task=task
    )
    return [
        write_instance_tiff(paths["labels"], labels),
        write_geojson(
            paths["geojson"],
            labels,
            class_names=class_names,
            label_classes=label_classes,
            label_probability=probability,
        ),
        write_csv(
            paths["csv"],
            labels,
            image=image,
            class_names=class_names,
            label_classes=label_classes,
            label_probability=probability,
        ),
    ]
