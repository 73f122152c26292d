"""Sample data for trying the plugin without files: a real H&E tile (BRCA-M2C) with its experts'
dots, and a synthetic H&E-like tile with its nuclei."""

from __future__ import annotations

from typing import Any


def synthetic_he_tile() -> list[tuple[Any, dict[str, Any], str]]:
    """Return a synthetic 1024 x 1024 H&E-like tile and its instance labels as napari layer data.

    Returns
    -------
    list of (data, kwargs, layer_type)
        ``(image, {"name": "synthetic H&E"}, "image")`` with ``image`` of shape (H, W, 3), uint8 RGB,
        and ``(labels, {"name": "synthetic nuclei"}, "labels")`` with ``labels`` of shape (H, W),
        integer, 0 = background and 1..N = one id per nucleus. Rows then columns (y, x).
    """
    # Imported here so that napari's plugin discovery never pays for the engine.
    from sampo_engine.data.synthetic import synthetic_tile

    sample = synthetic_tile(size=1024, seed=0)
    return [
        (sample.image, {"name": "synthetic H&E"}, "image"),
        (sample.inst, {"name": "synthetic nuclei"}, "labels"),
    ]


def brca_he_tile() -> list[tuple[Any, dict[str, Any], str]]:
    """A real H&E tile (BRCA-M2C breast cancer, BSD-3-Clause) and its expert dots.

    The tile was scanned at 20× (0.5 µm/px); it is resampled by 2 to the 40× (0.25 µm/px) the
    shipped model was trained at (docs/model.md), so that it segments well as it opens.

    Returns
    -------
    list of (data, kwargs, layer_type)
        ``(image, {...}, "image")`` of shape (986, 986, 3) uint8 RGB, and ``(points, {...},
        "points")``: the experts' dots as (row, col) in the resampled tile with a ``class``
        feature (lymphocyte / tumour / stromal), hidden — a reference to compare a T2 answer
        with, not prompts.
    """
    import numpy as np
    from skimage.transform import rescale

    from sampo_engine.samples import brca_tile

    tile = brca_tile()
    image = rescale(tile.image, 2, order=1, channel_axis=2, preserve_range=True)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    dots_rc = tile.dots_xy[:, ::-1] * 2 + 0.5  # pixel centres of the resampled grid
    names = [tile.class_names[int(c)] for c in tile.dot_classes]
    colors = {"lymphocyte": "cyan", "tumour": "magenta", "stromal": "yellow"}
    return [
        (image, {"name": "BRCA-M2C H&E (resampled to 40x)"}, "image"),
        (
            dots_rc,
            {
                "name": "expert dots (reference)",
                "features": {"class": names},
                "face_color": [colors[n] for n in names],
                "size": 8,
                "visible": False,
                # a reference, never prompts (see napari_sampo._points.is_reference)
                "metadata": {"napari_sampo": {"role": "reference"}},
            },
            "points",
        ),
    ]
