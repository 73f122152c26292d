"""split_instances: distance-transform watershed of a foreground map into nuclei."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from sampo_engine.errors import DataError
from sampo_engine.eval.metrics import instance_metrics
from sampo_engine.predict.instances import split_instances


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


def test_band_flood_equals_one_watershed_call(monkeypatch):
    """Flooding the components band by band gives exactly the labels of one full-image call."""
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    import sampo_engine.predict.instances as instances

    rng = np.random.default_rng(3)
    prob = ndi.gaussian_filter(rng.random((300, 260)), 2.0)
    fg = prob > np.quantile(prob, 0.55)
    components, n = ndi.label(fg)
    surface = ndi.gaussian_filter(instances.distance_to_background(fg), 1.0)
    peaks, _ = instances.find_peaks(surface, 3)
    ids = np.arange(1, n + 1)
    expected = watershed(-surface, peaks, mask=fg)
    monkeypatch.setattr(instances, "FLOOD_BAND_ROWS", 32)  # many bands on a small map
    np.testing.assert_array_equal(
        instances.flood_components(-surface, peaks, components, ids), expected
    )
