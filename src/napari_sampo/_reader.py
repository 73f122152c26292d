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
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: File name endings this reader accepts (compared in lower case).
TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".ome.tif", ".ome.tiff")

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
    list of (data, kwargs, "image")
        One entry per file. ``data`` is a list of lazy arrays, largest level first, for a pyramid
        (``kwargs["multiscale"] is True``), or one lazy array otherwise. Array axes are the file's
        own order (for a slide: (Y, X) or (Y, X, S) with S = 3 or 4 samples, RGB(A)).
    """
    return [open_tiff_lazy(p) for p in _as_paths(path)]


def open_tiff_lazy(path: PathLike) -> LayerData:
    """Open the first series of one TIFF file lazily; see :func:`read_tiff`."""
    levels = tiff_levels(path)
    base = levels[0]
    kwargs: dict[str, Any] = {
        "name": _layer_name(path),
        "rgb": len(base.shape) >= 3 and base.shape[-1] in (3, 4),
        "multiscale": len(levels) > 1,
        "metadata": {"path": str(path)},
    }
    data = levels if len(levels) > 1 else base
    return data, kwargs, "image"


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
