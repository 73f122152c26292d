"""The SAMPO objective's math, pinned against hand computations on small tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from sampo_engine.losses import (
    LossConfig,
    dpo_loss,
    inter_pairs,
    intra_pairs,
    mask_iou,
    mask_loglik,
    sampo_loss,
)


def test_mask_loglik_is_per_pixel_mean_bernoulli_loglik():
    z = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
    m = torch.tensor([[1, 0], [1, 0]])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = (
        math.log(sig(2)) + math.log(1 - sig(-1)) + math.log(sig(0)) + math.log(1 - sig(3))
    ) / 4
    assert mask_loglik(z, m).item() == pytest.approx(expected, rel=1e-6)


def test_dpo_loss_matches_hand_computation():
    pw, rw, pl, rl = (torch.tensor([v]) for v in (-0.2, -0.5, -0.9, -0.6))
    loss, margin = dpo_loss(pw, rw, pl, rl, beta=2.0)
    expected_margin = 2.0 * ((-0.2 + 0.5) - (-0.9 + 0.6))  # 1.2
    assert margin.item() == pytest.approx(expected_margin)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-expected_margin))))


def test_mask_iou_conventions():
    a = torch.zeros(2, 4, 4, dtype=torch.bool)
    b = torch.zeros(2, 4, 4, dtype=torch.bool)
    a[1, :2] = True
    b[1, :1] = True
    iou = mask_iou(a, b)
    assert iou[0].item() == 1.0  # both empty: perfect
    assert iou[1].item() == pytest.approx(0.5)


def test_inter_pairs_pick_best_and_worst_set_and_skip_ties():
    ious = torch.tensor([[[0.9, 0.5, 0.5], [0.1, 0.5, 0.2], [0.4, 0.51, 0.6]]])  # (B=1, K=3, 3)
    pairs = inter_pairs(ious, tie_margin=0.02)
    # slot 1 is a tie (0.5, 0.5, 0.51) and is skipped
    assert pairs.j_w.tolist() == [0, 2]
    assert pairs.k_w.tolist() == [0, 2] and pairs.k_l.tolist() == [1, 1]
    # the context is the loser's prompt set and slot
    assert pairs.k_ctx.tolist() == pairs.k_l.tolist() and pairs.j_ctx.tolist() == pairs.j_l.tolist()
    assert pairs.total == 3


def test_intra_pairs_use_the_iou_head_selected_slot_as_context():
    ious = torch.tensor([[[0.9, 0.2, 0.5], [0.3, 0.3, 0.3]]])
    iou_pred = torch.tensor([[[0.1, 0.8, 0.2], [0.5, 0.1, 0.0]]])
    pairs = intra_pairs(ious, iou_pred, tie_margin=0.02)
    assert pairs.b.tolist() == [0] and pairs.k_w.tolist() == [0]  # set 1 is all ties
    assert pairs.j_w.tolist() == [0] and pairs.j_l.tolist() == [1]
    assert pairs.j_ctx.tolist() == [1]  # what the IoU head picks


def _toy(seed=0, b=2, k=4, size=16):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, k, 3, size, size, generator=g) * 2
    target = torch.zeros(b, size, size, dtype=torch.bool)
    target[:, 4:12, 4:12] = True
    iou_pred = torch.rand(b, k, 3, generator=g)
    return logits, iou_pred, target


def test_reward_is_zero_when_policy_equals_reference():
    logits, iou_pred, target = _toy()
    out = sampo_loss(
        logits.clone().requires_grad_(), iou_pred, logits.clone(), target, LossConfig()
    )
    assert out.pairs_usable > 0
    assert torch.allclose(out.margins, torch.zeros_like(out.margins))
    assert out.inter.item() == pytest.approx(math.log(2), rel=1e-5)


def test_sampo_loss_hand_computed_on_one_pair():
    # one image, two prompt sets, all three slots of a set identical: one inter pair per slot
    size = 4
    target = torch.zeros(1, size, size, dtype=torch.bool)
    target[0, :2] = True
    good = torch.where(target[0], 3.0, -3.0)
    bad = torch.full((size, size), -1.0)
    bad[0, 0] = 1.0
    logits = torch.stack([good.expand(3, -1, -1), bad.expand(3, -1, -1)])[None].clone()
    ref = logits.clone() * 0.5
    cfg = LossConfig(use_intra=False, use_sup=False, beta=1.5)
    out = sampo_loss(logits.clone().requires_grad_(), torch.zeros(1, 2, 3), ref, target, cfg)
    m_w, m_l = good > 0, bad > 0
    ctx, ctx_ref = bad, bad * 0.5  # the loser's context
    margin = 1.5 * (
        (mask_loglik(ctx, m_w) - mask_loglik(ctx_ref, m_w))
        - (mask_loglik(ctx, m_l) - mask_loglik(ctx_ref, m_l))
    )
    assert out.pairs_usable == 3
    assert out.inter.item() == pytest.approx(-F.logsigmoid(margin).item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(out.inter.item(), rel=1e-6)


def test_one_gradient_step_raises_chosen_and_lowers_rejected_reward():
    logits, iou_pred, target = _toy(seed=1)
    ref = logits.clone()
    cfg = LossConfig(use_sup=False, use_intra=False, beta=2.0)
    params = logits.clone().requires_grad_()
    out = sampo_loss(params, iou_pred, ref, target, cfg)
    out.loss.backward()
    with torch.no_grad():
        stepped = params - 5.0 * params.grad
    # re-score the same pairs after the step
    masks = logits > 0
    ious = mask_iou(masks, target[:, None, None])
    pairs = inter_pairs(ious, cfg.tie_margin)
    ctx = (pairs.b, pairs.k_ctx, pairs.j_ctx)
    m_w = masks[pairs.b, pairs.k_w, pairs.j_w]
    m_l = masks[pairs.b, pairs.k_l, pairs.j_l]
    chosen_before = mask_loglik(params[ctx], m_w) - mask_loglik(ref[ctx], m_w)
    chosen_after = mask_loglik(stepped[ctx], m_w) - mask_loglik(ref[ctx], m_w)
    rejected_after = mask_loglik(stepped[ctx], m_l) - mask_loglik(ref[ctx], m_l)
    assert (chosen_after > chosen_before.detach()).all()
    assert (rejected_after < 0).all()


def test_literal_scoring_differs_from_single_context():
    logits, iou_pred, target = _toy(seed=2)
    ref = logits.clone() * 0.9
    a = sampo_loss(logits, iou_pred, ref, target, LossConfig(use_sup=False))
    b = sampo_loss(logits, iou_pred, ref, target, LossConfig(use_sup=False, literal_scoring=True))
    assert a.pairs_usable == b.pairs_usable > 0
    assert not torch.allclose(a.margins, b.margins)


def test_ablation_flags_switch_terms_off():
    logits, iou_pred, target = _toy(seed=3)
    ref = logits.clone() * 0.8
    full = sampo_loss(logits, iou_pred, ref, target, LossConfig())
    no_inter = sampo_loss(logits, iou_pred, ref, target, LossConfig(use_inter=False))
    no_intra = sampo_loss(logits, iou_pred, ref, target, LossConfig(use_intra=False))
    no_sup = sampo_loss(logits, iou_pred, ref, target, LossConfig(use_sup=False))
    assert no_inter.inter.item() == 0 and no_inter.intra.item() == pytest.approx(full.intra.item())
    assert no_intra.intra.item() == 0 and no_intra.inter.item() == pytest.approx(full.inter.item())
    assert no_sup.sup.item() == 0 and no_sup.loss.item() == pytest.approx(full.pref.item())
    sup_only = sampo_loss(logits, iou_pred, None, target, LossConfig(alpha=0.0))
    assert sup_only.loss.item() == pytest.approx(full.sup.item())


def test_supervision_uses_best_slot_of_every_prompt_set_not_all_slots():
    logits, iou_pred, target = _toy(seed=4)
    params = logits.clone().requires_grad_()
    out = sampo_loss(params, iou_pred, None, target, LossConfig(alpha=0.0, iou_head_weight=0.0))
    out.loss.backward()
    touched = params.grad.flatten(3).abs().sum(-1) > 0  # (B, K, 3)
    assert touched.sum(-1).eq(1).all()  # exactly one slot per prompt set gets pixel gradient


def test_preference_accuracy_rises_above_chance_on_a_toy_problem():
    """Free logits trained by L_pref alone: pairs whose winner is the truth become preferred."""
    torch.manual_seed(0)
    b, k, size = 4, 4, 12
    target = torch.zeros(b, size, size, dtype=torch.bool)
    target[:, 3:9, 3:9] = True
    base = torch.randn(b, k, 3, size, size) + torch.where(target[:, None, None], 0.3, -0.3)
    ref = base.clone()
    params = base.clone().requires_grad_()
    opt = torch.optim.SGD([params], lr=2.0)
    cfg = LossConfig(use_sup=False, beta=2.0)
    accs = []
    for _ in range(60):
        out = sampo_loss(params, torch.zeros(b, k, 3), ref, target, cfg)
        accs.append((out.margins > 0).float().mean().item())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert accs[0] < 0.6  # at the start policy == reference: no pair is preferred yet
    assert sum(accs[-10:]) / 10 > 0.8
