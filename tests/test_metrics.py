"""Hand-computed checks of the binary and instance metrics (sampo_engine.scoring.metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sampo_engine.errors import DataError
from sampo_engine.scoring.metrics import (
    OverlapCounts,
    PooledOverlap,
    detection_f1,
    dice,
    get_fast_aji,
    get_fast_pq,
    instance_metrics,
    iou,
    pooled_instance_metrics,
    remap_label,
)

# 6×6 toy maps. GT: G1 (4 px), G2 (4 px), G3 (6 px).
TRUE = np.array(
    [
        [1, 1, 0, 0, 2, 2],
        [1, 1, 0, 0, 2, 2],
        [0, 0, 0, 0, 0, 0],
        [3, 3, 3, 0, 0, 0],
        [3, 3, 3, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
    ]
)
# Pred: P1 = G1 (IoU 1); P5 touches G2 by 1 px (IoU 1/4); P7 inside G3 (IoU 4/6); P9 a false
# positive of 2 px.
PRED = np.array(
    [
        [1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 5],
        [0, 0, 0, 0, 0, 0],
        [7, 7, 0, 0, 0, 0],
        [7, 7, 0, 0, 0, 0],
        [0, 0, 0, 0, 9, 9],
    ]
)
EMPTY = np.zeros((6, 6), dtype=np.int32)


# ---------------------------------------------------------------- binary


def test_iou_and_dice_by_hand():
    pred = np.zeros((6, 6), bool)
    target = np.zeros((6, 6), bool)
    pred[0:3] = True  # 18 px
    target[1:4] = True  # 18 px, 12 shared
    assert iou(pred, target) == pytest.approx(12 / 24)
    assert dice(pred, target) == pytest.approx(24 / 36)
    assert iou(pred, pred) == 1.0 and dice(pred, pred) == 1.0


def test_binary_empty_conventions():
    empty = np.zeros((6, 6), np.uint8)
    full = np.ones((6, 6), np.uint8)
    assert iou(empty, empty) == 1.0 and dice(empty, empty) == 1.0
    assert iou(empty, full) == 0.0 and dice(empty, full) == 0.0
    assert iou(full, empty) == 0.0 and dice(full, empty) == 0.0


def test_binary_nonzero_is_foreground_and_shapes_checked():
    assert iou(np.array([0, 2, 3]), np.array([0, 1, 0])) == pytest.approx(1 / 2)
    with pytest.raises(DataError, match="resize"):
        iou(np.zeros((4, 4)), np.zeros((4, 5)))


def test_pooled_sums_counts_not_scores():
    pooled = PooledOverlap()
    assert math.isnan(pooled.iou) and math.isnan(pooled.dice)
    a = np.zeros((6, 6), bool)
    a[:3] = True  # 18 px
    b = np.zeros((6, 6), bool)
    b[:2] = True  # 12 px, all inside a
    counts = pooled.add(a, b)
    assert counts == OverlapCounts(intersection=12, pred_sum=18, target_sum=12)
    # a tiny query with no overlap: 1 px predicted, 1 px target elsewhere
    c = np.zeros((6, 6), bool)
    c[0, 0] = True
    d = np.zeros((6, 6), bool)
    d[5, 5] = True
    pooled.add(c, d)
    assert pooled.n == 2
    assert pooled.iou == pytest.approx(12 / (18 + 2))  # ΣI / ΣU, not the mean of 2/3 and 0
    assert pooled.dice == pytest.approx(24 / (18 + 12 + 2))
    other = PooledOverlap()
    other.add(np.zeros((2, 2)), np.zeros((2, 2)))  # an empty query adds nothing but n
    pooled.merge(other)
    assert pooled.n == 3 and pooled.iou == pytest.approx(12 / 20)
    only_empty = PooledOverlap()
    only_empty.add(np.zeros(3), np.zeros(3))
    assert only_empty.iou == 1.0 and only_empty.as_dict()["union"] == 0


# ---------------------------------------------------------------- instances


def test_pq_by_hand():
    res = get_fast_pq(TRUE, PRED)
    assert (res.tp, res.fp, res.fn) == (2, 2, 1)
    assert res.dq == pytest.approx(2 / 3.5)
    assert res.sq == pytest.approx((1 + 4 / 6) / 2)
    assert res.pq == pytest.approx(2 / 3.5 * 5 / 6)
    assert sorted(zip(res.paired_true, res.paired_pred)) == [(1, 1), (3, 7)]  # original ids
    assert list(res.unpaired_true) == [2]
    assert sorted(res.unpaired_pred) == [5, 9]


def test_aji_by_hand():
    # G1↔P1: 4/4, G2↔P5: 1/4, G3↔P7: 4/6; P9 used by no GT adds its 2 px to the union.
    assert get_fast_aji(TRUE, PRED) == pytest.approx(9 / 16)


def test_detection_f1_by_hand_equals_dq():
    det = detection_f1(TRUE, PRED)
    assert (det.tp, det.fp, det.fn) == (2, 2, 1)
    assert det.precision == pytest.approx(2 / 4)
    assert det.recall == pytest.approx(2 / 3)
    assert det.f1 == pytest.approx(4 / 7)
    assert det.f1 == pytest.approx(get_fast_pq(TRUE, PRED).dq)


def test_iou_exactly_half_is_not_a_match_and_aji_reuses_predictions():
    true = np.zeros((6, 6), int)
    true[0:2, 0:2] = 1
    true[0:2, 2:4] = 2
    pred = np.zeros((6, 6), int)
    pred[0:2, 0:4] = 4  # covers both: IoU 4/8 = 0.5 with each
    res = get_fast_pq(true, pred)
    assert (res.tp, res.fp, res.fn) == (0, 1, 2)
    assert res.dq == 0.0 and res.sq == 0.0 and res.pq == 0.0
    # both GT pair with the same prediction: (4 + 4) / (8 + 8)
    assert get_fast_aji(true, pred) == pytest.approx(0.5)


def test_lower_match_threshold_uses_a_unique_assignment():
    true = np.zeros((6, 6), int)
    true[0:2, 0:2] = 1
    true[0:2, 2:4] = 2
    pred = np.zeros((6, 6), int)
    pred[0:2, 0:4] = 4
    res = get_fast_pq(true, pred, match_iou=0.3)
    assert (res.tp, res.fp, res.fn) == (1, 0, 1)  # the prediction is matched once only
    assert res.sq == pytest.approx(0.5)


def test_instance_empty_conventions():
    both = instance_metrics(EMPTY, EMPTY)
    for key in ("dq", "sq", "pq", "aji", "precision", "recall", "f1"):
        assert math.isnan(both[key]), key
    assert (both["tp"], both["fp"], both["fn"]) == (0, 0, 0)

    no_pred = instance_metrics(TRUE, EMPTY)
    assert (no_pred["tp"], no_pred["fp"], no_pred["fn"]) == (0, 0, 3)
    for key in ("dq", "sq", "pq", "aji", "precision", "recall", "f1"):
        assert no_pred[key] == 0.0, key

    no_true = instance_metrics(EMPTY, PRED)
    assert (no_true["tp"], no_true["fp"], no_true["fn"]) == (0, 4, 0)
    for key in ("dq", "sq", "pq", "aji", "precision", "recall", "f1"):
        assert no_true[key] == 0.0, key


def test_instance_metrics_ignore_id_values():
    shuffled = np.where(PRED > 0, PRED * 1000 + 17, 0)
    assert instance_metrics(TRUE, PRED) == pytest.approx(
        {**instance_metrics(TRUE, shuffled)}, nan_ok=True
    )
    full = instance_metrics(TRUE, PRED)
    assert full["aji"] == pytest.approx(9 / 16) and full["pq"] == pytest.approx(10 / 21)
    assert full["n_true"] == 3 and full["n_pred"] == 4


def _reference_pq_aji(true, pred):
    """Per-instance loops written straight from the definitions (slow, for cross-checking)."""
    t_ids = [i for i in np.unique(true) if i]
    p_ids = [j for j in np.unique(pred) if j]
    inter = np.zeros((len(t_ids), len(p_ids)))
    union = np.zeros_like(inter)
    for a, i in enumerate(t_ids):
        for b, j in enumerate(p_ids):
            ti, pj = true == i, pred == j
            inter[a, b] = (ti & pj).sum()
            union[a, b] = (ti | pj).sum()
    ious = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    matched = ious > 0.5
    tp = int(matched.sum())
    fp, fn = len(p_ids) - tp, len(t_ids) - tp
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = ious[matched].sum() / tp if tp else 0.0
    best = ious.argmax(axis=1)
    has = ious.max(axis=1) > 0
    rows = np.nonzero(has)[0]
    i_sum = inter[rows, best[rows]].sum()
    u_sum = union[rows, best[rows]].sum()
    u_sum += sum((true == t_ids[a]).sum() for a in range(len(t_ids)) if not has[a])
    used = set(best[rows])
    u_sum += sum((pred == p_ids[b]).sum() for b in range(len(p_ids)) if b not in used)
    return dq, sq, dq * sq, i_sum / u_sum


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_per_instance_reference_on_random_maps(seed):
    from skimage.measure import label

    rng = np.random.default_rng(seed)
    true = label(rng.random((40, 40)) > 0.55)
    # a perturbed copy: shift by one pixel and drop some pixels
    pred = np.roll(true, 1, axis=1) * (rng.random((40, 40)) > 0.1)
    dq, sq, pq, aji = _reference_pq_aji(true, pred)
    res = instance_metrics(true, pred)
    assert res["dq"] == pytest.approx(dq)
    assert res["sq"] == pytest.approx(sq)
    assert res["pq"] == pytest.approx(pq)
    assert res["aji"] == pytest.approx(aji)


def test_pooled_instance_metrics_sum_counts():
    a = instance_metrics(TRUE, PRED)
    b = instance_metrics(TRUE, TRUE)  # 3 perfect matches
    pooled = pooled_instance_metrics([a, b])
    assert (pooled["tp"], pooled["fp"], pooled["fn"]) == (5, 2, 1)
    assert pooled["dq"] == pytest.approx(5 / 6.5)
    assert pooled["sq"] == pytest.approx((1 + 4 / 6 + 3) / 5)


def test_remap_label():
    labels = np.array([[0, 5, 5], [9, 0, 3]])
    np.testing.assert_array_equal(remap_label(labels), [[0, 2, 2], [3, 0, 1]])
    np.testing.assert_array_equal(remap_label(labels, by_size=True), [[0, 1, 1], [3, 0, 2]])
    assert remap_label(labels).dtype == np.int32
    np.testing.assert_array_equal(remap_label(EMPTY), EMPTY)


def test_instance_inputs_are_checked():
    with pytest.raises(DataError, match="integer labels"):
        get_fast_pq(TRUE.astype(float), PRED)
    with pytest.raises(DataError, match="negative"):
        get_fast_aji(-TRUE, PRED)
    with pytest.raises(DataError, match="label resolution"):
        instance_metrics(TRUE, PRED[:5])
