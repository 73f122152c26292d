"""Whole-image evaluation with the tiled predictor (beyond the paper's crops; DESIGN.md §3).

For each test image and intent (T1, and T2 of every class the image holds), the seeded 3 + 3
evaluation clicks are placed in ONE tile — the one holding the most target nuclei, as a user in
napari would click — and :class:`~sampo_engine.predict.predictor.TilePredictor` segments the
whole image with prompt propagation. Scored against the whole-image target: Dice and IoU of the
mask, and PQ / detection F1 of the instances. The clicks depend only on (seed, image, intent), so
every method sees the same ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from sampo_engine.prompts import (
    Intent,
    available_intents,
    eval_seed,
    sample_eval_prompts,
    target_mask,
)


def count_targets(inst: np.ndarray, cls: np.ndarray | None, intent: Intent, box) -> int:
    """Target nuclei with a pixel inside ``box`` = (row0, row1, col0, col1)."""
    r0, r1, c0, c1 = box
    sub_inst = inst[r0:r1, c0:c1]
    sub = sub_inst * target_mask(sub_inst, None if cls is None else cls[r0:r1, c0:c1], intent)
    return len(np.unique(sub)) - 1


def clicks_in_box(inst, cls, intent: Intent, box, rng: np.random.Generator):
    """Evaluation prompts sampled inside ``box``, as full-image (x, y) points and labels;
    None when the box holds no target nucleus."""
    r0, r1, c0, c1 = box
    sub_inst = inst[r0:r1, c0:c1]
    sub_cls = None if cls is None else cls[r0:r1, c0:c1]
    if not target_mask(sub_inst, sub_cls, intent).any():
        return None
    prompts = sample_eval_prompts(sub_inst, sub_cls, intent, rng)
    return prompts.points + np.array([c0, r0], np.float32), prompts.labels


def one_tile_clicks(inst, cls, intent: Intent, boxes: Sequence[tuple], seed: int, name: str):
    """3 + 3 clicks in the tile (of ``boxes``) holding the most target nuclei."""
    best = int(np.argmax([count_targets(inst, cls, intent, b) for b in boxes]))
    rng = np.random.default_rng(eval_seed(seed, f"whole:{name}", intent))
    return clicks_in_box(inst, cls, intent, boxes[best], rng)


def score_whole_images(
    model,
    dataset,
    indices: Sequence[int],
    task: str,
    seed: int = 0,
    device: str = "auto",
    instances: bool = True,
    progress: Callable[[int], None] | None = None,
    slot_rule: str = "auto",
) -> list[dict]:
    """One record per (image, intent): dice, iou, and pq / f1 when ``instances``."""
    from sampo_engine.eval.metrics import get_fast_pq
    from sampo_engine.eval.queries import dice_iou
    from sampo_engine.predict.predictor import PredictConfig, TilePredictor

    predictor = TilePredictor(PredictConfig(device=device, slot_rule=slot_rule), model=model)
    rows = []
    for i in indices:
        sample = dataset[i]
        inst = sample.inst.astype(np.int32, copy=False)
        cls = sample.cls
        predictor.set_image(sample.image)
        grid = predictor.tile_grid
        boxes = [
            (int(y), int(y) + grid.tile, int(x), int(x) + grid.tile)
            for y, x in zip(grid.y0, grid.x0)
        ]
        for intent in available_intents(inst, cls, task):
            clicks = one_tile_clicks(inst, cls, intent, boxes, seed, sample.name)
            if clicks is None:
                continue
            pred = predictor.predict(clicks[0], clicks[1], task=intent.task)
            target = target_mask(inst, cls, intent)
            d, j = dice_iou(pred.mask, target)
            row = {
                "image": sample.name,
                "task": intent.task,
                "class_id": intent.class_id,
                "dice": d,
                "iou": j,
                "tiles": pred.num_tiles,
                "tiles_prompted": pred.tiles_with_prompts + pred.tiles_propagated,
                "tiles_with_target": sum(count_targets(inst, cls, intent, b) > 0 for b in boxes),
            }
            if instances:
                truth = np.where(target, inst, 0)
                pq = get_fast_pq(truth, pred.labels)
                row.update(pq=pq.pq, f1=pq.dq)
            rows.append(row)
        if progress is not None:
            progress(1)
    return rows


def summarize_whole(rows: Sequence[dict]) -> dict:
    """Mean scores per task: {'t1': {'dice': ..., 'iou': ..., 'pq': ..., 'n': ...}, ...}."""
    out = {}
    for task in ("t1", "t2"):
        sel = [r for r in rows if r["task"] == task]
        if not sel:
            continue
        block = {"n": len(sel)}
        for key in ("dice", "iou", "pq", "f1"):
            values = [r[key] for r in sel if key in r and r[key] is not None]
            block[key] = float(np.nanmean(values)) if values else float("nan")
        block["prompted_tile_share"] = float(
            np.mean([r["tiles_prompted"] / r["tiles"] for r in sel])
        )
        block["target_tile_share"] = float(
            np.mean([r["tiles_with_target"] / r["tiles"] for r in sel])
        )
        out[task] = block
    return out
