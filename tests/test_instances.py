"""split_instances: distance-transform watershed of a foreground map into nuclei."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from sampo_engine.errors import DataError
from sampo_engine.predict.instances import split_instances
from sampo_engine.scoring.metrics import instance_metrics


def _two_touching_discs(shape=(60, 80)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[disk((30, 25), 12, shape=shape)] = True
    mask[disk((30, 47), 12, shape=shape)] = True  # centres 22 px apart: overlapping rims
    return mask


def test_two_touching_discs_are_split_into_two():
    mask = _two_touching_discs()
    labels = split_instances(mask)
    assert labels.dtype == np.int32 and labels.shape == mask.shape
    assert set(np.unique(labels)) == {0, 1, 2}
    np.testing.assert_array_equal(labels > 0, mask)  # nothing lost, nothing added
    # each disc's centre lies in a different instance, and the two are about equal in size
    assert labels[30, 25] != labels[30, 47]
    areas = np.bincount(labels.ravel())[1:]
    assert abs(int(areas[0]) - int(areas[1])) < 0.1 * areas.sum()


def test_probability_input_is_thresholded_and_used():
    mask = _two_touching_discs()
    prob = np.where(mask, 0.9, 0.1).astype(np.float32)
    labels = split_instances(prob, threshold=0.5)
    assert labels.max() == 2
    np.testing.assert_array_equal(labels > 0, mask)
    # a mask plus a separate probability map gives the same answer
    np.testing.assert_array_equal(split_instances(mask, probability=prob) > 0, mask)
    assert split_instances(prob, threshold=0.95).max() == 0


def test_tiny_fragments_dropped_and_labels_consecutive():
    mask = np.zeros((50, 50), np.uint8)
    mask[disk((10, 10), 6)] = 1  # ~113 px
    mask[disk((35, 35), 7)] = 1  # ~150 px
    mask[45:47, 2:4] = 1  # 4 px speck
    mask[2, 40] = 1  # 1 px speck
    labels = split_instances(mask, min_size=16)
    assert sorted(np.unique(labels)) == [0, 1, 2]
    assert labels[45, 2] == 0 and labels[2, 40] == 0
    assert labels[10, 10] > 0 and labels[35, 35] > 0
    kept = split_instances(mask, min_size=1)
    assert sorted(np.unique(kept)) == [0, 1, 2, 3, 4]


def test_all_empty_input():
    for empty in (np.zeros((40, 30), bool), np.zeros((40, 30), np.float32)):
        labels = split_instances(empty)
        assert labels.dtype == np.int32 and labels.shape == (40, 30) and labels.max() == 0


def test_many_nuclei_on_a_larger_tile():
    rng = np.random.default_rng(0)
    shape = (600, 600)
    truth = np.zeros(shape, np.int32)
    n = 0
    for cy in range(15, 600, 30):
        for cx in range(15, 600, 30):
            n += 1
            rr, cc = disk((cy + rng.integers(-3, 4), cx + rng.integers(-3, 4)), 12, shape=shape)
            truth[rr, cc] = n  # neighbours overwrite rims: many touch
    labels = split_instances(truth > 0)
    scores = instance_metrics(truth, labels)
    assert labels.max() == pytest.approx(n, rel=0.05)
    assert scores["dq"] > 0.95 and scores["pq"] > 0.85


def test_bad_inputs():
    with pytest.raises(DataError, match="single"):
        split_instances(np.zeros((2, 8, 8), bool))
    with pytest.raises(DataError, match="probability shape"):
        split_instances(np.zeros((8, 8), bool), probability=np.zeros((8, 9)))


def _noisy_surface(seed: int, shape=(300, 260)):
    from scipy import ndimage as ndi

    import sampo_engine.predict.instances as instances

    rng = np.random.default_rng(seed)
    prob = ndi.gaussian_filter(rng.random(shape), 2.0)
    fg = prob > np.quantile(prob, 0.55)
    surface = ndi.gaussian_filter(instances.distance_to_background(fg), 1.0)
    surface[~fg] = 0
    return fg, surface


def test_ascent_flood_labels_like_scikit_image_watershed():
    """Where every ascent ends at a marker, the flood equals scikit-image's priority flood."""
    from skimage.segmentation import watershed

    import sampo_engine.predict.instances as instances

    fg, surface = _noisy_surface(3)
    # no ties (where two neighbours are equally high the two break them differently)
    surface = surface + np.random.default_rng(0).random(surface.shape).astype(np.float32) * 1e-3
    surface[~fg] = 0
    # every local maximum a marker: no bumps, so the labels must be identical
    pad = np.pad(np.where(fg, surface, -np.inf), 1, constant_values=-np.inf)
    h, w = surface.shape
    neighbours = [pad[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w] for dr, dc in instances._NEIGHBOURS]
    maxima = fg & (np.max(neighbours, axis=0) <= surface)
    markers = np.zeros(surface.shape, np.int32)
    markers[maxima] = np.arange(1, int(maxima.sum()) + 1)
    expected = watershed(-surface, markers, mask=fg)
    np.testing.assert_array_equal(instances.flood_to_markers(surface, markers, fg), expected)
    # ... and the same in bands of rows on two threads
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        got = instances.flood_to_markers(surface, markers, fg, pool=pool)
    np.testing.assert_array_equal(got, expected)


