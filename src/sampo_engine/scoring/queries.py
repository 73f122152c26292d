"""Evaluation queries, as the paper scores them: (crop, intent, seeded 3 + 3 prompt set).

Large images are cut into non-overlapping S × S crops (the last row/column aligned to the image
edge; images smaller than S are padded). Each crop gives one query per intent it supports: T1,
and T2 for every class present. Prompts come from :func:`sampo_engine.prompts.sample_eval_prompts`
seeded by (seed, crop name, intent), so every method compared sees the same points.

:func:`predict_queries` runs a model on the queries (each crop encoded once, any number of prompt
sets decoded on it) and yields the logits; :func:`score_queries` returns, per query, the Dice and
IoU of the slot the IoU head selects and of the best slot (the oracle). The full protocol
(breakdowns, instance metrics, several models) is :mod:`sampo_engine.eval.protocol`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from sampo_engine.data.sample import NucleiDataset, NucleiSample
from sampo_engine.prompts import (
    Intent,
    PromptSet,
    available_intents,
    eval_seed,
    sample_eval_prompts,
    target_mask,
)
from sampo_engine.scoring.metrics import overlap_counts


@dataclass
class Query:
    """One evaluation query. Arrays are S × S crops indexed [row, col]; points are (x, y)."""

    image: np.ndarray  # (S, S, 3) uint8
    inst: np.ndarray  # (S, S) int32
    cls: np.ndarray | None  # (S, S) uint8
    intent: Intent
    prompts: PromptSet
    sample_name: str
    origin: tuple[int, int]  # (row, col) of the crop in the source image
    tissue: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def target(self) -> np.ndarray:
        return target_mask(self.inst, self.cls, self.intent)

    @property
    def num_nuclei(self) -> int:
        ids = np.unique(self.inst)
        return int((ids > 0).sum())

    @property
    def name(self) -> str:
        return f"{self.sample_name}@{self.origin[0]},{self.origin[1]}"


def grid_origins(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """Top-left (row, col) of non-overlapping ``size`` crops covering the image (edge-aligned)."""

    def starts(n):
        if n <= size:
            return [0]
        out = list(range(0, n - size + 1, size))
        if out[-1] != n - size:
            out.append(n - size)
        return out

    return [(r, c) for r in starts(height) for c in starts(width)]


def make_queries(
    dataset: NucleiDataset,
    indices: Sequence[int] | None,
    size: int,
    task: str,
    seed: int = 0,
    num_positive: int = 3,
    num_negative: int = 3,
    max_queries: int | None = None,
    repeat: int = 0,
) -> list[Query]:
    """All (crop, intent) queries of the chosen images; ``max_queries`` keeps a seeded subset."""
    from sampo_engine.data.crops import pad_to

    queries: list[Query] = []
    for i in indices if indices is not None else range(len(dataset)):
        sample: NucleiSample = pad_to(dataset[i], size)
        inst = sample.inst.astype(np.int32, copy=False)
        for top, left in grid_origins(*sample.shape, size):
            sl = (slice(top, top + size), slice(left, left + size))
            c_inst = inst[sl]
            c_cls = None if sample.cls is None else sample.cls[sl]
            for intent in available_intents(c_inst, c_cls, task):
                name = f"{sample.name}@{top},{left}"
                rng = np.random.default_rng(eval_seed(seed, name, intent, repeat))
                prompts = sample_eval_prompts(
                    c_inst, c_cls, intent, rng, num_positive, num_negative
                )
                queries.append(
                    Query(
                        sample.image[sl],
                        c_inst,
                        c_cls,
                        intent,
                        prompts,
                        sample.name,
                        (top, left),
                        sample.tissue,
                    )
                )
    if max_queries is not None and len(queries) > max_queries:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(queries), size=max_queries, replace=False))
        queries = [queries[k] for k in keep]
    return queries


@dataclass
class QueryScore:
    """Scores of one query: the IoU-head-selected slot and the best (oracle) slot."""

    dice: float
    iou: float
    oracle_dice: float
    oracle_iou: float
    slot: int
    mask: np.ndarray | None = None  # (S, S) bool selected mask, when kept
    prob: np.ndarray | None = None  # (S, S) float32 probability of the selected slot, when kept
    clicks_dice: float = float("nan")  # Dice of the slot agreeing best with the clicks


def dice_iou(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Binary Dice and IoU of two same-shape masks (:class:`~sampo_engine.scoring.metrics.
    OverlapCounts`); both empty counts as a perfect 1.0 (see docs/evaluation.md)."""
    counts = overlap_counts(pred, target)
    return counts.dice, counts.iou


def _array_key(array: np.ndarray) -> tuple:
    """Identity of an array view (same memory, shape and strides = same pixels)."""
    return (array.__array_interface__["data"][0], array.shape, array.strides, array.dtype.str)


def query_batches(prompt_sets: Sequence[Sequence[PromptSet]], batch_size: int) -> list[list[int]]:
    """Query indices in model-call batches: grouped by their number of prompt sets K (ascending),
    in query order within a group, ``batch_size`` at a time. Every method of an evaluation is fed
    in this order, so the digests of what they were fed compare."""
    groups: dict[int, list[int]] = {}
    for i, sets in enumerate(prompt_sets):
        groups.setdefault(len(sets), []).append(i)
    return [
        idx[s : s + batch_size]
        for _, idx in sorted(groups.items())
        for s in range(0, len(idx), batch_size)
    ]


