"""The prompts Points layer: positive (green) and negative (red) clicks on nuclei.

Polarity is the boolean point feature ``positive``; face colours follow it through a categorical
colour map, so a point keeps its colour when others are added or deleted. The key ``T`` (bound on
the layer, so it acts while the layer is selected) toggles the polarity of the next point.

For the task "classes" each click also names its nucleus' class: the string feature ``class``
(:func:`set_next_class`, :func:`set_class`, :func:`class_prompts_from_layer`); the points are then
coloured by class (:func:`color_points_by`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

FEATURE = "positive"
CLASS_FEATURE = "class"
POSITIVE_COLOR = "lime"
NEGATIVE_COLOR = "red"
TOGGLE_KEY = "T"
PROMPTS_NAME = "SAMPO prompts"
COLOR_CYCLE = {True: POSITIVE_COLOR, False: NEGATIVE_COLOR}


def prompt_layer_kwargs(point_size: float = 12.0) -> dict[str, Any]:
    """Keyword arguments of ``viewer.add_points`` for a new, empty prompts layer."""
    return {
        "data": np.zeros((0, 2)),
        "name": PROMPTS_NAME,
        "features": {FEATURE: np.zeros(0, dtype=bool)},
        "feature_defaults": {FEATURE: True},
        "face_color": FEATURE,
        "face_color_cycle": COLOR_CYCLE,
        "border_color": "white",
        "border_width": 0.15,
        "size": point_size,
        "ndim": 2,
    }


def setup_prompt_layer(
    layer, on_toggle: Callable[[bool], None] | None = None, default_positive: bool = True
) -> None:
    """Make any Points layer a prompts layer: a ``positive`` feature, colours, the ``T`` key.

    A layer without the feature gets it (every existing point positive). Safe to call twice.
    ``on_toggle(next_positive)`` is called after each toggle (the widget updates its label).
    """
    if FEATURE not in layer.features.columns:
        features = layer.features.copy()
        features[FEATURE] = np.ones(len(layer.data), dtype=bool)
        layer.features = features
        layer.feature_defaults = {**_defaults_dict(layer), FEATURE: default_positive}
        layer.face_color = FEATURE
        layer.face_color_cycle = COLOR_CYCLE
        layer.refresh_colors(update_color_mapping=True)

    def toggle(layer_=None) -> None:
        positive = toggle_polarity(layer)
        if on_toggle is not None:
            on_toggle(positive)

    layer.bind_key(TOGGLE_KEY, toggle, overwrite=True)


def _defaults_dict(layer) -> dict[str, Any]:
    defaults = layer.feature_defaults
    return {k: defaults[k].iloc[0] for k in defaults.columns} if len(defaults.columns) else {}


def _replace_features(layer, features) -> None:
    """``layer.features = features``, keeping the next point's feature values (napari resets
    them when the table is replaced)."""
    defaults = _defaults_dict(layer)
    layer.features = features
    layer.feature_defaults = {**_defaults_dict(layer), **defaults}


def next_is_positive(layer) -> bool:
    """Polarity the next added point will get."""
    defaults = layer.feature_defaults
    if FEATURE not in defaults.columns or len(defaults) == 0:
        return True
    return bool(defaults[FEATURE].iloc[0])


def set_next_polarity(layer, positive: bool) -> None:
    """Set the polarity of the next point added.

    Points already placed keep theirs (napari selects a point right after adding it, so
    touching the selection would flip the click just made).
    """
    layer.feature_defaults = {**_defaults_dict(layer), FEATURE: bool(positive)}


def set_polarity(layer, indices, positive: bool) -> None:
    """Set the polarity of existing points ``indices``."""
    features = layer.features.copy()
    features.loc[features.index[list(indices)], FEATURE] = bool(positive)
    _replace_features(layer, features)
    layer.refresh_colors(update_color_mapping=False)


def toggle_polarity(layer) -> bool:
    """Flip the polarity of the next point; returns the new one."""
    positive = not next_is_positive(layer)
    set_next_polarity(layer, positive)
    return positive


def _points_in_image(
    points_layer, image_layer, image_shape: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """(rc (N, 2) float64 (row, col) in the image layer's pixels, keep (N,) bool: inside
    ``image_shape``) for every point of ``points_layer``."""
    data = np.asarray(points_layer.data, dtype=float).reshape(-1, points_layer.ndim)
    if image_layer is not None and len(data):
        world = np.array([points_layer.data_to_world(p) for p in data])
        rc = np.array([image_layer.world_to_data(w) for w in world], dtype=float)[:, -2:]
    else:
        rc = data[:, -2:]
    keep = np.ones(len(rc), dtype=bool)
    if image_shape is not None:
        h, w = image_shape
        keep = (rc[:, 0] >= 0) & (rc[:, 0] < h) & (rc[:, 1] >= 0) & (rc[:, 1] < w)
    return rc, keep


def prompts_from_layer(
    points_layer, image_layer=None, image_shape: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The clicks as image pixel coordinates (row, col) and their 1/0 polarity labels.

    Points are mapped through world coordinates into the image layer's data coordinates (so
    scaled or translated layers line up); points outside ``image_shape`` (H, W) are dropped.

    Returns:
        (rc, labels): rc (N, 2) float64 (row, col); labels (N,) int64, 1 = positive, 0 = negative.
    """
    rc, keep = _points_in_image(points_layer, image_layer, image_shape)
    if FEATURE in points_layer.features.columns:
        positive = points_layer.features[FEATURE].to_numpy().astype(bool)
    else:
        positive = np.ones(len(rc), dtype=bool)
    return rc[keep], positive[keep].astype(np.int64)


