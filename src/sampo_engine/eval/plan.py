"""What an evaluation scores: the test images, the (crop, intent) queries and their prompt sets.

:func:`plan_evaluation` checks the data, the adapters and the base weights and builds an
:class:`EvalPlan` before any file is written. Every choice is seeded by ``--seed`` (the images of
``--fraction``, the crops of ``--max-queries``, the sensitivity and robustness subsets and the
prompts), so two evaluations with the same seed score the same queries on the same prompts;
:func:`prompts_digest` fingerprints them.

Prompt points are (x, y) pixels of the crop (the model input frame, S × S).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sampo_engine.errors import ConfigError, DataError
from sampo_engine.eval.methods import Method, resolve_methods
from sampo_engine.tasks import TASKS, tasks_of

#: The prompt-sensitivity grid: the first p positives (rows) and n negatives (columns) of a
#: query's own 3 + 3 prompt set.
GRID_POSITIVES = (1, 2, 3)
GRID_NEGATIVES = (0, 1, 2, 3)


@dataclass
class EvalPlan:
    """Everything checked before a file is written."""

    dataset: object
    queries: list
    reported: list[int]  # indices of the queries scored in the tables
    crop_t2: dict[int, list[int]]  # T1 query index -> T2 query indices of the same crop
    prompt_sets: list[list]  # per query: main set, then grid sets, then robustness sets
    layout: list[dict]  # per query: {'grid': (start, stop) or None, 'robust': ...}
    methods: list[Method]
    model_type: str
    image_size: int
    base_checkpoint: str | None
    image_indices: list[int]


def plan_evaluation(config, log: Callable[[str], None] = print) -> EvalPlan:
    """Check the data, adapters and weights, and build the queries and their prompt sets.

    ``config`` is an :class:`~sampo_engine.eval.config.EvalConfig` (validated here).
    """
    from sampo_engine.scoring.queries import make_queries

    config.validate()
    dataset = _open_data(config)
    task = config.task
    if task == "both" and not dataset.has_classes:
        log("the test data has no classes: evaluating T1 only")
        task = "t1"
    methods, model_type, image_size, base_ckpt = resolve_methods(config, log)
    image_indices = _choose_images(len(dataset), config.fraction, config.seed)
    # T2 needs the T1 query of each crop for the "T1 answer as T2" row: build both
    query_task = "t1" if task == "t1" else "both"
    queries = make_queries(
        dataset,
        image_indices,
        image_size,
        query_task,
        seed=config.seed,
        num_positive=config.num_positive,
        num_negative=config.num_negative,
    )
    tasks = tuple(tasks_of(task))
    if config.max_queries:
        queries = _limit_queries(queries, tasks, config.max_queries, config.seed)
    reported = [i for i, q in enumerate(queries) if q.intent.task in tasks]
    if not reported:
        what = {"t1": "nuclei", "t2": "classified nuclei", "both": "nuclei"}[task]
        raise DataError(
            f"empty test set: the {len(image_indices)} image(s) evaluated from {config.data} hold "
            f"no {what} for task {task}"
            + (" within --max-queries" if config.max_queries else "")
            + "; check the labels, --fraction and --max-queries"
        )
    prompt_sets, layout = _prompt_sets(queries, reported, tasks, config)
    return EvalPlan(
        dataset,
        queries,
        reported,
        _crop_t2(queries, reported),
        prompt_sets,
        layout,
        methods,
        model_type,
        image_size,
        base_ckpt,
        image_indices,
    )


def reported_counts(plan: EvalPlan) -> dict[str, int]:
    """The number of reported queries per task: {'t1': n1, 't2': n2} (zeros included)."""
    return {t: sum(plan.queries[i].intent.task == t for i in plan.reported) for t in TASKS}


def prompts_digest(plan: EvalPlan) -> str:
    """SHA-256 of every query's name, intent and prompt sets, in order."""
    h = hashlib.sha256()
    for q, sets in zip(plan.queries, plan.prompt_sets):
        h.update(f"{q.name}|{q.intent.task}|{q.intent.class_id}".encode())
        for ps in sets:
            h.update(np.ascontiguousarray(ps.points, np.float32).tobytes())
            h.update(np.ascontiguousarray(ps.labels, np.int64).tobytes())
    return h.hexdigest()


