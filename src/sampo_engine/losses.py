"""The SAMPO objective: DPO preference terms (inter- and intra-prompt) plus pixel supervision.

Shapes: B images, K prompt sets, 3 multimask slots, masks H × W at label resolution.

Likelihood of a mask M under logits Z (ours: per-pixel mean, so β does not depend on size)::

    ℓ(M | Z) = mean_pixels [ M·log σ(Z) + (1−M)·log σ(−Z) ]

A pair (winner M_w, loser M_l, context c) has reward margin::

    Δ = β·[(ℓ_θ(M_w|c) − ℓ_ref(M_w|c)) − (ℓ_θ(M_l|c) − ℓ_ref(M_l|c))],   loss = −log σ(Δ)

Both masks are scored under ONE context (docs/method.md): inter pairs take the loser's prompt set
and slot; intra pairs the slot the IoU head selects. ``literal_scoring`` scores each mask under
its own logits instead (the paper read literally; an ablation — it only rewards confidence).

L_sup = BCE + Dice on the best slot (by true IoU) of every prompt set + MSE of the IoU head on
every slot. L = L_sup + α·(L_inter + λ·L_intra).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossConfig:
    alpha: float = 1.0  # weight of L_pref
    beta: float = 2.0  # DPO temperature (per-pixel-mean likelihoods)
    lam: float = 1.0  # weight of L_intra inside L_pref
    tie_margin: float = 0.02  # pairs whose IoU gap is below this are ties and skipped
    use_inter: bool = True
    use_intra: bool = True
    use_sup: bool = True
    literal_scoring: bool = False
    iou_head_weight: float = 1.0

    @property
    def uses_preference(self) -> bool:
        return self.alpha > 0 and (self.use_inter or self.use_intra)


def mask_loglik(
    logits: torch.Tensor, masks: torch.Tensor, region: torch.Tensor | None = None
) -> torch.Tensor:
    """ℓ(M | Z): (..., H, W) logits and {0,1} masks -> (...) per-pixel-mean log-likelihood.

    ``region``: optional (..., H, W) bool; the mean is then taken over its pixels only (an empty
    region gives 0) — the corrections' pairs score only the region the user reviewed.
    """
    masks = masks.to(logits.dtype)
    ll = masks * F.logsigmoid(logits) + (1 - masks) * F.logsigmoid(-logits)
    if region is None:
        return ll.flatten(-2).mean(-1)
    weight = region.to(logits.dtype).flatten(-2)
    return (ll.flatten(-2) * weight).sum(-1) / weight.sum(-1).clamp(min=1)


def mask_iou(masks: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of (..., H, W) bool masks with a broadcastable bool target; both empty -> 1."""
    inter = (masks & target).flatten(-2).sum(-1).float()
    union = (masks | target).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def dpo_loss(
    policy_w: torch.Tensor,
    ref_w: torch.Tensor,
    policy_l: torch.Tensor,
    ref_l: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair DPO loss −log σ(Δ) and margin Δ from the four (N,) log-likelihoods."""
    margin = beta * ((policy_w - ref_w) - (policy_l - ref_l))
    return -F.logsigmoid(margin), margin


def _take(x: torch.Tensor, b: torch.Tensor, k: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    return x[b, k, j]


@dataclass
class PairSet:
    """Index tensors (N,) of a set of preference pairs into (B, K, 3) outputs."""

    b: torch.Tensor
    k_ctx: torch.Tensor
    j_ctx: torch.Tensor
    k_w: torch.Tensor
    j_w: torch.Tensor
    k_l: torch.Tensor
    j_l: torch.Tensor
    total: int  # candidate pairs before tie skipping


def inter_pairs(ious: torch.Tensor, tie_margin: float) -> PairSet:
    """Per (image, slot): best vs worst prompt set by IoU; context = the loser's set and slot."""
    bsz, k, s = ious.shape
    best = ious.argmax(1)  # (B, 3)
    worst = ious.argmin(1)
    gap = ious.max(1).values - ious.min(1).values
    b, j = torch.nonzero(gap > tie_margin, as_tuple=True)
    k_w, k_l = best[b, j], worst[b, j]
    return PairSet(b, k_l, j, k_w, j, k_l, j, total=bsz * s)


def intra_pairs(ious: torch.Tensor, iou_pred: torch.Tensor, tie_margin: float) -> PairSet:
    """Per (image, prompt set): best vs worst slot; context = the slot the IoU head selects."""
    bsz, k, s = ious.shape
    best = ious.argmax(2)
    worst = ious.argmin(2)
    selected = iou_pred.detach().argmax(2)
    gap = ious.max(2).values - ious.min(2).values
    b, kk = torch.nonzero(gap > tie_margin, as_tuple=True)
    return PairSet(b, kk, selected[b, kk], kk, best[b, kk], kk, worst[b, kk], total=bsz * k)


def preference_term(
    pairs: PairSet,
    logits: torch.Tensor,
    ref_logits: torch.Tensor,
    masks: torch.Tensor,
    config: LossConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean DPO loss over the pairs and their margins (N,). Zero (graph kept) without pairs."""
    if pairs.b.numel() == 0:
        return logits.sum() * 0.0, logits.new_zeros(0)
    m_w = masks[pairs.b, pairs.k_w, pairs.j_w]
    m_l = masks[pairs.b, pairs.k_l, pairs.j_l]
    if config.literal_scoring:
        ctx_w = (pairs.b, pairs.k_w, pairs.j_w)
        ctx_l = (pairs.b, pairs.k_l, pairs.j_l)
    else:
        ctx_w = ctx_l = (pairs.b, pairs.k_ctx, pairs.j_ctx)
    policy_w = mask_loglik(_take(logits, *ctx_w), m_w)
    policy_l = mask_loglik(_take(logits, *ctx_l), m_l)
    with torch.no_grad():
        ref_w = mask_loglik(_take(ref_logits, *ctx_w), m_w)
        ref_l = mask_loglik(_take(ref_logits, *ctx_l), m_l)
    loss, margin = dpo_loss(policy_w, ref_w, policy_l, ref_l, config.beta)
    return loss.mean(), margin.detach()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss of (N, H, W) logits against {0,1} targets, per row (N,)."""
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1).to(prob.dtype)
    inter = (prob * target).sum(1)
    return 1 - (2 * inter + eps) / (prob.sum(1) + target.sum(1) + eps)


def pixel_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows of per-pixel-mean BCE + soft Dice: (N, H, W) logits, {0,1} targets."""
    target = target.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1)
    return (bce.mean(1) + dice_loss(logits, target)).mean()


def supervised_term(
    logits: torch.Tensor,
    iou_pred: torch.Tensor,
    target: torch.Tensor,
    ious: torch.Tensor,
    config: LossConfig,
) -> torch.Tensor:
    """BCE + Dice on each prompt set's best slot, plus IoU-head MSE on every slot."""
    bsz, k = ious.shape[:2]
    best = ious.argmax(2)  # (B, K)
    chosen = logits.gather(2, best[..., None, None, None].expand(-1, -1, 1, *logits.shape[-2:]))
    chosen = chosen.squeeze(2).flatten(0, 1)  # (B·K, H, W)
    tgt = target[:, None].expand(-1, k, -1, -1).flatten(0, 1)
    pixel = pixel_loss(chosen, tgt)
    iou_mse = F.mse_loss(iou_pred.float(), ious)
    return pixel + config.iou_head_weight * iou_mse


def total_loss(
    sup: torch.Tensor, inter: torch.Tensor, intra: torch.Tensor, config: LossConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """The one place the terms are put together: L_pref = L_inter + λ·L_intra and
    L = L_sup + α·L_pref. Returns ``(loss, pref)``."""
    pref = inter + config.lam * intra
    return sup + config.alpha * pref, pref


@dataclass
class LossOutput:
    loss: torch.Tensor
    sup: torch.Tensor
    inter: torch.Tensor
    intra: torch.Tensor
    pref: torch.Tensor
    margins: torch.Tensor  # (N,) margins of all usable pairs
    pairs_usable: int
    pairs_total: int
    ious: torch.Tensor  # (B, K, 3) true IoU of each candidate mask
    inter_usable: int = 0  # of ``pairs_usable``, the inter-prompt ones (the rest are intra)

    def with_terms(self, inter: torch.Tensor, intra: torch.Tensor, config: LossConfig):
        """This output with new L_inter and L_intra (e.g. weighed across DDP ranks), L_pref and
        L recomputed by :func:`total_loss`."""
        loss, pref = total_loss(self.sup, inter, intra, config)
        return replace(self, loss=loss, pref=pref, inter=inter, intra=intra)


def sampo_loss(
    logits: torch.Tensor,
    iou_pred: torch.Tensor,
    ref_logits: torch.Tensor | None,
    target: torch.Tensor,
    config: LossConfig,
) -> LossOutput:
    """The SAMPO objective for one batch.

    Args:
        logits: (B, K, 3, H, W) policy mask logits at label resolution.
        iou_pred: (B, K, 3) policy IoU-head predictions.
        ref_logits: (B, K, 3, H, W) reference logits (no grad), or None when no preference term.
        target: (B, H, W) bool target masks Y_t.
    """
    masks = logits.detach() > 0  # candidate masks M, detached
    ious = mask_iou(masks, target[:, None, None])
    zero = logits.sum() * 0.0
    inter = intra = zero
    margins = [logits.new_zeros(0)]
    usable = total = inter_usable = 0
    if config.uses_preference:
        if ref_logits is None:
            raise ValueError("the preference terms need reference logits")
        if config.use_inter:
            pairs = inter_pairs(ious, config.tie_margin)
            inter, m = preference_term(pairs, logits, ref_logits, masks, config)
            margins.append(m)
            usable += pairs.b.numel()
            total += pairs.total
            inter_usable = int(pairs.b.numel())
        if config.use_intra:
            pairs = intra_pairs(ious, iou_pred, config.tie_margin)
            intra, m = preference_term(pairs, logits, ref_logits, masks, config)
            margins.append(m)
            usable += pairs.b.numel()
            total += pairs.total
    sup = supervised_term(logits, iou_pred, target, ious, config) if config.use_sup else zero
    loss, pref = total_loss(sup, inter, intra, config)
    return LossOutput(
        loss, sup, inter, intra, pref, torch.cat(margins), usable, total, ious, inter_usable
    )