# ------------------------------------------------------------------------------ classes


def point_classes(layer) -> list[str]:
    """The class of every point of ``layer`` ("" where it has none), in point order."""
    if CLASS_FEATURE not in layer.features.columns:
        return [""] * len(layer.data)
    return ["" if v is None or v != v else str(v) for v in layer.features[CLASS_FEATURE]]


def ensure_class_feature(layer) -> None:
    """Give ``layer`` the string feature ``class`` (empty for the points it already has)."""
    if CLASS_FEATURE in layer.features.columns:
        return
    features = layer.features.copy()
    features[CLASS_FEATURE] = np.array([""] * len(layer.data), dtype=object)
    _replace_features(layer, features)
    layer.feature_defaults = {**_defaults_dict(layer), CLASS_FEATURE: ""}


def next_class(layer) -> str:
    """The class the next added point will get ("" = none yet)."""
    defaults = layer.feature_defaults
    if CLASS_FEATURE not in defaults.columns or len(defaults) == 0:
        return ""
    value = defaults[CLASS_FEATURE].iloc[0]
    return "" if value is None or value != value else str(value)


def set_next_class(layer, name: str) -> None:
    """The class of the next point added (points already placed keep theirs)."""
    ensure_class_feature(layer)
    layer.feature_defaults = {**_defaults_dict(layer), CLASS_FEATURE: str(name).strip()}


def set_class(layer, indices, name: str) -> None:
    """Give the existing points ``indices`` the class ``name`` (they become positive)."""
    ensure_class_feature(layer)
    features = layer.features.copy()
    rows = features.index[list(indices)]
    features.loc[rows, CLASS_FEATURE] = str(name).strip()
    if FEATURE in features.columns:
        features.loc[rows, FEATURE] = True
    _replace_features(layer, features)
    layer.refresh_colors(update_color_mapping=False)


def color_points_by(layer, what: str, class_colors: dict[str, tuple] | None = None) -> None:
    """Colour the points by polarity (``what="polarity"``: green / red) or by class
    (``"class"``: ``class_colors`` name → RGB(A) 0–1; a point without a class is grey)."""
    if what == "class":
        ensure_class_feature(layer)
        layer.face_color = CLASS_FEATURE
        layer.face_color_cycle = {"": (0.6, 0.6, 0.6, 1.0), **(class_colors or {})}
    else:
        if FEATURE not in layer.features.columns:
            return
        layer.face_color = FEATURE
        layer.face_color_cycle = COLOR_CYCLE
    layer.refresh_colors(update_color_mapping=True)


def class_prompts_from_layer(
    points_layer, image_layer=None, image_shape: tuple[int, int] | None = None
) -> tuple[np.ndarray, list[str]]:
    """The clicks of a class labelling: (row, col) image pixels and each click's class name.

    Points outside ``image_shape`` are dropped, as by :func:`prompts_from_layer`.

    Returns:
        (rc (N, 2) float64 (row, col), names: N class names, "" for a point without one).
    """
    rc, keep = _points_in_image(points_layer, image_layer, image_shape)
    names = point_classes(points_layer)
    return rc[keep], [n for n, k in zip(names, keep) if k]


#: ``layer.metadata["napari_sampo"]["role"]`` of a Points layer that is a reference (the real
#: sample's expert dots), never prompts: the Segment dock does not offer it as "Prompts".
REFERENCE_ROLE = "reference"


def is_reference(layer) -> bool:
    """True for a Points layer marked as a reference (not clicks to segment from)."""
    meta = getattr(layer, "metadata", None) or {}
    return (meta.get("napari_sampo") or {}).get("role") == REFERENCE_ROLE