def predict_queries(
    model,
    queries: Sequence[Query],
    prompt_sets: Sequence[Sequence[PromptSet]] | None = None,
    batch_size: int = 8,
    device=None,
    progress: Callable[[int, int], None] | None = None,
    digest=None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Run ``model`` on every query's prompt sets, encoding each crop once per batch; no gradients.

    Args:
        model: an AdaptedSam or a bare Sam.
        queries: the queries (their crops are the images).
        prompt_sets: per query, the K_i prompt sets to decode on its crop (default: its own
            ``[q.prompts]``). Queries with the same K are batched together, so several prompt
            variants of one crop cost one image-encoder pass.
        batch_size: queries per batch; queries of one batch that view the same crop (the
            intents of a crop, consecutive in :func:`make_queries`' order) are encoded once.
        progress: called with (queries done, total) after every batch.
        digest: optional ``hashlib`` object updated with every packed (points, labels) batch in
            the order fed to the model: two models that received identical prompts give
            identical digests.
    Yields:
        (query index, logits (K, 3, S, S) float32 upsampled to the crop, iou_pred (K, 3)
        float32), grouped by K and in query order within a group.
    """
    import torch

    from sampo_engine.models.forward import decode, encode, upsample
    from sampo_engine.prompts import pack
    from sampo_engine.utils.device import autocast

    if prompt_sets is None:
        prompt_sets = [[q.prompts] for q in queries]
    if len(prompt_sets) != len(queries):
        raise ValueError("prompt_sets needs one list of prompt sets per query")
    if hasattr(model, "predict_queries"):  # a non-SAM method (the classical floor)
        yield from model.predict_queries(queries, prompt_sets, batch_size, progress, digest)
        return
    sam = getattr(model, "sam", model)
    device = device or next(sam.parameters()).device
    batches = query_batches(prompt_sets, batch_size)
    was_training = sam.training
    sam.eval()
    done = 0
    try:
        with torch.inference_mode():
            for batch in batches:
                # queries on the same crop (its T1 and T2 intents) share one encoder pass
                unique: dict[tuple, int] = {}
                crops, inverse = [], []
                for i in batch:
                    key = _array_key(queries[i].image)
                    if key not in unique:
                        unique[key] = len(crops)
                        crops.append(queries[i].image)
                    inverse.append(unique[key])
                images = torch.from_numpy(np.stack(crops).transpose(0, 3, 1, 2)).to(device)
                points, labels = zip(*(pack(list(prompt_sets[i])) for i in batch))
                points, labels = np.stack(points), np.stack(labels)  # (b, K, P, 2), (b, K, P)
                if digest is not None:
                    digest.update(points.tobytes())
                    digest.update(labels.tobytes())
                with autocast(device):
                    embeddings = encode(sam, images)
                    if len(crops) < len(batch):
                        embeddings = embeddings[torch.as_tensor(inverse, device=embeddings.device)]
                    out = decode(
                        sam,
                        embeddings,
                        torch.from_numpy(points).to(device),
                        torch.from_numpy(labels).to(device),
                    )
                size = queries[batch[0]].image.shape[:2]
                logits = upsample(out.logits.float(), size).cpu().numpy()  # (b, K, 3, S, S)
                iou_pred = out.iou_pred.float().cpu().numpy()  # (b, K, 3)
                for i, lg, ip in zip(batch, logits, iou_pred):
                    yield i, lg, ip
                done += len(batch)
                if progress is not None:
                    progress(done, len(queries))
    finally:
        sam.train(was_training)


def score_queries(
    model,
    queries: Sequence[Query],
    batch_size: int = 8,
    device=None,
    keep_masks: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[QueryScore]:
    """Run ``model`` (an AdaptedSam or a bare Sam) on each query's prompts; no gradients."""
    from sampo_engine.models.slots import select_slot

    scores: list[QueryScore | None] = [None] * len(queries)
    for i, lg, ip in predict_queries(model, queries, None, batch_size, device, progress):
        q, lg, ip = queries[i], lg[0], ip[0]
        target = q.target
        masks = lg > 0
        per_slot = [dice_iou(m, target) for m in masks]
        slot = int(ip.argmax())
        best = int(np.argmax([d for d, _ in per_slot]))
        by_clicks = select_slot(lg, ip, q.prompts.points, q.prompts.labels, lg.shape[-1], "clicks")
        prob = 1 / (1 + np.exp(-lg[slot])) if keep_masks else None
        scores[i] = QueryScore(
            per_slot[slot][0],
            per_slot[slot][1],
            per_slot[best][0],
            per_slot[best][1],
            slot,
            masks[slot] if keep_masks else None,
            prob.astype(np.float32) if keep_masks else None,
            clicks_dice=per_slot[by_clicks][0],
        )
    return scores  # type: ignore[return-value]


def summarize(queries: Sequence[Query], scores: Sequence[QueryScore]) -> dict[str, float]:
    """Macro-mean Dice/IoU per task — IoU-head slot, oracle slot, and the slot agreeing best with
    the clicks: {'t1_dice': ..., 't2_iou': ..., 't2_oracle_dice': ..., 't2_clicks_dice': ...}."""
    out: dict[str, float] = {}
    for task in ("t1", "t2"):
        picked = [s for q, s in zip(queries, scores) if q.intent.task == task]
        if not picked:
            continue
        out[f"{task}_dice"] = float(np.mean([s.dice for s in picked]))
        out[f"{task}_iou"] = float(np.mean([s.iou for s in picked]))
        out[f"{task}_oracle_dice"] = float(np.mean([s.oracle_dice for s in picked]))
        out[f"{task}_clicks_dice"] = float(np.mean([s.clicks_dice for s in picked]))
        out[f"{task}_n"] = len(picked)
    return out
