"""The TIFF reader: lazy, multiscale for pyramids, and silent (None) for what it cannot read."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_sampo._reader import get_reader, read_tiff

TILE = 512
#: A "multi-gigapixel" slide: 98 304 px square RGB, 29 GB decoded, a few hundred kB on disk
#: because all tiles but one per level are written empty (zero byte count, read back as 0).
BIG = 98_304
BIG_LEVELS = 7  # 98 304 ... 1 536 px, so napari can show the whole slide from the smallest


def _sparse_tiles(height: int, width: int, value: int) -> Iterator[np.ndarray | None]:
    """Tiles in row-major order: the top-left one filled with ``value``, the others empty."""
    for ty in range(0, height, TILE):
        for tx in range(0, width, TILE):
            yield np.full((TILE, TILE, 3), value, np.uint8) if ty == tx == 0 else None


@pytest.fixture(scope="module")
def big_pyramid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiled pyramidal BigTIFF, levels in SubIFDs (the OME-TIFF / QuPath layout)."""
    path = tmp_path_factory.mktemp("slides") / "big_slide.ome.tif"
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for level in range(BIG_LEVELS):
            size = BIG >> level
            tif.write(
                _sparse_tiles(size, size, value=10 + level),
                shape=(size, size, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="rgb",
                compression="zlib",
                **({"subifds": BIG_LEVELS - 1} if level == 0 else {"subfiletype": 1}),
            )
    return path


@pytest.fixture(scope="module")
def small_image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (1024, 1536, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def series_pyramid(tmp_path_factory: pytest.TempPathFactory, small_image: np.ndarray) -> Path:
    """Pyramid as consecutive reduced-resolution pages (the SVS-like layout), not SubIFDs."""
    path = tmp_path_factory.mktemp("slides") / "series_pyramid.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(small_image, tile=(256, 256), photometric="rgb")
        for step in (2, 4):
            tif.write(
                small_image[::step, ::step], tile=(256, 256), photometric="rgb", subfiletype=1
            )
    return path


def test_get_reader_accepts_tiff_suffixes(tmp_path: Path, small_image: np.ndarray) -> None:
    for name in ("a.tif", "b.TIFF", "c.ome.tif", "d.ome.tiff", "e.svs"):
        tifffile.imwrite(tmp_path / name, small_image[:64, :64], photometric="rgb")
        assert callable(get_reader(str(tmp_path / name))), name
    assert callable(get_reader([str(tmp_path / "a.tif"), tmp_path / "c.ome.tif"]))


def test_get_reader_declines_what_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "garbage.tif").write_bytes(b"this is not a TIFF file at all")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "folder.tif").mkdir()
    tifffile.imwrite(tmp_path / "ok.tif", np.zeros((8, 8), np.uint8))
    assert get_reader(str(tmp_path / "garbage.tif")) is None
    assert get_reader(str(tmp_path / "image.png")) is None
    assert get_reader(str(tmp_path / "missing.tif")) is None
    assert get_reader(str(tmp_path / "folder.tif")) is None
    assert get_reader([str(tmp_path / "ok.tif"), str(tmp_path / "image.png")]) is None
    assert get_reader([]) is None


def test_multi_gigapixel_pyramid_opens_lazily(big_pyramid: Path) -> None:
    assert big_pyramid.stat().st_size < 20e6
    tracemalloc.start()
    try:
        reader = get_reader(str(big_pyramid))
        assert reader is not None
        ((data, kwargs, layer_type),) = reader(str(big_pyramid))
        # Read a few windows: decodes the tiles touched, nothing else.
        top_left = np.asarray(data[0][:4, :4])
        bottom_right = np.asarray(data[0][-4:, -4:])
        smallest = np.asarray(data[-1][:])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64e6, f"opening the slide allocated {peak / 1e6:.0f} MB"

    assert layer_type == "image"
    assert kwargs["multiscale"] is True
    assert kwargs["rgb"] is True
    assert kwargs["name"] == "big_slide"
    assert isinstance(data, list)
    assert [level.shape for level in data] == [(BIG >> i, BIG >> i, 3) for i in range(BIG_LEVELS)]
    for level in data:
        assert not isinstance(level, np.ndarray)
        assert level.dtype == np.uint8
        assert level.chunks[:2] == (TILE, TILE)
    assert (top_left == 10).all()
    assert (bottom_right == 0).all()
    assert smallest.shape == (BIG >> (BIG_LEVELS - 1),) * 2 + (3,)
    assert (smallest[:TILE, :TILE] == 10 + BIG_LEVELS - 1).all()


