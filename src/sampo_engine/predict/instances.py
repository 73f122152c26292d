"""Split a foreground mask (or probability map) into nucleus instances.

Distance-transform watershed: the distance to the background, smoothed with a small Gaussian
(and multiplied by the foreground probability when one is given, which deepens the valleys
between touching nuclei), has one peak per roughly convex nucleus. The peaks seed
``skimage.segmentation.watershed`` on the negated surface, restricted to the foreground, in
bands of rows flooded in a thread pool. Only connected components holding two or more peaks are
flooded; the others are already one nucleus each.

Speed (re-prompting a whole tile must feel live): the distance is the mean of the chamfer
taxicab and chessboard distances (an octagonal approximation of the Euclidean one, ~8× faster
than ``distance_transform_edt`` and equivalent after the smoothing), and the peaks are the
plateaus of ``surface == maximum_filter(surface)`` — what ``skimage.feature.peak_local_max``
finds, without its per-peak spacing loop, which took seconds on noisy maps. Peaks closer than
``min_distance`` survive only when they are exactly equal and unconnected (rare on float maps).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential, watershed

from sampo_engine.errors import DataError

# Defaults for H&E at 20×–40× (nuclei ~5–12 px in radius), chosen on synthetic touching ellipses
# with a noisy probability map: σ = 1 px and 3 px seed spacing gave the best PQ; σ = 0 is better
# only for perfectly clean masks.
DEFAULT_MIN_SIZE = 16
DEFAULT_MIN_DISTANCE = 3
DEFAULT_SIGMA = 1.0


def _foreground_and_probability(
    prob_or_mask, threshold: float, probability
) -> tuple[np.ndarray, np.ndarray | None]:
    arr = np.asarray(prob_or_mask)
    if arr.ndim != 2:
        raise DataError(
            f"split_instances needs one (H, W) map, got shape {arr.shape}; pass a single "
            f"channel (e.g. the foreground probability of one intent)"
        )
    if arr.dtype == bool:
        fg, prob = arr, None
    elif np.issubdtype(arr.dtype, np.floating):
        fg, prob = arr > threshold, arr
    elif np.issubdtype(arr.dtype, np.integer):
        fg, prob = arr != 0, None
    else:
        raise DataError(f"cannot split a map of dtype {arr.dtype}; pass bool, int or float")
    if probability is not None:
        prob = np.asarray(probability)
        if prob.shape != arr.shape:
            raise DataError(
                f"probability shape {prob.shape} differs from the mask shape {arr.shape}; "
                f"pass the probability map the mask was thresholded from"
            )
    if prob is not None:
        prob = np.clip(prob.astype(np.float32, copy=False), 0.0, 1.0)
    return fg, prob


def distance_to_background(fg: np.ndarray) -> np.ndarray:
    """(H, W) float32 distance of each foreground pixel to the background (octagonal chamfer)."""
    taxicab = ndi.distance_transform_cdt(fg, metric="taxicab")
    chessboard = ndi.distance_transform_cdt(fg, metric="chessboard")
    return (0.5 * (taxicab + chessboard)).astype(np.float32)


def find_peaks(surface: np.ndarray, min_distance: int) -> tuple[np.ndarray, int]:
    """Regional maxima of ``surface`` (> 0) within a (2·min_distance + 1)² window.

    Returns an (H, W) int32 map numbering each peak (a plateau of equal maxima is one peak)
    1..N, and N.
    """
    size = 2 * max(int(min_distance), 1) + 1
    is_peak = (surface == ndi.maximum_filter(surface, size=size)) & (surface > 1e-6)
    peaks, n = ndi.label(is_peak, structure=np.ones((3, 3), bool))
    return peaks.astype(np.int32, copy=False), int(n)


#: rows per band of components flooded together (see flood_components)
FLOOD_BAND_ROWS = 128


def flood_components(
    elevation: np.ndarray, markers: np.ndarray, components: np.ndarray, ids: np.ndarray
) -> np.ndarray:
    """Watershed of the components in ``ids``, in bands of rows flooded in a thread pool.

    Equivalent to one ``watershed(elevation, markers, mask=isin(components, ids))`` call (the
    components are disjoint, so a flood never crosses from one to another): the components are
    grouped by the band of :data:`FLOOD_BAND_ROWS` rows their top row falls in, and each band
    is flooded once on the bounding box of its components. scikit-image's watershed releases
    the GIL, so the bands flood in parallel, and a few dozen calls replace the thousands a
    per-component flood makes on a noisy map (there the per-call overhead dominated: 0.46 s
    vs 0.94 s for a 2048² map with 1,834 components to split, 2 cores). Marker ids must be
    unique across the image; they are kept.
    """
    out = np.zeros(components.shape, dtype=np.int32)
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size == 0:
        return out
    boxes = ndi.find_objects(components)
    bands: dict[int, list[int]] = {}
    for cid in ids.tolist():
        bands.setdefault(boxes[cid - 1][0].start // FLOOD_BAND_ROWS, []).append(cid)
    chosen = np.zeros(len(boxes) + 1, dtype=np.int64)  # component id -> its band + 1 (0: none)

    def flood(band: int):
        cids = bands[band]
        rows = slice(
            min(boxes[c - 1][0].start for c in cids), max(boxes[c - 1][0].stop for c in cids)
        )
        cols = slice(
            min(boxes[c - 1][1].start for c in cids), max(boxes[c - 1][1].stop for c in cids)
        )
        box = (rows, cols)
        inside = chosen[components[box]] == band + 1
        seeds = np.where(inside, markers[box], 0)
        return box, inside, watershed(elevation[box], seeds, mask=inside)

    for band, cids in bands.items():
        chosen[cids] = band + 1
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for box, inside, flooded in pool.map(flood, sorted(bands)):
            out[box][inside] = flooded[inside]
    return out


def split_instances(
    prob_or_mask,
    threshold: float = 0.5,
    min_size: int = DEFAULT_MIN_SIZE,
    min_distance: int = DEFAULT_MIN_DISTANCE,
    probability=None,
    sigma: float = DEFAULT_SIGMA,
) -> np.ndarray:
    """Instance labels of the nuclei in a foreground map.

    Args:
        prob_or_mask: (H, W) map indexed [row, col]. float → a foreground probability,
            thresholded at ``threshold`` (strictly greater is foreground) and used as the
            probability below; bool or int → a mask (nonzero = foreground).
        threshold: foreground threshold for a float map.
        min_size: instances (whole components or watershed fragments) with fewer pixels are
            dropped (set to 0).
        min_distance: minimum distance in pixels between two seeds; nuclei whose centres are
            closer stay merged.
        probability: optional (H, W) float map in [0, 1] to weight the distance transform with
            (overrides the float ``prob_or_mask``).
        sigma: Gaussian smoothing (pixels) of the distance transform; 0 disables it.

    Returns:
        (H, W) int32 labels: 0 = background, nuclei numbered 1..N consecutively (no gaps; the
        order carries no meaning). All-zero when there is no foreground.
    """
    fg, prob = _foreground_and_probability(prob_or_mask, threshold, probability)
    out = np.zeros(fg.shape, dtype=np.int32)
    if not fg.any():
        return out

    components, n_components = ndi.label(fg)
    areas = np.bincount(components.ravel(), minlength=n_components + 1)
    if min_size > 1:
        # components smaller than min_size can only give fragments that are dropped anyway:
        # remove them before the expensive steps (noisy maps hold thousands)
        tiny = areas < min_size
        tiny[0] = False
        if tiny.any():
            fg = fg & ~tiny[components]
            components[~fg] = 0
    surface = distance_to_background(fg)
    if sigma > 0:
        surface = ndi.gaussian_filter(surface, sigma)
    if prob is not None:
        surface *= prob
    surface[~fg] = 0.0

    peaks, n_peaks = find_peaks(surface, min_distance)
    # the component of each peak (a plateau lies within one component)
    peak_component = np.zeros(n_peaks + 1, dtype=np.int64)
    at_peaks = peaks > 0
    peak_component[peaks[at_peaks]] = components[at_peaks]
    peaks_per_component = np.bincount(peak_component[1:], minlength=n_components + 1)
    # a component under 2·min_size cannot hold two nuclei of min_size: keep it whole
    needs_split = (peaks_per_component >= 2) & (areas >= 2 * max(min_size, 1))
    needs_split[0] = False

    if needs_split.any():
        split_mask = needs_split[components]
        seeds = needs_split[peak_component]
        seeds[0] = False
        new_id = np.zeros(n_peaks + 1, dtype=np.int32)
        new_id[seeds] = np.arange(1, int(seeds.sum()) + 1)
        markers = new_id[peaks]
        flooded = flood_components(-surface, markers, components, np.flatnonzero(needs_split))
        offset = int(seeds.sum())
        out = np.where(split_mask, flooded, np.where(components > 0, components + offset, 0))
        out = out.astype(np.int32, copy=False)
    else:
        out = components.astype(np.int32, copy=False)

    if min_size > 1:
        areas = np.bincount(out.ravel())
        small = areas < min_size
        small[0] = False
        if small.any():
            out[small[out]] = 0
    out, _, _ = relabel_sequential(out)
    return out.astype(np.int32, copy=False)
