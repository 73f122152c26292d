"""Sample data: a synthetic H&E-like tile and its nuclei, for trying the plugin without files."""

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
