"""Summaries of per-query records: macro means, pooled scores, spreads and breakdowns.

:func:`aggregate` turns one method's records (:mod:`sampo_engine.eval.score`) into the blocks of
``metrics.json``: per task the macro means over queries (the paper's tables), pixel-pooled scores,
instance metrics, the density bins, tissues, the prompt-sensitivity grid, robustness, and for T2
the per-class means. :func:`paired_difference` compares two methods query by query.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sampo_engine.eval.plan import GRID_NEGATIVES, GRID_POSITIVES, EvalPlan
from sampo_engine.eval.score import dice_iou_of_counts
from sampo_engine.tasks import TASKS

#: Density bins over the number of nuclei (all classes) in a crop: (label, low, high) meaning
#: low <= n < high, except the last two, see :func:`density_bin`.
DENSITY_BINS = ("<20", "20-50", "50-100", ">100")


def density_bin(num_nuclei: int) -> str:
    """The density label of a crop: <20, 20–50 (20 ≤ n < 50), 50–100 (50 ≤ n ≤ 100), >100."""
    if num_nuclei < 20:
        return "<20"
    if num_nuclei < 50:
        return "20-50"
    if num_nuclei <= 100:
        return "50-100"
    return ">100"


def aggregate(
    queries: Sequence, reported: Sequence[int], records: dict[int, dict], class_names: dict
) -> dict:
    """Every breakdown of one method's records (the same layout for the trivial rows)."""
    by_task: dict[str, list[int]] = {}
    for i in reported:
        if i in records and "dice" in records[i]:
            by_task.setdefault(queries[i].intent.task, []).append(i)
    out: dict = {"summary": {}, "instances": {}, "density": {}, "per_tissue": {}}
    for task, idx in by_task.items():
        recs = [records[i] for i in idx]
        out["summary"][task] = _block(recs)
        inst = _instance_block(recs)
        if inst:
            out["instances"][task] = inst
        dens = {}
        for label in DENSITY_BINS:
            sub = [records[i] for i in idx if density_bin(queries[i].num_nuclei) == label]
            dens[label] = _block(sub)
        out["density"][task] = dens
        tissues = sorted({queries[i].tissue for i in idx if queries[i].tissue})
        for tissue in tissues:
            sub = [records[i] for i in idx if queries[i].tissue == tissue]
            out["per_tissue"].setdefault(tissue, {})[task] = _block(sub)
        grid = [records[i]["grid"] for i in idx if "grid" in records[i]]
        if grid:
            out.setdefault("sensitivity", {})[task] = _sensitivity(grid)
        robust = [records[i]["robust"] for i in idx if "robust" in records[i]]
        if robust:
            out.setdefault("robustness", {})[task] = _robustness(robust)
    t2 = by_task.get("t2", [])
    if t2:
        per_class = {}
        for c in sorted({queries[i].intent.class_id for i in t2}):
            sub = [records[i] for i in t2 if queries[i].intent.class_id == c]
            per_class[str(c)] = {"name": class_names.get(c, f"class {c}"), **_block(sub)}
        out["per_class"] = per_class
        blocks = [b for b in per_class.values() if b["n"]]
        out["summary"]["t2"]["class_macro_dice"] = float(np.mean([b["dice"] for b in blocks]))
        out["summary"]["t2"]["class_macro_iou"] = float(np.mean([b["iou"] for b in blocks]))
    return out


def paired_difference(a: dict[int, dict], b: dict[int, dict], idx: Sequence[int]) -> dict:
    """Mean paired Dice difference a − b over shared queries, with a normal 95 % interval."""
    diffs = np.asarray([a[i]["dice"] - b[i]["dice"] for i in idx if i in a and i in b], float)
    if diffs.size == 0:
        return {"n": 0}
    half = 1.96 * diffs.std(ddof=1) / math.sqrt(diffs.size) if diffs.size > 1 else float("nan")
    return {
        "n": int(diffs.size),
        "mean_dice_diff": float(diffs.mean()),
        "ci95_low": float(diffs.mean() - half),
        "ci95_high": float(diffs.mean() + half),
        "share_better": float((diffs > 0).mean()),
        "share_worse": float((diffs < 0).mean()),
    }


def paired_versus_base(plan: EvalPlan, method_records: list[dict[int, dict]]) -> list[dict]:
    """Every method against the base row, per task: the ``paired`` list of ``metrics.json``
    (empty without a base row). ``method_records`` follow ``plan.methods``."""
    paired = []
    base_idx = next((k for k, m in enumerate(plan.methods) if m.kind == "base"), None)
    if base_idx is None:
        return paired
    for k, m in enumerate(plan.methods):
        if k == base_idx:
            continue
        for t in TASKS:
            idx = [i for i in plan.reported if plan.queries[i].intent.task == t]
            if idx:
                paired.append(
                    {
                        "method": m.name,
                        "versus": plan.methods[base_idx].name,
                        "task": t,
                        **paired_difference(method_records[k], method_records[base_idx], idx),
                    }
                )
    return paired


def _nanmean(values) -> float:
    arr = np.asarray([v for v in values if v is not None], float)
    if arr.size == 0 or np.isnan(arr).all():
        return float("nan")
    return float(np.nanmean(arr))


def _block(recs: list[dict]) -> dict:
    """Macro means, pooled scores and spread of a list of query records."""
    if not recs:
        return {"n": 0}
    out = {"n": len(recs)}
    for key in ("iou", "dice", "oracle_iou", "oracle_dice"):
        out[key] = float(np.mean([r[key] for r in recs]))
    out["dice_std"] = float(np.std([r["dice"] for r in recs]))
    for prefix, key in (("pooled", "counts"), ("pooled_oracle", "oracle_counts")):
        inter = sum(r[key][0] for r in recs)
        total = sum(r[key][1] + r[key][2] for r in recs)
        d, u = dice_iou_of_counts((inter, total, 0)) if total else (1.0, 1.0)
        out[f"{prefix}_dice"], out[f"{prefix}_iou"] = d, u
    return out


def _instance_block(recs: list[dict]) -> dict:
    from sampo_engine.scoring.metrics import pooled_instance_metrics

    rows = [r["instances"] for r in recs if "instances" in r]
    if not rows:
        return {}
    out = {"n": len(rows)}
    for key in ("pq", "dq", "sq", "aji", "f1", "precision", "recall"):
        out[key] = _nanmean(r[key] for r in rows)
    out["pooled"] = pooled_instance_metrics(rows)
    return out


def _sensitivity(grid: list) -> dict:
    """Mean Dice and IoU over queries of the (positives × negatives) grid; ``grid`` holds per
    query 12 (Dice, IoU) pairs, positives-major."""
    arr = np.asarray(grid, float)  # (n, 12, 2)
    shape = (len(GRID_POSITIVES), len(GRID_NEGATIVES))
    return {
        "n": len(grid),
        "positives": list(GRID_POSITIVES),
        "negatives": list(GRID_NEGATIVES),
        "dice": arr[:, :, 0].mean(0).reshape(shape).tolist(),
        "iou": arr[:, :, 1].mean(0).reshape(shape).tolist(),
    }


def _robustness(robust: list) -> dict:
    """Spread of the Dice over R random prompt sets; ``robust`` holds per query R Dice values."""
    arr = np.asarray(robust, float)  # (n, R)
    return {
        "n": len(robust),
        "repeats": int(arr.shape[1]),
        "mean_std_dice": float(arr.std(axis=1).mean()),
        "mean_dice": float(arr.mean()),
        "max_std_dice": float(arr.std(axis=1).max()),
    }
