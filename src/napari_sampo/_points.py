"""The prompts Points layer: positive (green) and negative (red) clicks on nuclei.

Polarity is the boolean point feature ``positive``; face colours follow it through a categorical
colour map, so a point keeps its colour when others are added or deleted. The key ``T`` (bound on
the layer, so it acts while the layer is selected) toggles the polarity of the next point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

FEATURE = "positive"
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
    layer.features = features
    layer.refresh_colors(update_color_mapping=False)


def toggle_polarity(layer) -> bool:
    """Flip the polarity of the next point; returns the new one."""
    positive = not next_is_positive(layer)
    set_next_polarity(layer, positive)
    return positive


def prompts_from_layer(
    points_layer, image_layer=None, image_shape: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The clicks as image pixel coordinates (row, col) and their 1/0 polarity labels.

    Points are mapped through world coordinates into the image layer's data coordinates (so
    scaled or translated layers line up); points outside ``image_shape`` (H, W) are dropped.

    Returns:
        (rc, labels): rc (N, 2) float64 (row, col); labels (N,) int64, 1 = positive, 0 = negative.
    """
    data = np.asarray(points_layer.data, dtype=float)
    if data.size == 0:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
    if FEATURE in points_layer.features.columns:
        positive = points_layer.features[FEATURE].to_numpy().astype(bool)
    else:
        positive = np.ones(len(data), dtype=bool)
    if image_layer is not None:
        world = np.array([points_layer.data_to_world(p) for p in data])
        rc = np.array([image_layer.world_to_data(w) for w in world], dtype=float)[:, -2:]
    else:
        rc = data[:, -2:]
    keep = np.ones(len(rc), dtype=bool)
    if image_shape is not None:
        h, w = image_shape
        keep = (rc[:, 0] >= 0) & (rc[:, 0] < h) & (rc[:, 1] >= 0) & (rc[:, 1] < w)
    return rc[keep], positive[keep].astype(np.int64)


#: ``layer.metadata["napari_sampo"]["role"]`` of a Points layer that is a reference (the real
#: sample's expert dots), never prompts: the Segment dock does not offer it as "Prompts".
REFERENCE_ROLE = "reference"


def is_reference(layer) -> bool:
    """True for a Points layer marked as a reference (not clicks to segment from)."""
    meta = getattr(layer, "metadata", None) or {}
    return (meta.get("napari_sampo") or {}).get("role") == REFERENCE_ROLE