def test_ascent_flood_with_bumps_stays_close_to_scikit_image():
    """With the real peak spacing (bumps that are no markers), ≥ 97 % of pixels agree."""
    from skimage.segmentation import watershed

    import sampo_engine.predict.instances as instances

    fg, surface = _noisy_surface(4)
    peaks, n = instances.find_peaks(surface, 3)
    got = instances.flood_to_markers(surface, peaks, fg, reach=3)
    expected = watershed(-surface, peaks, mask=fg)
    assert n > 20
    # unlabelled = a piece without a marker (its peak suppressed across a gap), as for the flood
    np.testing.assert_array_equal(got == 0, expected == 0)
    assert np.mean(got[fg] == expected[fg]) > 0.97


def test_bump_suppressed_across_a_gap_is_flooded_from_its_rim():
    """A bump whose only higher neighbour within reach lies in another piece (across a
    background gap) has no higher pixel of its own piece to step to: the fallback floods it."""
    import sampo_engine.predict.instances as instances

    surface = np.zeros((7, 12), np.float32)
    mask = np.zeros((7, 12), bool)
    # piece A: a marker at col 0, a valley at col 4, a bump at col 6 with nothing higher of
    # piece A within 3 px; piece B across the gap at col 7 is higher (it suppressed the bump)
    mask[3, 0:7] = True
    surface[3, 0:7] = [5, 4, 3, 2, 1, 2, 3]
    mask[3, 8:11] = True
    surface[3, 8:11] = [9, 8, 7]
    markers = np.zeros((7, 12), np.int32)
    markers[3, 0], markers[3, 8] = 1, 2
    got = instances.flood_to_markers(surface, markers, mask, reach=3)
    np.testing.assert_array_equal(got[3, 0:7], 1)  # the bump's basin flooded from piece A
    np.testing.assert_array_equal(got[3, 8:11], 2)
    assert (got[~mask] == 0).all()


def test_bump_joins_the_higher_peak_within_reach():
    import sampo_engine.predict.instances as instances

    surface = np.array([[1, 2, 3, 9, 4, 5, 4, 3]], np.float32)  # a bump (5) 2 px from the peak
    mask = np.ones_like(surface, bool)
    markers = np.zeros(surface.shape, np.int32)
    markers[0, 3] = 7
    np.testing.assert_array_equal(instances.flood_to_markers(surface, markers, mask), 7)


def test_row_band_filters_are_exact():
    from concurrent.futures import ThreadPoolExecutor

    from scipy import ndimage as ndi

    import sampo_engine.predict.instances as instances

    image = np.random.default_rng(0).random((997, 301)).astype(np.float32)
    with ThreadPoolExecutor(3) as pool:
        gauss = instances.in_row_bands(lambda b: ndi.gaussian_filter(b, 1.5), [image], 6, pool)
        peaks = instances.in_row_bands(lambda b: ndi.maximum_filter(b, 7), [image], 3, pool)
    np.testing.assert_array_equal(gauss, ndi.gaussian_filter(image, 1.5))
    np.testing.assert_array_equal(peaks, ndi.maximum_filter(image, 7))


def test_large_map_split_on_threads_equals_one_thread(monkeypatch):
    import sampo_engine.predict.instances as instances

    rng = np.random.default_rng(5)
    from scipy import ndimage as ndi

    prob = np.clip(ndi.gaussian_filter(rng.random((640, 600)), 3.0) * 4 - 1.5, 0, 1)
    threaded = split_instances(prob.astype(np.float32))
    monkeypatch.setattr(instances, "_workers", lambda: 1)
    single = split_instances(prob.astype(np.float32))
    assert threaded.max() > 50
    np.testing.assert_array_equal(threaded, single)
