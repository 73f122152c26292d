"""Reading images and label maps from disk into the engine's array conventions.

Every reader returns arrays indexed ``[row, col]`` (y, x). RGB images come back as (H, W, 3) uint8,
whatever was stored: gray, gray + alpha, RGBA, channel-first, 16-bit, float, multi-page TIFF or a
pyramidal (OME-)TIFF level. :func:`to_rgb_uint8` documents the conversion rule.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from sampo_engine.errors import DataError

#: Suffixes read with tifffile (everything else goes through imageio).
TIFF_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".svs", ".btf", ".tf8")

#: Percentiles used to stretch float images whose values lie outside [0, 255].
FLOAT_PERCENTILES = (0.5, 99.5)


def to_rgb_uint8(array, rgb: bool | None = None, contrast_limits=None) -> np.ndarray:
    """Convert an image array to (H, W, 3) uint8 RGB.

    Accepted shapes (rows, cols = H, W), with ``rgb=None`` (the default: guessed from the shape):
      * (H, W) gray and (H, W, 1) gray: replicated to 3 channels;
      * (H, W, 2) gray + alpha and (H, W, 4) RGBA: alpha is dropped (not composited);
      * (H, W, 3) RGB;
      * channel-first (C, H, W) with C in 1..4 when the last axis is not itself 1..4
        (TIFF planar storage, torch tensors);
      * any of the above with extra leading singleton axes, e.g. (1, H, W, 3).

    ``rgb`` True / False says the layout instead of guessing it (napari's ``Image.rgb``): True =
    (H, W, 3|4), the last axis holds the colour (alpha dropped); False = one gray (H, W) plane.
    Leading singleton axes are dropped either way.

    Value rule (applied to all channels together, so colours keep their balance):
      * uint8: unchanged; bool: False -> 0, True -> 255;
      * integers whose values all lie in 0..255 (any integer dtype): cast unchanged;
      * other integers of at most 16 bits (uint16, int16 ...): scaled by the dtype's range,
        ``v * 255 / max(dtype)``, negatives clipped to 0 — a 16-bit image keeps its exposure;
      * wider integers (32/64-bit) beyond 255: scaled by ``v * 255 / max(v)``;
      * floats in [0, 1]: ``v * 255``; floats in [0, 255] (e.g. PanNuke's float64 ``images.npy``):
        rounded unchanged; any other float range: linearly stretched between its 0.5th and
        99.5th percentiles (:data:`FLOAT_PERCENTILES`). NaN and inf count as 0.

    ``contrast_limits`` replaces that rule (except for uint8 and bool, kept as above) by a
    viewer's display mapping, what a napari layer shows: ``(lo, hi)`` maps ``lo`` -> 0 and
    ``hi`` -> 255 linearly, clipped (all 0 when ``hi <= lo``); ``"auto"`` uses the data's own
    range: (0, 1) for floats whose maximum is ≤ 1, else (min, max).

    Raises:
        DataError: the shape is not an image (e.g. a 3-D stack with many channels).
    """
    arr = np.asarray(array)
    keep = 3 if rgb is None else (3 if rgb else 2)
    while arr.ndim > keep and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2 and not rgb:
        arr = arr[..., None]
    elif rgb is None and arr.ndim == 3 and arr.shape[-1] > 4 and 1 <= arr.shape[0] <= 4:
        arr = np.moveaxis(arr, 0, -1)
    allowed = (1, 2, 3, 4) if rgb is None else ((3, 4) if rgb else (1,))
    if arr.ndim != 3 or arr.shape[-1] not in allowed or min(arr.shape[:2]) < 1:
        raise DataError(
            f"Cannot use an array of shape {tuple(np.shape(array))} as an image: expected "
            "(H, W) gray, (H, W, 3) RGB, (H, W, 4) RGBA or channel-first (3, H, W). "
            "Save the image as 2-D gray or RGB (one plane, one page) and try again."
        )
    channels = arr.shape[-1]
    if channels == 2:  # gray + alpha
        arr = arr[..., :1]
    elif channels == 4:  # RGBA
        arr = arr[..., :3]
    if contrast_limits is None:
        values = _values_to_uint8(arr)
    else:
        values = _display_to_uint8(arr, contrast_limits)
    if values.shape[-1] == 1:
        values = np.repeat(values, 3, axis=-1)
    return np.ascontiguousarray(values)


def _values_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Map values to uint8 by the rule in :func:`to_rgb_uint8`; the shape is unchanged."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * np.uint8(255)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo >= 0 and hi <= 255:
            return arr.astype(np.uint8)
        info = np.iinfo(arr.dtype)
        scale = info.max if info.bits <= 16 else max(hi, 1)
        out = np.clip(arr.astype(np.float64), 0, None) * (255.0 / scale)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        out = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (float(out.min()), float(out.max())) if out.size else (0.0, 0.0)
        if lo >= 0.0 and hi <= 1.0:
            out = out * 255.0
        elif not (lo >= 0.0 and hi <= 255.0):
            p_lo, p_hi = np.percentile(out, FLOAT_PERCENTILES)
            out = (out - p_lo) * (255.0 / max(float(p_hi - p_lo), 1e-12))
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    raise DataError(
        f"Cannot use an image of dtype {arr.dtype}: expected integer, float or bool pixels. "
        "Save the image as 8-bit or 16-bit RGB and try again."
    )


def _display_to_uint8(arr: np.ndarray, contrast_limits) -> np.ndarray:
    """Map values to uint8 by a display range (``contrast_limits`` of :func:`to_rgb_uint8`)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * np.uint8(255)
    values = arr.astype(np.float32)
    if isinstance(contrast_limits, str):
        if contrast_limits != "auto":
            raise ValueError(f"contrast_limits must be (lo, hi) or 'auto', not {contrast_limits!r}")
        if np.issubdtype(arr.dtype, np.floating) and values.size and values.max() <= 1.0:
            lo, hi = 0.0, 1.0
        else:
            lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    else:
        lo, hi = (float(c) for c in contrast_limits)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.clip((values - lo) * scale, 0, 255).round().astype(np.uint8)


def _check_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"Image file not found: {path}. Check the path (and its spelling).")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not an image file. Point to one image file.")
    if path.stat().st_size == 0:
        raise DataError(f"Image file {path} is empty (0 bytes). Re-copy or re-export it.")
    return path


def _is_tiff(path: Path) -> bool:
    return path.name.lower().endswith(TIFF_SUFFIXES)


def read_image(path: str | os.PathLike, level: int | None = None) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB, indexed [row, col].

    PNG, JPEG, BMP ... are read with imageio; TIFF (also OME-TIFF, SVS and other pyramidal TIFF)
    with tifffile. ``level`` picks a pyramid level of a TIFF (0 = full resolution, the default;
    higher = coarser). Of a multi-page stack or a higher-dimensional series (Z, T, ...) the first
    plane is read; a channel-first (3, H, W) or planar RGB TIFF is read as RGB. Values are
    converted by :func:`to_rgb_uint8`.

    Raises:
        DataError: the file is missing, empty or unreadable, ``level`` does not exist (the message
            lists the levels and their shapes), or the content is not an image.
    """
    path = _check_file(path)
    if _is_tiff(path):
        arr = _read_tiff(path, level)
    else:
        if level not in (None, 0):
            raise DataError(
                f"{path.name} has a single resolution level (0); level={level} was asked. "
                "Pyramid levels exist only in (OME-)TIFF files: drop the level option."
            )
        arr = _read_with_imageio(path)
    try:
        return to_rgb_uint8(arr)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None


def _read_with_imageio(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    try:
        with warnings.catch_warnings():  # imageio's plugin probing warns about legacy plugins
            warnings.simplefilter("ignore", DeprecationWarning)
            arr = iio.imread(path)
    except Exception as exc:  # imageio raises many types for corrupt or unknown files
        raise DataError(
            f"Cannot read image {path}: {exc}. The file is corrupt or not an image; "
            "re-export it as PNG, JPEG or TIFF."
        ) from None
    if arr.ndim == 4:  # animated PNG/GIF: first frame
        arr = arr[0]
    return arr


def _read_tiff(path: Path, level: int | None) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise DataError(f"TIFF file {path} holds no image. Re-export it.")
            series = tif.series[0]
            levels = series.levels
            index = 0 if level is None else int(level)
            if not 0 <= index < len(levels):
                shapes = ", ".join(f"{i}: {tuple(lv.shape)}" for i, lv in enumerate(levels))
                raise DataError(
                    f"{path.name} has no pyramid level {level}; it has {len(levels)} "
                    f"level(s) ({shapes}). Pick a level between 0 and {len(levels) - 1}."
                )
            arr = levels[index].asarray()
    except DataError:
        raise
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, codec errors ...
        raise DataError(
            f"Cannot read TIFF {path}: {exc}. The file is corrupt or uses an unsupported "
            "compression; re-export it (e.g. as uncompressed or deflate TIFF)."
        ) from None
    return _first_plane(arr)


def _first_plane(arr: np.ndarray) -> np.ndarray:
    """Reduce a TIFF series to one 2-D or 3-D (channels) plane: index 0 along extra axes."""
    arr = np.squeeze(arr) if arr.ndim > 3 else arr
    while arr.ndim > 3:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] > 4 and arr.shape[0] > 4:  # a stack of gray pages
        arr = arr[0]
    return arr


def read_label_tif(path: str | os.PathLike) -> np.ndarray:
    """Read a label map (instance or class ids) as a 2-D (H, W) integer array, [row, col].

    TIFF is read with tifffile, other formats (PNG) with imageio; the stored integer dtype is
    kept (float maps holding whole numbers are cast to int32). Singleton axes are squeezed.

    Raises:
        DataError: missing, empty or unreadable file; not 2-D; non-integer or negative values.
    """
    path = _check_file(path)
    if _is_tiff(path):
        import tifffile

        try:
            arr = tifffile.imread(path)
        except Exception as exc:
            raise DataError(
                f"Cannot read label map {path}: {exc}. The file is corrupt; re-export it as a "
                "single-page integer TIFF."
            ) from None
    else:
        arr = _read_with_imageio(path)
    arr = np.squeeze(np.asarray(arr))
    if arr.ndim != 2:
        raise DataError(
            f"Label map {path} has shape {arr.shape}; a label map must be 2-D (H, W). "
            "Save one single-channel page of integer ids."
        )
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise DataError(
                f"Label map {path} holds non-integer values ({arr.dtype}). Save integer ids "
                "(uint16 for instances, uint8 for classes)."
            )
        arr = arr.astype(np.int32)
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"Label map {path} has dtype {arr.dtype}; save integer ids instead.")
    if arr.size and arr.min() < 0:
        raise DataError(
            f"Label map {path} holds negative ids (min {arr.min()}). Use 0 for background and "
            "positive ids for objects."
        )
    return arr
