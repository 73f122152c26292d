"""Turn a napari Image layer into the (H, W, 3) uint8 RGB array the engine expects. No Qt here.

Accepted: RGB (H, W, 3) and RGBA (H, W, 4) (alpha dropped), grayscale (H, W) (repeated into three
channels), leading axes of length 1 (squeezed), multiscale layers (the full-resolution level),
and any numeric dtype (non-uint8 data is scaled to 0-255 by the layer's contrast limits, the way
napari shows it).
"""

from __future__ import annotations

import numpy as np

from sampo_engine.errors import DataError

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
    keep = 3 if rgb else 2
    while array.ndim > keep and array.shape[0] == 1:
        array = array[0]
    limits = getattr(layer, "contrast_limits", None)
    return to_rgb_uint8(array, rgb=rgb, contrast_limits=limits)


def to_rgb_uint8(array: np.ndarray, rgb: bool | None = None, contrast_limits=None) -> np.ndarray:
    """(H, W) gray or (H, W, 3|4) colour, any dtype -> (H, W, 3) uint8 RGB."""
    array = np.asarray(array)
    if rgb is None:
        rgb = array.ndim == 3 and array.shape[-1] in (3, 4)
    if rgb:
        array = array[..., :3]
    elif array.ndim != 2:
        raise DataError(f"expected a (H, W) or (H, W, 3|4) image, got shape {array.shape}")
    if array.dtype != np.uint8:
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        else:
            values = array.astype(np.float32)
            if contrast_limits is not None and rgb is False:
                lo, hi = (float(c) for c in contrast_limits)
            elif np.issubdtype(array.dtype, np.floating) and values.size and values.max() <= 1.0:
                lo, hi = 0.0, 1.0
            else:
                lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
            scale = 255.0 / (hi - lo) if hi > lo else 0.0
            array = np.clip((values - lo) * scale, 0, 255).round().astype(np.uint8)
    if not rgb:
        array = np.repeat(array[..., None], 3, axis=-1)
    return np.ascontiguousarray(array)
