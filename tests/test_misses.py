"""Why true nuclei go unmatched (``sampo_engine.scoring.misses``): one cause per missed nucleus,
one kind per unmatched prediction, on a hand-drawn scene with one of each."""

import numpy as np

from sampo_engine.scoring.metrics import get_fast_pq
from sampo_engine.scoring.misses import MissCauses, miss_causes


def _scene():
    true = np.zeros((60, 100), np.int32)
    true[5:15, 5:15] = 1
    true[5:15, 15:25] = 2  # touching nucleus 1: the prediction merges them
    true[30:40, 5:15] = 3  # found as it is
    true[30:40, 40:50] = 4  # not found at all
    true[45:55, 60:80] = 5  # cut in two halves (IoU 0.5 each: not a match)
    pred = np.zeros_like(true)
    pred[5:15, 5:25] = 11
    pred[30:40, 5:15] = 12
    pred[45:55, 60:70] = 13
    pred[45:55, 70:80] = 14
    pred[50:58, 85:95] = 15  # on background
    return true, pred


def test_each_miss_is_put_down_to_its_cause():
    true, pred = _scene()
    causes = miss_causes(true, pred)
    assert causes == MissCauses(
        true=5, matched=1, merged=2, misshapen=1, not_found=1, spurious=1, pieces=3
    )
    # the counts are PQ's: matched = TP, missed = FN, unmatched predictions = FP
    pq = get_fast_pq(true, pred)
    assert causes.matched == pq.tp
    assert causes.merged + causes.misshapen + causes.not_found == pq.fn
    assert causes.spurious + causes.pieces == pq.fp


def test_counts_add_up_over_images_and_empty_predictions_miss_everything():
    true, pred = _scene()
    twice = miss_causes(true, pred) + miss_causes(true, pred)
    assert twice.true == 10 and twice.merged == 4
    none = miss_causes(true, np.zeros_like(pred))
    assert none.not_found == 5 and none.matched == 0 and none.pieces == 0