def _open_data(config):
    from sampo_engine.data.detect import describe, open_dataset

    dataset = open_dataset(
        config.data,
        format=config.data_format,
        split=config.split or None,
        folds=list(config.folds) if config.folds else None,
    )
    if len(dataset) == 0:
        raise DataError(f"empty test set: no images in {config.data}")
    if config.task == "t2" and not dataset.has_classes:
        raise ConfigError(
            f"T2 needs class labels, but {config.data} has none ({describe(dataset)}); use --task t1"
        )
    return dataset


def _choose_images(n: int, fraction: float, seed: int) -> list[int]:
    """The sorted indices of a seeded ``fraction`` of ``n`` images (at least one)."""
    order = np.random.default_rng(seed).permutation(n)
    keep = max(1, round(n * fraction))
    return sorted(int(i) for i in order[:keep])


def _limit_queries(queries: list, tasks: tuple, max_queries: int, seed: int) -> list:
    """Whole crops in a seeded order, skipping any that would exceed ``max_queries`` reported
    queries (of ``tasks``)."""
    crops: dict[str, list[int]] = {}
    for i, q in enumerate(queries):
        crops.setdefault(q.name, []).append(i)
    names = list(crops)
    chosen, count = set(), 0
    for k in np.random.default_rng(seed).permutation(len(names)):
        idx = crops[names[k]]
        n_rep = sum(queries[i].intent.task in tasks for i in idx)
        if count + n_rep > max_queries:
            continue
        chosen.add(names[k])
        count += n_rep
    return [q for q in queries if q.name in chosen]


def _crop_t2(queries: list, reported: list[int]) -> dict[int, list[int]]:
    """T1 query index -> the reported T2 queries of the same crop."""
    crop_t1: dict[str, int] = {}
    crop_t2: dict[int, list[int]] = {}
    for i, q in enumerate(queries):
        if q.intent.task == "t1":
            crop_t1[q.name] = i
    for i in reported:
        q = queries[i]
        if q.intent.task == "t2" and q.name in crop_t1:
            crop_t2.setdefault(crop_t1[q.name], []).append(i)
    return crop_t2


def _prompt_sets(queries: list, reported: list[int], tasks: tuple, config) -> tuple[list, list]:
    """Per query its prompt sets (main, then grid, then robustness) and where each part lies.

    The sensitivity and robustness subsets are seeded per task and nested (the same order).
    """
    rng = np.random.default_rng([config.seed, 1])
    in_grid, in_robust = set(), set()
    for t in tasks:
        idx = [i for i in reported if queries[i].intent.task == t]
        idx = [idx[k] for k in rng.permutation(len(idx))]
        in_grid.update(idx[: config.sensitivity_queries])
        if config.robustness_repeats >= 2:
            in_robust.update(idx[: config.robustness_queries])
    prompt_sets, layout = [], []
    for i, q in enumerate(queries):
        grid, robust = _grid_and_robust_sets(
            q, config.seed, i in in_grid, config.robustness_repeats if i in in_robust else 0
        )
        sets = [q.prompts, *grid, *robust]
        prompt_sets.append(sets)
        layout.append(
            {
                "grid": (1, 1 + len(grid)) if grid else None,
                "robust": (1 + len(grid), len(sets)) if robust else None,
            }
        )
    return prompt_sets, layout


def _grid_and_robust_sets(q, seed: int, grid: bool, repeats: int) -> tuple[list, list]:
    """The sensitivity-grid sets of query ``q`` (positives-major, when ``grid``) and its
    ``repeats`` random 3 + 3 robustness sets."""
    from sampo_engine.prompts import PromptSet, eval_seed, sample_eval_prompts

    grid_sets, robust_sets = [], []
    if grid:
        # the query's own seed with 3 + 3 points: identical to its main set when that is 3 + 3
        rng = np.random.default_rng(eval_seed(seed, q.name, q.intent, 0))
        full = sample_eval_prompts(q.inst, q.cls, q.intent, rng, 3, 3)
        pos = full.points[full.labels == 1]
        neg = full.points[full.labels == 0]
        for p in GRID_POSITIVES:
            for n in GRID_NEGATIVES:
                pts = np.concatenate([pos[:p], neg[:n]]).astype(np.float32)
                lbl = np.array([1] * len(pos[:p]) + [0] * len(neg[:n]), np.int64)
                grid_sets.append(PromptSet(pts, lbl))
    for r in range(repeats):
        rng = np.random.default_rng(eval_seed(seed, q.name, q.intent, r + 1))
        robust_sets.append(sample_eval_prompts(q.inst, q.cls, q.intent, rng, 3, 3))
    return grid_sets, robust_sets
