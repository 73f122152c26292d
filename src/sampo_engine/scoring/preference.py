"""Is the preference term learning? Held-out preference accuracy, reward margin, usable pairs.

On held-out images, crops with K mined prompt sets are drawn exactly as in training
(:class:`~sampo_engine.data.crops.CropDataset`, seeded, no augmentation) and the model answers
every set with SAM's three slots. The pairs are the training pairs (docs/method.md): inter-prompt
(per slot, best vs worst prompt set by IoU with the target; context = the loser's set) and
intra-prompt (per set, best vs worst slot; context = the IoU head's pick), ties under
``tie_margin`` skipped. Per task and pair kind it reports:

- ``usable``: the share of candidate pairs that are not ties. A model whose answer does not
  depend on the clicks gives every prompt set the same masks: no usable inter pairs, nothing for
  L_inter to rank.
- ``rank_acc``: the share of usable pairs whose winner the model itself finds more likely than
  the loser under the pair's context, ℓθ(M_w|c) > ℓθ(M_l|c) — does it rank the two masks as
  their IoU with the ground truth does? Defined for any model, so it compares a base with its
  adapters ("before" and "after").
- ``reward_acc`` and ``margin``: DPO's own numbers against the reference (the model with its
  adapter disabled): the share of pairs with Δ > 0 and the mean Δ. For a model without an
  adapter the policy is the reference: Δ = 0 and ``reward_acc`` = 0.

All shares are in [0, 1]; NaN where there is no pair.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sampo_engine.data.crops import CropDataset, collate
from sampo_engine.data.sample import NucleiDataset
from sampo_engine.losses import inter_pairs, intra_pairs, mask_iou, mask_loglik
from sampo_engine.models.forward import decode, encode, upsample
from sampo_engine.prompts import MiningConfig
from sampo_engine.tasks import tasks_of

PAIR_KINDS = ("inter", "intra")


@dataclass
class _Tally:
    """Running sums of one (task, pair kind)."""

    candidates: int = 0
    usable: int = 0
    ranked: int = 0
    rewarded: int = 0
    margin_sum: float = 0.0

    def add(self, total: int, rank_ok: torch.Tensor, margin: torch.Tensor) -> None:
        self.candidates += total
        self.usable += int(rank_ok.numel())
        self.ranked += int(rank_ok.sum())
        self.rewarded += int((margin > 0).sum())
        self.margin_sum += float(margin.sum())

    def summary(self) -> dict[str, float]:
        nan = float("nan")
        n = self.usable
        return {
            "pairs": n,
            "usable": n / self.candidates if self.candidates else nan,
            "rank_acc": self.ranked / n if n else nan,
            "reward_acc": self.rewarded / n if n else nan,
            "margin": self.margin_sum / n if n else nan,
        }


def _pair_numbers(pairs, logits, ref_logits, masks, beta: float):
    """(rank_ok (N,) bool, margin (N,)) of one pair set under the shared context."""
    ctx = (pairs.b, pairs.k_ctx, pairs.j_ctx)
    m_w = masks[pairs.b, pairs.k_w, pairs.j_w]
    m_l = masks[pairs.b, pairs.k_l, pairs.j_l]
    policy_w, policy_l = mask_loglik(logits[ctx], m_w), mask_loglik(logits[ctx], m_l)
    ref_w, ref_l = mask_loglik(ref_logits[ctx], m_w), mask_loglik(ref_logits[ctx], m_l)
    margin = beta * ((policy_w - ref_w) - (policy_l - ref_l))
    return policy_w > policy_l, margin


@torch.inference_mode()
def probe_preferences(
    adapted,
    dataset: NucleiDataset,
    indices: Sequence[int],
    task: str = "both",
    image_size: int = 224,
    num_prompt_sets: int = 4,
    tie_margin: float = 0.02,
    beta: float = 2.0,
    crops: int = 64,
    batch_size: int = 4,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Preference numbers of ``adapted`` (an :class:`~sampo_engine.models.lora.AdaptedSam`) on
    the held-out images ``indices`` of ``dataset``: ``{task: {"inter"|"intra": {...}}}`` with
    the keys of the module docstring. ``crops`` crops per task (the same crops and prompt sets
    for every model given the same ``seed``); ``progress(done, total)`` after each batch.
    """
    device = torch.device(device)
    adapted.sam.to(device).eval()
    mining = MiningConfig(num_sets=num_prompt_sets)
    tasks = tasks_of(task)
    result: dict[str, dict[str, dict[str, float]]] = {}
    batches_per_task = -(-crops // batch_size)
    done, total = 0, batches_per_task * len(tasks)
    for name in tasks:
        data = CropDataset(dataset, list(indices), image_size, name, mining, seed, augment=False)
        tallies = {kind: _Tally() for kind in PAIR_KINDS}
        if len(data) == 0:
            result[name] = {kind: tally.summary() for kind, tally in tallies.items()}
            done += batches_per_task
            continue
        order = np.random.default_rng([seed, 31337]).permutation(len(data))
        picks = [int(order[i % len(order)]) for i in range(crops)]
        for start in range(0, crops, batch_size):
            batch = collate([data[i] for i in picks[start : start + batch_size]])
            images = batch["image"].to(device)
            target = batch["target"].to(device)
            points, labels = batch["points"].to(device), batch["labels"].to(device)
            size = tuple(target.shape[-2:])
            out = decode(adapted.sam, encode(adapted.sam, images), points, labels)
            logits = upsample(out.logits.float(), size)
            with adapted.reference() as ref:
                ref_out = decode(ref, encode(ref, images), points, labels)
                ref_logits = upsample(ref_out.logits.float(), size)
            masks = logits > 0
            ious = mask_iou(masks, target[:, None, None])
            kinds = {
                "inter": inter_pairs(ious, tie_margin),
                "intra": intra_pairs(ious, out.iou_pred.float(), tie_margin),
            }
            for kind, pairs in kinds.items():
                rank_ok, margin = _pair_numbers(pairs, logits, ref_logits, masks, beta)
                tallies[kind].add(pairs.total, rank_ok, margin)
            done += 1
            if progress is not None:
                progress(done, total)
        result[name] = {kind: tally.summary() for kind, tally in tallies.items()}
    return result
