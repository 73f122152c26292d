"""npe2 reader: TIFF, OME-TIFF and SVS opened lazily, as a multiscale image when pyramidal.

Nothing is decoded when a file opens: each pyramid level is a zarr array over tifffile's
``ZarrTiffStore`` (``tifffile.imread(path, aszarr=True)``), so napari reads only the tiles it
shows, at the level it shows. A 100 000 px square whole-slide image opens in milliseconds.

zarr 3 and tifffile (checked with zarr 3.1, tifffile 2026.3):

- tifffile >= 2025 supports only zarr >= 3; ``ZarrTiffStore`` is a read-only ``zarr.abc.store.Store``
  that serves zarr *v2* metadata (``.zgroup``/``.zarray``) computed from the TIFF tags.
- ``zarr.open(store, mode="r")`` works: a ``zarr.Group`` with one array per level (its
  ``multiscales`` attribute lists them largest first) for a pyramid, a ``zarr.Array`` otherwise.
- ``dask.array.from_zarr(store, component="0")`` does NOT work under zarr 3: it probes
  ``0/zarr.json`` and tifffile's store raises ``KeyError`` for it instead of answering "missing".
  So levels are taken from the opened group, and no dask fallback is needed (``dask.array.from_zarr``
  on an opened ``zarr.Array`` would work, but napari reads zarr arrays as well as dask ones).

Only the first series of a file is read (for SVS: the slide pyramid, not the label or macro
images; for OME-TIFF: the first image).

Label images open as **Labels** layers, read into memory (so they can be painted): a 2-D
integer (or boolean) TIFF without a pyramid whose name ends in ``_inst``, ``_class``,
``_label(s)``, ``_mask(s)`` or ``_instances`` (the dataset layout of ``sampo-engine train``), or
one whose pixels look like labels — judged on a central window of at most 1024 x 1024 px: piecewise
constant (most pixels equal their right neighbour) with few distinct values (≤ 64) or with a
zero background. RGB(A) images, pyramids and anything else stay images (lazy, as above).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: File name endings this reader accepts (compared in lower case).
TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".ome.tif", ".ome.tiff")
#: Name endings (before the suffix, lower case) of label images.
LABEL_TAGS = ("_inst", "_class", "_label", "_labels", "_mask", "_masks", "_instances")
#: A label-looking image without a tag: at most this many distinct values ...
FEW_VALUES = 64
#: ... and at least this fraction of pixels equal to their right neighbour (0.9 with a zero
#: background and any number of values, as in an instance map).
FLAT_FEW, FLAT_MANY = 0.5, 0.9
#: The window the pixel test reads (px per side, centred).
PROBE = 1024
#: Larger label images stay lazy (read-only) instead of being read into memory.
MAX_LABEL_PIXELS = 256_000_000

PathLike = str | os.PathLike
LayerData = tuple[Any, dict[str, Any], str]


def get_reader(path: PathLike | Sequence[PathLike]) -> Callable[..., list[LayerData]] | None:
    """npe2 ``get_reader`` hook: return :func:`read_tiff` if every path is a readable TIFF, else None.

    Only the file header is read here (tifffile parses the first IFD), never pixel data.
    """
    paths = _as_paths(path)
    if not paths or not all(_is_readable_tiff(p) for p in paths):
        return None
    return read_tiff


def read_tiff(path: PathLike | Sequence[PathLike]) -> list[LayerData]:
    """Open one or several TIFF files as napari image layer data, without loading pixels.

    Returns
    -------
    list of (data, kwargs, layer_type)
        One entry per file. For an image (``"image"``): ``data`` is a list of lazy arrays,
        largest level first, for a pyramid (``kwargs["multiscale"] is True``), or one lazy array
        otherwise; axes are the file's own order (for a slide: (Y, X) or (Y, X, S) with S = 3 or
        4 samples, RGB(A)). For a label image (``"labels"``, see the module docstring): a 2-D
        integer numpy array (Y, X).
    """
    return [open_tiff_lazy(p) for p in _as_paths(path)]


def open_tiff_lazy(path: PathLike) -> LayerData:
    """Open the first series of one TIFF file lazily; see :func:`read_tiff`."""
    levels = tiff_levels(path)
    base = levels[0]
    name = _layer_name(path)
    if len(levels) == 1 and looks_like_labels(base, name):
        data = base if _size(base.shape) > MAX_LABEL_PIXELS else np.asarray(base[...])
        if data.dtype.kind == "b":
            data = data.astype(np.uint8)
        return data, {"name": name, "metadata": {"path": str(path)}}, "labels"
    kwargs: dict[str, Any] = {
        "name": name,
        "rgb": len(base.shape) >= 3 and base.shape[-1] in (3, 4),
        "multiscale": len(levels) > 1,
        "metadata": {"path": str(path)},
    }
    data = levels if len(levels) > 1 else base
    return data, kwargs, "image"


def looks_like_labels(array: Any, name: str = "") -> bool:
    """True for a 2-D integer/boolean array that is a label image (see the module docstring).

    Reads at most a central ``PROBE`` x ``PROBE`` window of ``array`` (lazy arrays decode only the
    tiles it touches). A window of one value is undecided and counts as an image.
    """
    shape = tuple(array.shape)
    dtype = np.dtype(array.dtype)
    if len(shape) != 2 or not (np.issubdtype(dtype, np.integer) or dtype.kind == "b"):
        return False
    if name.lower().endswith(LABEL_TAGS):
        return True
    h, w = shape
    r0, c0 = max(0, (h - PROBE) // 2), max(0, (w - PROBE) // 2)
    window = np.asarray(array[r0 : r0 + PROBE, c0 : c0 + PROBE])
    if window.shape[1] < 2:
        return False
    values = np.unique(window)
    if values.size < 2:
        return False
    flat = float(np.mean(window[:, 1:] == window[:, :-1]))
    if values.size <= FEW_VALUES and flat >= FLAT_FEW:
        return True
    return bool(values[0] == 0 and flat >= FLAT_MANY)


def tiff_levels(path: PathLike) -> list[Any]:
    """Lazy zarr arrays for each resolution level of the first series, largest first.

    A file without a pyramid gives a list of one array. Arrays keep the file open for as long as
    they live; indexing one reads and decodes only the tiles (or strips) it touches.
    """
    import tifffile

    try:
        import zarr
    except ImportError as exc:  # pragma: no cover - zarr comes with the [napari] extra
        raise ImportError(
            "Reading TIFF lazily needs zarr: pip install 'zarr>=3' (or 'napari-sampo[napari]')."
        ) from exc

    store = tifffile.imread(os.fspath(path), aszarr=True)
    try:
        node = zarr.open(store, mode="r")
    except Exception as exc:
        store.close()
        raise OSError(
            f"could not open {path} through tifffile's zarr store "
            f"(zarr {zarr.__version__}, tifffile {tifffile.__version__}); "
            "tifffile >= 2025 needs zarr >= 3."
        ) from exc

    if not isinstance(node, zarr.Group):
        return [node]
    paths = _multiscale_paths(node)
    levels = [node[p] for p in paths]
    # Largest first, whatever the metadata said.
    levels.sort(key=lambda a: _size(a.shape), reverse=True)
    return levels


def _multiscale_paths(group: Any) -> list[str]:
    """Level paths from the group's ``multiscales`` attribute, else every array in the group."""
    multiscales = dict(group.attrs).get("multiscales") or []
    if multiscales and multiscales[0].get("datasets"):
        return [str(d["path"]) for d in multiscales[0]["datasets"]]
    return sorted(str(k) for k in group.array_keys())


def _size(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _as_paths(path: PathLike | Sequence[PathLike]) -> list[str]:
    if isinstance(path, str | os.PathLike):
        return [os.fspath(path)]
    if isinstance(path, Sequence):
        return [os.fspath(p) for p in path if isinstance(p, str | os.PathLike)]
    return []


def _is_readable_tiff(path: str) -> bool:
    if not path.lower().endswith(TIFF_SUFFIXES) or not os.path.isfile(path):
        return False
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return len(tif.series) > 0
    except Exception:
        return False


def _layer_name(path: PathLike) -> str:
    name = Path(path).name
    lower = name.lower()
    for suffix in TIFF_SUFFIXES[::-1]:  # longest (".ome.tiff") first
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name
