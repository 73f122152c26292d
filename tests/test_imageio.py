"""Image and label reading: conversion rules, file formats, pyramid levels, error messages."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from sampo_engine.errors import DataError
from sampo_engine.utils.imageio import read_image, read_label_tif, to_rgb_uint8


def _rgb(h=12, w=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------- to_rgb_uint8: shapes


def test_rgb_uint8_passes_through_unchanged():
    rgb = _rgb()
    out = to_rgb_uint8(rgb)
    assert out.dtype == np.uint8 and out.shape == (12, 20, 3)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("shape", [(12, 20), (12, 20, 1)])
def test_gray_is_replicated_to_three_channels(shape):
    gray = np.arange(240, dtype=np.uint8).reshape(shape)
    out = to_rgb_uint8(gray)
    assert out.shape == (12, 20, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray.reshape(12, 20))


def test_alpha_is_dropped_for_rgba_and_gray_alpha():
    rgb = _rgb()
    rgba = np.concatenate([rgb, np.full((12, 20, 1), 7, np.uint8)], axis=-1)
    np.testing.assert_array_equal(to_rgb_uint8(rgba), rgb)
    gray_alpha = np.stack([rgb[..., 0], np.zeros((12, 20), np.uint8)], axis=-1)
    np.testing.assert_array_equal(to_rgb_uint8(gray_alpha)[..., 2], rgb[..., 0])


def test_channel_first_and_leading_singletons_are_moved():
    rgb = _rgb()
    np.testing.assert_array_equal(to_rgb_uint8(np.moveaxis(rgb, -1, 0)), rgb)
    np.testing.assert_array_equal(to_rgb_uint8(rgb[None, None]), rgb)


@pytest.mark.parametrize("shape", [(5,), (12, 20, 7), (2, 3, 12, 20), (0, 4)])
def test_unsupported_shapes_raise_data_error_with_remedy(shape):
    with pytest.raises(DataError, match=r"expected \(H, W\) gray.*Save the image"):
        to_rgb_uint8(np.zeros(shape, np.uint8))


# ---------------------------------------------------------------- to_rgb_uint8: values


def test_uint16_is_scaled_by_dtype_range():
    img = np.array([[0, 257, 65535, 32896]], np.uint16)
    np.testing.assert_array_equal(to_rgb_uint8(img)[0, :, 0], [0, 1, 255, 128])


def test_integers_within_0_255_are_kept_whatever_the_dtype():
    img = np.array([[0, 17, 255]], np.int64)
    np.testing.assert_array_equal(to_rgb_uint8(img)[0, :, 1], [0, 17, 255])
    img16 = np.array([[3, 200]], np.uint16)
    np.testing.assert_array_equal(to_rgb_uint8(img16)[0, :, 0], [3, 200])


def test_wide_integers_are_scaled_by_their_max_and_negatives_clipped():
    img = np.array([[-5, 500, 1000]], np.int32)
    np.testing.assert_array_equal(to_rgb_uint8(img)[0, :, 0], [0, 128, 255])


def test_float_rules_unit_range_byte_range_and_percentiles():
    unit = np.array([[0.0, 0.5, 1.0]])
    np.testing.assert_array_equal(to_rgb_uint8(unit)[0, :, 0], [0, 128, 255])
    pannuke_like = np.array([[0.0, 17.0, 254.6]])  # PanNuke stores float64 0..255
    np.testing.assert_array_equal(to_rgb_uint8(pannuke_like)[0, :, 0], [0, 17, 255])
    wide = np.linspace(-1000, 3000, 1001).reshape(1, -1)
    out = to_rgb_uint8(wide)[0, :, 0]
    assert out[0] == 0 and out[-1] == 255 and np.all(np.diff(out.astype(int)) >= 0)
    assert 120 <= out[500] <= 135  # linear stretch: the middle maps to the middle


def test_bool_and_nan():
    np.testing.assert_array_equal(to_rgb_uint8(np.array([[False, True]]))[0, :, 0], [0, 255])
    out = to_rgb_uint8(np.array([[np.nan, 1.0, 0.5]]))
    np.testing.assert_array_equal(out[0, :, 0], [0, 255, 128])


# ---------------------------------------------------------------- read_image: files


def test_png_jpeg_and_gray_png_roundtrip(tmp_path):
    rgb = _rgb(16, 24)
    iio.imwrite(tmp_path / "a.png", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)
    iio.imwrite(tmp_path / "g.png", rgb[..., 0])
    np.testing.assert_array_equal(read_image(tmp_path / "g.png")[..., 1], rgb[..., 0])
    smooth = np.full((16, 24, 3), (200, 120, 170), np.uint8)
    iio.imwrite(tmp_path / "a.jpg", smooth)
    out = read_image(tmp_path / "a.jpg")
    assert out.shape == (16, 24, 3) and np.abs(out.astype(int) - smooth).max() <= 4


def test_rgba_and_16bit_png(tmp_path):
    rgb = _rgb(8, 8)
    iio.imwrite(tmp_path / "rgba.png", np.dstack([rgb, np.full((8, 8), 128, np.uint8)]))
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgb)
    g16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    iio.imwrite(tmp_path / "g16.png", g16)
    out = read_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(out[..., 0], np.rint(g16 * 255.0 / 65535).astype(np.uint8))


def test_tiff_rgb_planar_and_multipage(tmp_path):
    rgb = _rgb(10, 14)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.tif"), rgb)
    tifffile.imwrite(
        tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate"
    )
    np.testing.assert_array_equal(read_image(tmp_path / "planar.tif"), rgb)
    stack = np.stack([rgb, 255 - rgb, rgb // 2])
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "stack.tif"), rgb)  # first page
    gray_pages = np.stack([rgb[..., 0]] * 6)
    tifffile.imwrite(tmp_path / "gray_pages.tif", gray_pages)
    np.testing.assert_array_equal(read_image(tmp_path / "gray_pages.tif")[..., 2], rgb[..., 0])


def _write_pyramid(path, base):
    levels = [base, base[::2, ::2], base[::4, ::4]]
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(levels[0], subifds=2, photometric="rgb", tile=(16, 16))
        for level in levels[1:]:
            tif.write(level, subfiletype=1, photometric="rgb", tile=(16, 16))
    return levels


def test_pyramidal_ome_tiff_levels(tmp_path):
    path = tmp_path / "slide.ome.tif"
    levels = _write_pyramid(path, _rgb(64, 96))
    np.testing.assert_array_equal(read_image(path), levels[0])
    np.testing.assert_array_equal(read_image(path, level=0), levels[0])
    np.testing.assert_array_equal(read_image(path, level=2), levels[2])
    with pytest.raises(DataError) as err:
        read_image(path, level=3)
    msg = str(err.value)
    assert "slide.ome.tif" in msg and "3 level(s)" in msg and "(32, 48, 3)" in msg
    assert "between 0 and 2" in msg


def test_level_on_a_png_is_refused(tmp_path):
    iio.imwrite(tmp_path / "a.png", _rgb(8, 8))
    with pytest.raises(DataError, match="single resolution level"):
        read_image(tmp_path / "a.png", level=1)


def test_missing_empty_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(DataError, match="not found.*nope.png"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png is empty \(0 bytes\)"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "junk.png").write_bytes(b"this is not a png at all" * 10)
    with pytest.raises(DataError, match="junk.png"):
        read_image(tmp_path / "junk.png")
    (tmp_path / "junk.tif").write_bytes(b"II*\x00garbage" * 10)
    with pytest.raises(DataError, match="junk.tif"):
        read_image(tmp_path / "junk.tif")
    with pytest.raises(DataError, match="is a folder"):
        read_image(tmp_path)


# ---------------------------------------------------------------- read_label_tif


def test_read_label_tif_keeps_integer_ids(tmp_path):
    inst = np.zeros((9, 11), np.uint16)
    inst[2:5, 3:7] = 40000
    tifffile.imwrite(tmp_path / "inst.tif", inst)
    out = read_label_tif(tmp_path / "inst.tif")
    assert out.dtype == np.uint16 and out.shape == (9, 11)
    np.testing.assert_array_equal(out, inst)
    tifffile.imwrite(tmp_path / "f.tif", inst.astype(np.float32)[None])  # (1, H, W) float
    np.testing.assert_array_equal(read_label_tif(tmp_path / "f.tif"), inst)


def test_read_label_tif_rejects_bad_maps(tmp_path):
    tifffile.imwrite(tmp_path / "rgb.tif", _rgb(8, 8), photometric="rgb")
    with pytest.raises(DataError, match="must be 2-D"):
        read_label_tif(tmp_path / "rgb.tif")
    tifffile.imwrite(tmp_path / "frac.tif", np.full((4, 4), 0.5, np.float32))
    with pytest.raises(DataError, match="non-integer"):
        read_label_tif(tmp_path / "frac.tif")
    tifffile.imwrite(tmp_path / "neg.tif", np.full((4, 4), -1, np.int16))
    with pytest.raises(DataError, match="negative ids"):
        read_label_tif(tmp_path / "neg.tif")
