"""Synthetic H&E-like tiles: determinism, label consistency, class look, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest
from skimage.measure import label, regionprops

from sampo_engine.data.sample import NucleiDataset, NucleiSample
from sampo_engine.data.synthetic import (
    CLASS_NAMES,
    MIN_AREA,
    make_synthetic_dataset,
    make_synthetic_sample,
    synthetic_tile,
)


@pytest.fixture(scope="module")
def tiles() -> list[NucleiSample]:
    return [make_synthetic_sample(256, seed=s, class_mix=(1, 1, 1)) for s in range(4)]


def test_types_shapes_and_determinism():
    a = make_synthetic_sample((96, 160), seed=5)
    assert isinstance(a, NucleiSample)
    assert a.image.shape == (96, 160, 3) and a.image.dtype == np.uint8
    assert a.inst.shape == (96, 160) and a.inst.dtype == np.int32
    assert a.cls.shape == (96, 160) and a.cls.dtype == np.uint8
    b = make_synthetic_sample((96, 160), seed=5)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.inst, b.inst)
    c = make_synthetic_sample((96, 160), seed=6)
    assert not np.array_equal(a.image, c.image)
    assert make_synthetic_sample(64, seed=1).image.shape == (64, 64, 3)


def test_labels_are_consistent(tiles):
    for s in tiles:
        ids = np.unique(s.inst)
        n = s.num_nuclei
        assert n >= 10
        np.testing.assert_array_equal(ids, np.arange(n + 1))  # contiguous 1..N
        np.testing.assert_array_equal(s.cls > 0, s.inst > 0)
        assert set(np.unique(s.cls)) <= {0, 1, 2, 3}
        pairs = np.unique(np.stack([s.inst[s.inst > 0], s.cls[s.inst > 0]]), axis=1)
        assert pairs.shape[1] == n  # one class per instance
        areas = np.bincount(s.inst.ravel())[1:]
        assert areas.min() >= MIN_AREA
        for region in regionprops(s.inst):  # every instance is one connected piece
            assert label(region.image, connectivity=1).max() == 1


def test_nuclei_touch_and_all_classes_appear(tiles):
    touching = 0
    for s in tiles:
        left, right = s.inst[:, :-1], s.inst[:, 1:]
        touching += np.count_nonzero((left > 0) & (right > 0) & (left != right))
    assert touching > 0
    assert set(np.unique(np.concatenate([t.cls.ravel() for t in tiles]))) == {0, 1, 2, 3}


def _features(tiles):
    """Per instance not touching the border: (class, area, aspect, darkness)."""
    rows = []
    for s in tiles:
        gray = s.image.mean(axis=2)
        for r in regionprops(s.inst, intensity_image=gray):
            r0, c0, r1, c1 = r.bbox
            if r0 == 0 or c0 == 0 or r1 == s.inst.shape[0] or c1 == s.inst.shape[1]:
                continue
            cls = int(s.cls[tuple(r.coords[0])])
            aspect = r.axis_major_length / max(r.axis_minor_length, 1e-6)
            rows.append((cls, r.area, aspect, 255 - r.intensity_mean))
    return np.array(rows)


def test_classes_differ_like_real_cell_types(tiles):
    f = _features(tiles)
    med = {c: np.median(f[f[:, 0] == c], axis=0) for c in (1, 2, 3)}
    # lymphocytes: small, round, darkest; epithelial: large, pale; spindle: elongated
    assert med[1][1] < 130 and med[2][1] > 250
    assert med[1][2] < 1.6 and med[2][2] < 1.8 and med[3][2] > 2.5
    assert med[1][3] > med[3][3] > med[2][3]


def test_classes_are_separable_from_simple_features(tiles):
    """A nearest-centroid rule on (log area, aspect, darkness) recovers the class: T2 learnable."""
    f = _features(tiles)
    x = np.column_stack([np.log(f[:, 1]), f[:, 2], f[:, 3] / 50.0])
    y = f[:, 0].astype(int)
    centroids = np.stack([x[y == c].mean(axis=0) for c in (1, 2, 3)])
    pred = 1 + np.argmin(((x[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == y).mean() > 0.9


def test_colours_look_like_h_and_e(tiles):
    for s in tiles:
        bg = s.image[s.inst == 0].astype(float).mean(axis=0)
        nuc = s.image[s.inst > 0].astype(float).mean(axis=0)
        assert bg[0] > bg[1] and bg[2] > bg[1]  # pink eosin: red and blue above green
        assert nuc.sum() < bg.sum() - 60  # nuclei clearly darker
        assert nuc[2] > nuc[0]  # hematoxylin: blue-purple
    means = np.array([s.image[s.inst == 0].mean(axis=0) for s in tiles])
    assert means.std(axis=0).max() > 1.0  # stain colour varies from tile to tile


def test_class_mix_controls_classes():
    only_lymph = make_synthetic_sample(128, seed=2, class_mix=(1, 0, 0))
    assert set(np.unique(only_lymph.cls)) == {0, 1}
    only_spindle = make_synthetic_sample(128, seed=2, class_mix={"spindle": 1})
    assert set(np.unique(only_spindle.cls)) == {0, 3}
    empty = make_synthetic_sample(64, seed=0, density=0)
    assert empty.num_nuclei == 0 and empty.image.shape == (64, 64, 3)
    with pytest.raises(ValueError, match="class_mix"):
        make_synthetic_sample(64, class_mix=(1, 1))
    with pytest.raises(ValueError, match="class_mix"):
        make_synthetic_sample(64, class_mix={"neutrophil": 1})


def test_dataset_is_lazy_seeded_and_named():
    ds = make_synthetic_dataset(5, size=64, seed=3)
    assert isinstance(ds, NucleiDataset) and len(ds) == 5
    assert ds.format == "synthetic" and ds.class_names == CLASS_NAMES
    assert all(callable(item) for item in ds.samples)
    names = [s.name for s in ds]
    assert len(set(names)) == 5 and names[0] == "synthetic_3_0000"
    np.testing.assert_array_equal(ds[2].image, make_synthetic_dataset(5, 64, seed=3)[2].image)
    assert not np.array_equal(ds[0].image, ds[1].image)
    assert not np.array_equal(ds[0].image, make_synthetic_dataset(5, 64, seed=4)[0].image)
    sub = ds[1:3]
    assert len(sub) == 2 and sub[0].name == names[1]


def test_synthetic_tile_has_every_class():
    tile = synthetic_tile(size=320, seed=1)
    assert tile.image.shape == (320, 320, 3) and tile.name == "synthetic_tile"
    assert set(np.unique(tile.cls)) == {0, 1, 2, 3}


def _cpu_seconds(size, repeats=3):
    best = np.inf
    for seed in range(repeats):
        start = time.process_time()
        make_synthetic_sample(size, seed=seed)
        best = min(best, time.process_time() - start)
    return best


def test_generation_is_fast():
    """Budget 50 ms (256 px) and 0.5 s (1024 px); CPU time, with 2x slack for shared runners."""
    make_synthetic_sample(64, seed=0)  # warm imports
    assert _cpu_seconds(256) < 0.1
    assert _cpu_seconds(1024, repeats=2) < 1.0


def test_pigment_debris_is_drawn_off_the_nuclei_and_changes_nothing_else():
    """``debris`` adds dark brown clumps on the background: same nuclei, labels and seed stream
    as without; the mask says where they are; pixels away from them are unchanged."""
    plain = make_synthetic_sample(160, seed=4)
    dirty = make_synthetic_sample(160, seed=4, debris=4.0)
    assert plain.debris is None and dirty.debris.dtype == bool and dirty.debris.shape == (160, 160)
    np.testing.assert_array_equal(plain.inst, dirty.inst)
    np.testing.assert_array_equal(plain.cls, dirty.cls)
    assert dirty.debris.sum() > 200 and not (dirty.debris & (dirty.inst > 0)).any()
    from scipy import ndimage as ndi

    far = ~ndi.binary_dilation(dirty.debris, iterations=4)
    np.testing.assert_array_equal(plain.image[far], dirty.image[far])
    # browner than hematoxylin: relatively more blue absorbed than in the nuclei
    od = -np.log(np.clip(dirty.image.astype(float), 1, 255) / 255.0)
    nuclei = od[dirty.inst > 0]
    pigment = od[dirty.debris]
    assert (pigment[:, 2] / pigment[:, 0]).mean() > (nuclei[:, 2] / nuclei[:, 0]).mean()
    again = make_synthetic_dataset(2, 96, seed=1, debris=4.0)
    np.testing.assert_array_equal(
        again[1].debris, make_synthetic_dataset(2, 96, seed=1, debris=4.0)[1].debris
    )
    with pytest.raises(ValueError, match="debris"):
        make_synthetic_sample(64, debris=-1)
