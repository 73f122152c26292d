"""Scoring one model on the planned queries: per-query records of Dice, IoU and instances.

For each query the model answers every prompt set with SAM's three masks (logits (K, 3, S, S),
IoU-head predictions (K, 3)); the slot of ``--slot-rule`` (:mod:`sampo_engine.models.slots`) and
the best slot (the oracle) are scored against the query's target, the selected mask is split into
nuclei for PQ / AJI / F1, and each T1 answer is also scored as the T2 queries of its crop.

A record is a dict: ``dice``, ``iou``, ``oracle_dice``, ``oracle_iou``, ``slot``,
``oracle_slot``, ``counts`` / ``oracle_counts`` = (|P∩T|, |P|, |T|) in pixels, and where scored
``instances``, ``grid`` ((Dice, IoU) per sensitivity cell), ``robust`` (Dice per repeat) and
``t1_as_t2`` (a record of the crop's T1 answer).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import numpy as np

from sampo_engine.errors import Cancelled
from sampo_engine.eval.plan import EvalPlan
from sampo_engine.scoring.metrics import OverlapCounts


def score_method(
    model,
    plan: EvalPlan,
    config,
    device=None,
    progress: Callable[[int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> tuple[dict[int, dict], str]:
    """Per-query records of one model on the plan's queries, and the digest of its prompts.

    The model runs in this thread; the per-query scoring (thresholds, overlaps, the watershed
    split and instance matching — the costly part on a GPU machine) runs in a thread pool of
    ``config.workers`` beside it. ``progress(k)`` is called with the number of queries newly
    answered; ``stop`` is polled after every batch (true raises
    :class:`~sampo_engine.errors.Cancelled`).
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from sampo_engine.scoring.queries import predict_queries

    records: dict[int, dict] = {}
    reported = set(plan.reported)
    digest = hashlib.sha256()
    last = [0]

    def tick(done: int, total: int) -> None:
        if progress is not None:
            progress(done - last[0])
        last[0] = done
        if stop is not None and stop():
            raise Cancelled("evaluation cancelled")

    def merge(parts: dict[int, dict]) -> None:
        for k, part in parts.items():
            records.setdefault(k, {}).update(part)

    workers = config.workers or min(8, os.cpu_count() or 1)
    limit = 4 * max(workers, config.batch_size)  # logits in flight, bounded
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = set()
        try:
            for i, logits, iou_pred in predict_queries(
                model, plan.queries, plan.prompt_sets, config.batch_size, device, tick, digest
            ):
                pending.add(pool.submit(_score_query, plan, config, i, logits, iou_pred, reported))
                if len(pending) >= limit:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        merge(f.result())
        except BaseException:
            for f in pending:
                f.cancel()
            raise
        for f in pending:
            merge(f.result())
    return records, digest.hexdigest()


def trivial_all_nuclei(plan: EvalPlan, instances: bool) -> dict[int, dict]:
    """Records of the trivial T2 answer "all nuclei, perfectly segmented" (T1 ground truth)."""
    from sampo_engine.scoring.metrics import instance_metrics

    records = {}
    for i in plan.reported:
        q = plan.queries[i]
        if q.intent.task != "t2":
            continue
        pred = q.inst > 0
        counts = _overlap(pred, q.target)
        d, u = dice_iou_of_counts(counts)
        rec = {
            "dice": d,
            "iou": u,
            "oracle_dice": d,
            "oracle_iou": u,
            "counts": counts,
            "oracle_counts": counts,
        }
        if instances:
            gt = np.where(q.target, q.inst, 0).astype(np.int32)
            rec["instances"] = instance_metrics(gt, q.inst.astype(np.int32))
        records[i] = rec
    return records


def dice_iou_of_counts(counts: tuple[int, int, int]) -> tuple[float, float]:
    """(Dice, IoU) of (|P∩T|, |P|, |T|) by :class:`~sampo_engine.scoring.metrics.OverlapCounts`
    (both empty → 1.0)."""
    overlap = OverlapCounts(*counts)
    return overlap.dice, overlap.iou


