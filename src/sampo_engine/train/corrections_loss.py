"""Offline preference pairs from the pathologist's corrections (docs/corrections.md).

Each :class:`~sampo_engine.corrections.store.CorrectionRecord` gives one pair under ONE context
c = (image region, the user's prompts, task): preferred M_c = the corrected mask, dispreferred
M_o = the model's original output. The context's logits are the policy's for those prompts, in
the slot the IoU head selects (what the user saw — an intra-style pair); the reference is the same
π_ref (adapter disabled / frozen copy) and β as for the online pairs::

    L_corr = w · [ mean −log σ(β[(ℓθ(M_c|c) − ℓref(M_c|c)) − (ℓθ(M_o|c) − ℓref(M_o|c))])
                   + balanced BCE(best slot by IoU with M_c, M_c) over R = M_o ∪ M_c ]

ℓ here is the mean log-likelihood over the reviewed region R (``mask_loglik(..., region=R)``), not
over the whole crop: the two masks differ only inside R, and a crop-wide mean shrinks the margin
by |R| / S² (1 % for one deleted nucleus in a 112 px crop), so the pair never saturates and keeps pushing the erased pixels' logits down (the model
then learns to predict less everywhere; docs/corrections.md has the numbers).

The supervision speaks only for the reviewed region R: what the model showed (kept or erased by
the user) and what the user painted. Nuclei the model missed and the user did not paint are not
statements that they are background; supervising them as background teaches the model to miss
them (measured in docs/corrections.md: held-out T2 Dice fell when the whole tile was the target).

``w`` = ``TrainConfig.corrections_weight``. The batches come from
:class:`~sampo_engine.corrections.pairs.CorrectionsDataset` (records cut to the model input size).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sampo_engine.corrections.pairs import CorrectionsDataset
from sampo_engine.corrections.store import CorrectionRecord
from sampo_engine.losses import dpo_loss, mask_iou, mask_loglik
from sampo_engine.models.forward import decode, encode, upsample
from sampo_engine.utils.device import autocast


def reviewed_pixel_loss(
    logits: torch.Tensor, corrected: torch.Tensor, original: torch.Tensor
) -> torch.Tensor:
    """BCE over the reviewed region R = M_o ∪ M_c, kept and removed pixels weighted equally.

    (B, S, S) logits and bool masks. Inside R, the pixels the user kept or painted (M_c) and the
    pixels the user erased (M_o minus M_c) each carry half of a record's weight, so a record that
    erases much and keeps little does not teach "predict less" but "this, not that".
    """
    reviewed = (original | corrected).flatten(1).float()
    target = corrected.flatten(1).float()
    keep, drop = target * reviewed, (1 - target) * reviewed
    weights = 0.5 * keep / keep.sum(1, keepdim=True).clamp(min=1) + 0.5 * drop / drop.sum(
        1, keepdim=True
    ).clamp(min=1)
    bce = F.binary_cross_entropy_with_logits(logits.flatten(1).float(), target, reduction="none")
    return (bce * weights).sum(1).mean()


def corrections_term(
    adapted,
    batch: dict[str, torch.Tensor],
    beta: float,
    device,
    reference_precision: str = "auto",
    use_sup: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """(unweighted L_corr with graph, metrics) for one corrections batch."""
    from sampo_engine.train.step import reference_logits

    device = torch.device(device)
    images = batch["image"].to(device)
    points = batch["points"].to(device)
    labels = batch["labels"].to(device)
    corrected = batch["corrected"].to(device)
    original = batch["original"].to(device)
    size = tuple(corrected.shape[-2:])
    ref = reference_logits(adapted, images, points, labels, size, reference_precision)
    ref = ref.clone()[:, 0]  # (B, 3, S, S)
    with autocast(device):
        out = decode(adapted.sam, encode(adapted.sam, images), points, labels)
    logits = upsample(out.logits, size)[:, 0]  # (B, 3, S, S): one prompt set per record
    iou_pred = out.iou_pred.float()[:, 0]  # (B, 3)
    b = torch.arange(logits.shape[0], device=logits.device)
    ctx = iou_pred.detach().argmax(1)  # the slot the user saw
    reviewed = original | corrected
    policy_w = mask_loglik(logits[b, ctx], corrected, reviewed)
    policy_l = mask_loglik(logits[b, ctx], original, reviewed)
    ref_w = mask_loglik(ref[b, ctx], corrected, reviewed)
    ref_l = mask_loglik(ref[b, ctx], original, reviewed)
    pair_loss, margin = dpo_loss(policy_w, ref_w, policy_l, ref_l, beta)
    loss = pair_loss.mean()
    ious = mask_iou(logits.detach() > 0, corrected[:, None])  # (B, 3)
    if use_sup:  # only where the user looked: what the model showed and what the user painted
        loss = loss + reviewed_pixel_loss(logits[b, ious.argmax(1)], corrected, original)
    margin = margin.detach()
    metrics = {
        "corr_loss": float(loss.detach()),
        "corr_pref_acc": float((margin > 0).float().mean()),
        "corr_margin": float(margin.mean()),
        "corr_iou": float(ious[b, ctx].mean()),
    }
    return loss, metrics


@torch.no_grad()
def record_logliks(
    adapted, records: list[CorrectionRecord], size: int, device, batch_size: int = 8
) -> dict[str, np.ndarray]:
    """Per record, under the IoU-head-selected slot of the current policy: ℓ(M_c|c), ℓ(M_o|c)
    (means over the reviewed region, as in the loss) and the IoU of the shown mask with M_c
    (for studies and tests; whole records cut to S)."""
    device = torch.device(device)
    data = CorrectionsDataset(records, size)
    rng = np.random.default_rng(0)
    out = {"corrected": [], "original": [], "iou": []}
    adapted.eval()
    for start in range(0, len(records), batch_size):
        items = [data.item(i, rng) for i in range(start, min(len(records), start + batch_size))]
        batch = {k: torch.stack([it[k] for it in items]).to(device) for k in items[0]}
        dec = decode(
            adapted.sam, encode(adapted.sam, batch["image"]), batch["points"], batch["labels"]
        )
        logits = upsample(dec.logits, (size, size))[:, 0]
        b = torch.arange(logits.shape[0], device=logits.device)
        shown = logits[b, dec.iou_pred[:, 0].argmax(1)]
        reviewed = batch["corrected"] | batch["original"]
        out["corrected"].append(mask_loglik(shown, batch["corrected"], reviewed).cpu().numpy())
        out["original"].append(mask_loglik(shown, batch["original"], reviewed).cpu().numpy())
        out["iou"].append(mask_iou(shown > 0, batch["corrected"]).cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}
