"""Whole-image evaluation with the tiled predictor (beyond the paper's crops; docs/evaluation.md).

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

from sampo_engine.errors import DataError
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


#: the t2_mode of the rows that score the image's T1 answer as the T2 answer
T1_AS_T2 = "T1 answer as T2"


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
    t2_modes: Sequence[str] = ("exemplar",),
    match_radius: float = 12.0,
    split: str = "auto",
    type_head: str = "auto",
) -> list[dict]:
    """One record per (image, intent[, T2 mode]): dice, iou, and pq / f1 when ``instances``.

    ``model`` is a loaded model, or a :class:`~sampo_engine.eval.classical.ClassicalFloor`
    (whose whole-image T1 answer is every hematoxylin nucleus; T2 modes ``decoder`` = the floor's
    own nearest-look rule, ``exemplar`` = the few-shot classifier on its nuclei). Every T2 intent
    is answered in each of ``t2_modes`` from the same clicks; ``class_f1`` / ``class_precision``
    / ``class_recall`` score the answer's nuclei against the true nuclei of the intent by
    centroid within ``match_radius`` px (:mod:`~sampo_engine.eval.nucleus_match`; for T1 it is
    the detection F1 of all nuclei). ``split``: how the predictor cuts touching nuclei
    (``PredictConfig.split_by``); ``type_head``: the nucleus type head T2 by nucleus reads
    (``PredictConfig.type_head``, for the floor's nuclei too). With ``task="both"`` every T2 intent also gets a row of
    t2_mode :data:`T1_AS_T2`: the image's T1 answer scored as the T2 answer (what a method that
    ignores which type was clicked would score).
    """
    from sampo_engine.eval.nucleus_match import centroid_f1, label_centroids
    from sampo_engine.predict.tiling import make_grid
    from sampo_engine.scoring.metrics import get_fast_pq
    from sampo_engine.scoring.misses import miss_causes
    from sampo_engine.scoring.queries import dice_iou

    predictor = _whole_image_predictor(model, device, slot_rule, split, type_head)
    rows = []
    for i in indices:
        sample = dataset[i]
        inst = sample.inst.astype(np.int32, copy=False)
        cls = sample.cls
        predictor.set_image(sample.image)
        # the click tiles are cut from the image as given (the same for every method, whether
        # or not its model sees the image resampled)
        model_grid = predictor.tile_grid
        grid = make_grid(inst.shape[0], inst.shape[1], model_grid.tile, model_grid.overlap)
        boxes = [
            (int(y), int(y) + grid.tile, int(x), int(x) + grid.tile)
            for y, x in zip(grid.y0, grid.x0)
        ]
        t1_answer = None  # (mask, labels, prompted) of the image's T1 query
        for intent in available_intents(inst, cls, task):
            clicks = one_tile_clicks(inst, cls, intent, boxes, seed, sample.name)
            if clicks is None:
                continue
            target = target_mask(inst, cls, intent)
            truth = np.where(target, inst, 0)
            _, true_centroids = label_centroids(truth)
            modes = list(t2_modes) if intent.task == "t2" else [None]
            if intent.task == "t2" and t1_answer is not None:
                modes.append(T1_AS_T2)
            for mode in modes:
                if mode not in (None, T1_AS_T2):
                    predictor.config.t2_mode = mode
                refused = None
                try:
                    if mode == T1_AS_T2:
                        mask, labels, prompted = t1_answer
                    else:
                        pred = predictor.predict(clicks[0], clicks[1], task=intent.task)
                        mask, labels = pred.mask, pred.labels
                        prompted = pred.tiles_with_prompts + pred.tiles_propagated
                        if intent.task == "t1":
                            t1_answer = (mask, labels, prompted)
                except DataError as err:
                    # the method cannot answer these clicks (e.g. its nuclei merged into one
                    # blob that every click names): scored as an empty answer, and counted
                    refused, prompted = str(err), 0
                    mask = np.zeros(inst.shape, bool)
                    labels = np.zeros(inst.shape, np.int32)
                d, j = dice_iou(mask, target)
                row = {
                    "image": sample.name,
                    "task": intent.task,
                    "class_id": intent.class_id,
                    "t2_mode": mode,
                    "dice": d,
                    "iou": j,
                    "tiles": len(model_grid),
                    "image_tiles": len(boxes),
                    "tiles_prompted": prompted,
                    "tiles_with_target": sum(
                        count_targets(inst, cls, intent, b) > 0 for b in boxes
                    ),
                    "refused": refused,
                }
                if instances:
                    pq = get_fast_pq(truth, labels)
                    row.update(pq=pq.pq, f1=pq.dq)
                    row.update(
                        {f"miss_{k}": v for k, v in miss_causes(truth, labels).as_dict().items()}
                    )
                    match = centroid_f1(label_centroids(labels)[1], true_centroids, match_radius)
                    row.update(
                        class_f1=match["f1"],
                        class_precision=match["precision"],
                        class_recall=match["recall"],
                    )
                rows.append(row)
        predictor.forget_nuclei()
        if progress is not None:
            progress(1)
    return rows


def _whole_image_predictor(
    model, device: str, slot_rule: str, split: str = "auto", type_head: str = "auto"
):
    from sampo_engine.eval.classical import ClassicalFloor, ClassicalTilePredictor
    from sampo_engine.predict.predictor import PredictConfig, TilePredictor

    if isinstance(model, ClassicalFloor):
        return ClassicalTilePredictor(type_head=type_head)
    config = PredictConfig(device=device, slot_rule=slot_rule, split_by=split, type_head=type_head)
    return TilePredictor(config, model=model)


def summarize_whole(rows: Sequence[dict]) -> dict:
    """Mean scores per task: {'t1': {...}, 't2': {...}, ...}; with several T2 modes, one block
    per mode as 't2:<mode>' (and 't2' = the first mode scored). Each block: dice, iou, pq, f1,
    class_f1 (means over records), n, refused (records the method could not answer: scored as
    empty answers), the tile shares, ``misses`` (with instances: the counts of
    :class:`~sampo_engine.scoring.misses.MissCauses` summed over the records), and for T2
    ``per_class``: class id →
    {'dice', 'class_f1', 'n'}."""
    out = {}
    keys = []
    for r in rows:
        key = r["task"] if r.get("t2_mode") is None else f"t2:{r['t2_mode']}"
        if key not in keys:
            keys.append(key)
    for key in keys:
        sel = [
            r for r in rows
            if (r["task"] if r.get("t2_mode") is None else f"t2:{r['t2_mode']}") == key
        ]  # fmt: skip
        block = {"n": len(sel), "refused": sum(1 for r in sel if r.get("refused"))}
        for name in ("dice", "iou", "pq", "f1", "class_f1", "class_precision", "class_recall"):
            values = [r[name] for r in sel if name in r and r[name] is not None]
            values = [v for v in values if not np.isnan(v)]  # e.g. PQ with --no-instances
            block[name] = float(np.mean(values)) if values else float("nan")
        if all("miss_true" in r for r in sel):  # why true nuclei went unmatched, summed
            block["misses"] = {k[5:]: int(sum(r[k] for r in sel)) for k in sel[0]
                               if k.startswith("miss_")}  # fmt: skip
        block["prompted_tile_share"] = float(
            np.mean([r["tiles_prompted"] / r["tiles"] for r in sel])
        )
        block["target_tile_share"] = float(
            np.mean([r["tiles_with_target"] / r["image_tiles"] for r in sel])
        )
        if sel[0]["task"] == "t2":
            per_class = {}
            for c in sorted({r["class_id"] for r in sel}):
                cs = [r for r in sel if r["class_id"] == c]
                per_class[str(c)] = {
                    "dice": float(np.nanmean([r["dice"] for r in cs])),
                    "class_f1": float(np.nanmean([r.get("class_f1", np.nan) for r in cs])),
                    "n": len(cs),
                }
            block["per_class"] = per_class
        out[key] = block
        if key.startswith("t2:") and "t2" not in out:
            out["t2"] = dict(block, mode=key[3:])
    return out