def _overlap(pred: np.ndarray, target: np.ndarray) -> tuple[int, int, int]:
    """(|P∩T|, |P|, |T|) in pixels of two (S, S) bool masks."""
    return (
        int(np.count_nonzero(pred & target)),
        int(np.count_nonzero(pred)),
        int(np.count_nonzero(target)),
    )


def _score_slots(masks: np.ndarray, target: np.ndarray, slot: int) -> dict:
    """Selected-slot and oracle (best-Dice slot) scores and pixel counts of (3, S, S) masks."""
    counts = [_overlap(m, target) for m in masks]
    scores = [dice_iou_of_counts(c) for c in counts]
    best = int(np.argmax([d for d, _ in scores]))
    return {
        "dice": scores[slot][0],
        "iou": scores[slot][1],
        "oracle_dice": scores[best][0],
        "oracle_iou": scores[best][1],
        "slot": slot,
        "oracle_slot": best,
        "counts": counts[slot],
        "oracle_counts": counts[best],
    }


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))).astype(np.float32)


def _slots(slot_rule: str, query, prompt_sets, logits, iou_pred) -> np.ndarray:
    """(K,) the slot scored for each of the K prompt sets of ``query``: logits (K, 3, S, S),
    iou_pred (K, 3), prompt points (x, y) in the S × S input frame. The rule (``auto`` resolved
    by the query's task) and the choice are :mod:`sampo_engine.models.slots`'."""
    from sampo_engine.models.slots import select_slot, slot_rule_for

    rule = slot_rule_for(slot_rule, query.intent.task)
    size = logits.shape[-1]
    return np.array(
        [
            select_slot(logits[k], iou_pred[k], ps.points, ps.labels, size, rule)
            for k, ps in enumerate(prompt_sets[: len(logits)])
        ]
    )


def _score_query(plan: EvalPlan, config, i: int, logits, iou_pred, reported):
    """Every score of query ``i`` from its logits (K, 3, S, S): {query index: record part}."""
    from sampo_engine.predict.instances import split_instances
    from sampo_engine.prompts import target_mask
    from sampo_engine.scoring.metrics import instance_metrics

    q = plan.queries[i]
    masks = logits > 0  # (K, 3, S, S)
    slots = _slots(config.slot_rule, q, plan.prompt_sets[i], logits, iou_pred)  # (K,)
    pred_inst = None
    if config.instances and (i in reported or plan.crop_t2.get(i)):
        pred_inst = split_instances(_sigmoid(logits[0, slots[0]]))
    out: dict[int, dict] = {}
    if i in reported:
        target = q.target
        rec = _score_slots(masks[0], target, int(slots[0]))
        if pred_inst is not None:
            rec["instances"] = instance_metrics(np.where(target, q.inst, 0), pred_inst)
        lay = plan.layout[i]
        if lay["grid"]:
            a, b = lay["grid"]
            rec["grid"] = [
                dice_iou_of_counts(_overlap(masks[k, slots[k]], target)) for k in range(a, b)
            ]  # (Dice, IoU) per grid cell, positives-major
        if lay["robust"]:
            a, b = lay["robust"]
            rec["robust"] = [
                dice_iou_of_counts(_overlap(masks[k, slots[k]], target))[0] for k in range(a, b)
            ]
        out[i] = rec
    for j in plan.crop_t2.get(i, []):  # this T1 answer scored as the T2 queries of its crop
        t2_target = target_mask(q.inst, q.cls, plan.queries[j].intent)
        as_t2 = _score_slots(masks[0], t2_target, int(slots[0]))
        if pred_inst is not None:
            as_t2["instances"] = instance_metrics(np.where(t2_target, q.inst, 0), pred_inst)
        out.setdefault(j, {})["t1_as_t2"] = as_t2
    return out
