"""Prompt mining and the evaluation sampler on a hand-built label map."""

import numpy as np
import pytest
from skimage.draw import disk

from sampo_engine.prompts import (
    MAX_NEGATIVE,
    MAX_POSITIVE,
    Intent,
    MiningConfig,
    available_intents,
    eval_seed,
    mine_prompt_sets,
    pack,
    sample_eval_prompts,
    target_mask,
)


@pytest.fixture()
def labels():
    inst = np.zeros((96, 96), np.int32)
    cls = np.zeros((96, 96), np.uint8)
    centres = [(15, 15), (15, 50), (50, 20), (50, 60), (80, 80), (80, 30)]
    for i, (r, c) in enumerate(centres, start=1):
        rr, cc = disk((r, c), 6, shape=inst.shape)
        inst[rr, cc] = i
        cls[rr, cc] = 1 if i <= 3 else 2
    return inst, cls


def _at(points, inst):
    xy = np.round(points).astype(int)
    return inst[xy[:, 1], xy[:, 0]]  # points are (x, y): index [row=y, col=x]


def test_intents_and_targets(labels):
    inst, cls = labels
    assert available_intents(inst, cls, "both") == [Intent("t1"), Intent("t2", 1), Intent("t2", 2)]
    assert available_intents(inst, None, "both") == [Intent("t1")]
    t2 = target_mask(inst, cls, Intent("t2", 2))
    assert t2.sum() == (inst > 3).sum()


def test_mined_sets_respect_limits_and_vary(labels):
    inst, cls = labels
    rng = np.random.default_rng(0)
    sets = mine_prompt_sets(inst, cls, Intent("t2", 1), rng, MiningConfig(num_sets=8))
    assert len(sets) == 8
    for s in sets:
        assert 1 <= s.num_positive <= MAX_POSITIVE and s.num_negative <= MAX_NEGATIVE
        assert ((s.points >= 0) & (s.points < 96)).all()
    assert len({(s.num_positive, s.num_negative) for s in sets}) > 2
    # some sets are deliberately degraded: a positive off the target or a negative on it
    off_target = [
        (_at(s.points[s.labels == 1], cls) != 1).any()
        or (_at(s.points[s.labels == 0], cls) == 1).any()
        for s in sets
    ]
    assert any(off_target) and not all(off_target)


def test_eval_prompts_are_centred_and_informative(labels):
    inst, cls = labels
    rng = np.random.default_rng(eval_seed(0, "img", Intent("t2", 1)))
    ps = sample_eval_prompts(inst, cls, Intent("t2", 1), rng)
    assert ps.num_positive == 3 and ps.num_negative == 3
    assert (_at(ps.points[ps.labels == 1], cls) == 1).all()
    assert (_at(ps.points[ps.labels == 0], cls) == 2).all()  # T2 negatives on the other class
    t1 = sample_eval_prompts(inst, cls, Intent("t1"), np.random.default_rng(1))
    assert (_at(t1.points[t1.labels == 0], inst) == 0).all()


def test_eval_prompts_are_identical_for_the_same_seed(labels):
    inst, cls = labels
    a = sample_eval_prompts(
        inst, cls, Intent("t1"), np.random.default_rng(eval_seed(3, "x", Intent("t1")))
    )
    b = sample_eval_prompts(
        inst, cls, Intent("t1"), np.random.default_rng(eval_seed(3, "x", Intent("t1")))
    )
    assert np.array_equal(a.points, b.points) and np.array_equal(a.labels, b.labels)


def test_pack_pads_with_minus_one(labels):
    inst, cls = labels
    sets = mine_prompt_sets(inst, cls, Intent("t1"), np.random.default_rng(0))
    points, lab = pack(sets)
    assert points.shape == (4, 6, 2) and lab.shape == (4, 6)
    for s, row in zip(sets, lab):
        assert (row[: len(s.labels)] >= 0).all() and (row[len(s.labels) :] == -1).all()
