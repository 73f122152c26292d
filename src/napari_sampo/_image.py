"""Turn a napari Image layer into the (H, W, 3) uint8 RGB array the engine expects. No Qt here.

Accepted: RGB (H, W, 3) and RGBA (H, W, 4) (alpha dropped), grayscale (H, W) (repeated into three
channels), leading axes of length 1 (squeezed), multiscale layers (the full-resolution level),
and any numeric dtype: the conversion is the engine's
:func:`~sampo_engine.utils.imageio.to_rgb_uint8` with the layer's display mapping — a gray layer's
contrast limits, the way napari shows it; an RGB layer's own data range.
"""

from __future__ import annotations

import numpy as np

from sampo_engine.errors import DataError
from sampo_engine.utils.imageio import to_rgb_uint8

#: Largest image (pixels) the plugin segments in one go; bigger ones should be cropped first.
MAX_PIXELS = 12_000 * 12_000


def layer_image_shape(layer) -> tuple[int, int]:
    """(H, W) of the full-resolution image of ``layer`` without reading pixels."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    shape = tuple(int(s) for s in data.shape)
    if getattr(layer, "rgb", False):
        shape = shape[:-1]
    shape = tuple(s for s in shape[:-2] if s != 1) + shape[-2:]
    if len(shape) != 2:
        raise DataError(
            f"layer {layer.name!r} has shape {data.shape}: the plugin segments one 2-D image "
            f"(H, W) or RGB(A) (H, W, 3|4); take one plane first (e.g. napari's 'Split Stack')"
        )
    return shape  # type: ignore[return-value]


def layer_to_rgb(layer) -> np.ndarray:
    """The layer's full-resolution pixels as (H, W, 3) uint8 RGB (reads lazy data: slow ones
    belong in a worker thread)."""
    h, w = layer_image_shape(layer)
    if h * w > MAX_PIXELS:
        raise DataError(
            f"layer {layer.name!r} is {w} x {h} px, more than the {MAX_PIXELS // 1_000_000} Mpx "
            f"the plugin segments at once; crop a region of interest into a new layer first"
        )
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    array = np.asarray(data)
    rgb = bool(getattr(layer, "rgb", False))
    limits = getattr(layer, "contrast_limits", None)
    if rgb or limits is None:
        limits = "auto"  # napari's contrast limits are used for gray layers only
    return to_rgb_uint8(array, rgb=rgb, contrast_limits=limits)