def test_series_pyramid_levels_and_values(series_pyramid: Path, small_image: np.ndarray) -> None:
    ((data, kwargs, _),) = read_tiff(series_pyramid)
    assert kwargs["multiscale"] is True and kwargs["rgb"] is True
    assert [level.shape for level in data] == [(1024, 1536, 3), (512, 768, 3), (256, 384, 3)]
    np.testing.assert_array_equal(data[0][300:700, 900:1300], small_image[300:700, 900:1300])
    np.testing.assert_array_equal(data[1][:], small_image[::2, ::2])


def test_flat_tiff_is_one_lazy_array(tmp_path: Path) -> None:
    gray = np.arange(600 * 700, dtype=np.uint16).reshape(600, 700)
    path = tmp_path / "gray.tiff"
    tifffile.imwrite(path, gray, tile=(256, 256))
    ((data, kwargs, layer_type),) = read_tiff(str(path))
    assert layer_type == "image"
    assert kwargs["multiscale"] is False
    assert kwargs["rgb"] is False
    assert kwargs["name"] == "gray"
    assert not isinstance(data, list | np.ndarray)
    assert data.shape == (600, 700)
    np.testing.assert_array_equal(data[:], gray)


@pytest.mark.viewer
def test_viewer_opens_pyramid_as_multiscale(make_napari_viewer, big_pyramid: Path) -> None:
    viewer = make_napari_viewer()
    tracemalloc.start()
    try:
        (layer,) = viewer.open(str(big_pyramid), plugin="napari-sampo")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256e6, f"showing the slide allocated {peak / 1e6:.0f} MB"
    assert layer.multiscale
    assert layer.rgb
    assert len(layer.data) == BIG_LEVELS
    assert layer.data[0].shape == (BIG, BIG, 3)
    assert not isinstance(layer.data[0], np.ndarray)


# ------------------------------------------------------------------------------ label images


def _instances(size: int = 300, n: int = 40, seed: int = 0) -> np.ndarray:
    """A uint16 instance map: ``n`` discs on a zero background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    inst = np.zeros((size, size), np.uint16)
    for label in range(1, n + 1):
        cy, cx = rng.integers(10, size - 10, 2)
        inst[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = label
    return inst


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("tile_inst.tif", lambda: _instances()),  # the dataset layout's instance map
        ("tile_class.tif", lambda: (_instances() % 3).astype(np.uint8)),  # its class map
        ("nuclei.tif", lambda: _instances(n=300).astype(np.int32)),  # many ids, zero background
        ("mask.tiff", lambda: (_instances() > 0).astype(np.uint8) * 255),  # few values
    ],
)
def test_integer_label_tiffs_open_as_labels(tmp_path: Path, name, make) -> None:
    array = make()
    tifffile.imwrite(tmp_path / name, array)
    ((data, kwargs, layer_type),) = get_reader(str(tmp_path / name))(str(tmp_path / name))
    assert layer_type == "labels"
    assert isinstance(data, np.ndarray) and data.flags.writeable  # paintable
    np.testing.assert_array_equal(data, array)
    assert kwargs["name"] == Path(name).stem and "rgb" not in kwargs


def test_images_stay_images(tmp_path: Path, small_image: np.ndarray) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (300, 300), dtype=np.uint8)
    cases = {
        "he.tif": small_image[:300, :300],  # RGB H&E tile
        "he_inst_preview.tif": small_image[:300, :300],  # a tag elsewhere in the name
        "gray8.tif": noise,  # 8-bit grayscale
        "flat.tif": np.zeros((300, 300), np.uint16),  # one value: undecided -> image
        "float_inst.tif": _instances().astype(np.float32),  # not integer
    }
    for name, array in cases.items():
        tifffile.imwrite(tmp_path / name, array, photometric="rgb" if array.ndim == 3 else None)
        ((_, _, layer_type),) = read_tiff(tmp_path / name)
        assert layer_type == "image", name


@pytest.mark.viewer
def test_inst_tiff_is_offered_to_the_finetune_dock(make_napari_viewer, tmp_path: Path) -> None:
    inst = _instances()
    tifffile.imwrite(tmp_path / "tile_inst.tif", inst)
    tifffile.imwrite(tmp_path / "tile_image.tif", np.zeros((300, 300, 3), np.uint8))
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "tile_image.tif"), plugin="napari-sampo")
    (layer,) = viewer.open(str(tmp_path / "tile_inst.tif"), plugin="napari-sampo")
    assert type(layer).__name__ == "Labels"
    _, finetune = viewer.window.add_plugin_dock_widget("napari-sampo", "Fine-tune on this layer")
    assert finetune.labels_combo.current_layer() is layer
    assert finetune.image_combo.current_layer().name == "tile_image"
