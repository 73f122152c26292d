"""napari Image layer -> the engine's RGB uint8: the plugin adapts the engine's ``to_rgb_uint8``.

The plugin once had its own converter (a napari layer's display rule: a gray layer's contrast
limits, else the data's range). It is kept here, frozen, as the reference: the engine's function
with the layer's display settings gives the same pixels for every kind of layer. No Qt here.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from napari_sampo._image import layer_to_rgb
from sampo_engine.errors import DataError
from sampo_engine.utils.imageio import to_rgb_uint8


def _old_plugin_to_rgb_uint8(array, rgb=None, contrast_limits=None) -> np.ndarray:
    """The plugin's former ``napari_sampo._image.to_rgb_uint8``, verbatim."""
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


def _old_layer_to_rgb(layer) -> np.ndarray:
    """The plugin's former ``layer_to_rgb`` (without the size check)."""
    array = np.asarray(layer.data)
    rgb = bool(getattr(layer, "rgb", False))
    keep = 3 if rgb else 2
    while array.ndim > keep and array.shape[0] == 1:
        array = array[0]
    limits = getattr(layer, "contrast_limits", None)
    return _old_plugin_to_rgb_uint8(array, rgb=rgb, contrast_limits=limits)


_RNG = np.random.default_rng(0)
CASES = {
    "gray uint8 with limits": (_RNG.integers(0, 256, (5, 6), dtype=np.uint8), False, (10, 100)),
    "gray uint16": (_RNG.integers(0, 4000, (5, 6)).astype(np.uint16), False, None),
    "gray uint16, dtype limits": (
        _RNG.integers(0, 4000, (5, 6)).astype(np.uint16),
        False,
        (0, 65535),
    ),
    "gray uint16, narrow limits": (
        _RNG.integers(0, 4000, (5, 6)).astype(np.uint16),
        False,
        (100.5, 3000),
    ),
    "gray int16 with negatives": (_RNG.integers(-500, 500, (5, 6)).astype(np.int16), False, None),
    "gray int32": (_RNG.integers(0, 100_000, (5, 6)).astype(np.int32), False, None),
    "gray float in [0, 1]": (_RNG.random((5, 6)).astype(np.float32), False, None),
    "gray float, limits": (_RNG.random((5, 6)).astype(np.float32), False, (0.2, 0.8)),
    "gray float in [0, 255]": (_RNG.random((5, 6)) * 255, False, None),
    "gray float, wide": (_RNG.normal(0, 1000, (5, 6)), False, None),
    "gray float with negatives": (_RNG.random((5, 6)) - 0.5, False, None),
    "gray constant": (np.full((5, 6), 7, np.uint16), False, None),
    "gray bool": (_RNG.random((5, 6)) > 0.5, False, None),
    "gray with a leading axis": (
        _RNG.integers(0, 4000, (1, 5, 6)).astype(np.uint16),
        False,
        (0, 4000),
    ),
    "rgb uint8": (_RNG.integers(0, 256, (5, 6, 3), dtype=np.uint8), True, (0, 255)),
    "rgba uint8": (_RNG.integers(0, 256, (5, 6, 4), dtype=np.uint8), True, (0, 255)),
    "rgb uint16": (_RNG.integers(0, 60_000, (5, 6, 3)).astype(np.uint16), True, (0, 65535)),
    "rgb float in [0, 1]": (_RNG.random((5, 6, 3)).astype(np.float32), True, (0, 1)),
    "rgba float in [0, 255]": (_RNG.random((5, 6, 4)) * 255, True, (0, 255)),
    "rgb float, wide": (_RNG.normal(0, 1000, (5, 6, 3)), True, None),
    "rgb with a leading axis": (_RNG.integers(0, 256, (1, 5, 6, 3), dtype=np.uint8), True, None),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("with_limits", [True, False])
def test_layers_convert_as_the_plugin_always_did(case, with_limits):
    array, rgb, limits = CASES[case]
    layer = types.SimpleNamespace(data=array, rgb=rgb, name=case, multiscale=False)
    if with_limits:
        layer.contrast_limits = limits
    out = layer_to_rgb(layer)
    expected = _old_layer_to_rgb(layer)
    assert out.dtype == np.uint8 and out.shape == (5, 6, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)


def test_the_engine_default_is_unchanged_by_the_display_parameters():
    """Without ``contrast_limits`` the engine keeps its file rule, ``rgb`` only says the layout."""
    gray16 = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    assert to_rgb_uint8(gray16)[..., 0].max() == round(11000 * 255 / 65535)  # dtype range
    np.testing.assert_array_equal(to_rgb_uint8(gray16, rgb=False), to_rgb_uint8(gray16))
    assert to_rgb_uint8(gray16, contrast_limits="auto")[..., 0].max() == 255  # data range
    rgba = np.full((3, 4, 4), 200, np.uint8)
    np.testing.assert_array_equal(to_rgb_uint8(rgba, rgb=True), rgba[..., :3])
    with pytest.raises(DataError):
        to_rgb_uint8(rgba, rgb=False)  # a gray layer is one plane
    with pytest.raises(DataError):
        to_rgb_uint8(gray16, rgb=True)  # an RGB layer has a colour axis
    with pytest.raises(ValueError, match="auto"):
        to_rgb_uint8(gray16, contrast_limits="full")


@pytest.mark.parametrize(
    ("array", "rgb"),
    [
        (np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000, False),
        (np.full((3, 4, 4), 200, np.uint8), True),
        (np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4), False),
    ],
)
def test_gray_and_rgba_become_rgb(array, rgb):
    out = to_rgb_uint8(array, rgb=rgb, contrast_limits="auto")
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8
    assert out.max() > 0
