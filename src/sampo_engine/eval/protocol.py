"""The paper's evaluation protocol (DESIGN.md §4) for several models on identical prompts.

:class:`EvalConfig` holds every option of ``sampo-engine eval`` (help text shared with the GUI);
:func:`run_evaluation` runs it:

1. open the test data, cut its images into crops at the model input size and build the
   (crop, intent) queries with seeded 3 + 3 prompts (:func:`~sampo_engine.eval.queries.make_queries`);
2. give some of the queries extra prompt sets: the prompt-sensitivity grid (the first p
   positives and n negatives of the query's own 3 + 3 set, p = 1–3, n = 0–3) and R random
   3 + 3 sets (robustness);
3. for each method — the base model without adapter, then each ``--adapter`` — encode each crop
   once, decode all its prompt sets, and score the IoU-head-selected slot and the best slot
   (oracle), the selected mask split into nuclei (PQ, AJI, detection F1), and, for every T2
   query, the model's answer to the T1 query of the same crop ("T1 answer as T2");
4. the trivial T2 row "all nuclei, perfectly segmented" (the T1 ground truth as every T2 answer);
5. aggregate (macro over queries as the paper's tables, pooled over pixels, per class, tissue,
   density bin) and write ``metrics.json``, ``per_query.csv``, ``report.md`` and the plots.

Nothing is written until the data, the adapters and the base checkpoint have been checked.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sampo_engine._config import option, to_jsonable
from sampo_engine._version import __version__
from sampo_engine.errors import Cancelled, CheckpointError, ConfigError, DataError
from sampo_engine.models.registry import MODEL_TYPES

TASKS = ("t1", "t2", "both")
DEVICES = ("auto", "cuda", "mps", "cpu")
EVAL_MARKER = "sampo_eval.json"
METRICS_FILE = "metrics.json"
METRICS_FORMAT = 1
#: Density bins over the number of nuclei (all classes) in a crop: (label, low, high) meaning
#: low <= n < high, except the last two, see :func:`density_bin`.
DENSITY_BINS = ("<20", "20-50", "50-100", ">100")
GRID_POSITIVES = (1, 2, 3)
GRID_NEGATIVES = (0, 1, 2, 3)


@dataclass
class EvalConfig:
    # data
    data: str = option("", "test data: a folder of images, or a PanNuke/CoNSeP/MoNuSeg layout")
    data_format: str = option(
        "auto",
        "dataset layout",
        flag="--format",
        choices=("auto", "folder", "pannuke", "consep", "monuseg"),
    )
    split: str = option("", "CoNSeP only: 'train' or 'test' (needed when the folder holds both)")
    folds: list[int] | None = option(
        None, "PanNuke only: fold number(s) to evaluate on (default: every fold found)"
    )
    task: str = option(
        "both", "t1 = all nuclei, t2 = nuclei of the prompted class, both", choices=TASKS
    )
    fraction: float = option(1.0, "seeded fraction of the test images to evaluate (for speed)")
    max_queries: int = option(
        0, "evaluate at most this many queries (whole crops kept, seeded choice); 0 = all"
    )
    out: str = option("", "output folder: metrics.json, report.md, per_query.csv, plots/")
    overwrite: bool = option(False, "replace an existing evaluation in --out")
    # models
    model: str = option(
        "",
        f"SAM architecture: {', '.join(MODEL_TYPES)} (default: the adapters' base model, else vit_b)",
    )
    checkpoint: str = option(
        "",
        "base weights (default: the base the adapters were trained on, else the cached official checkpoint; random for tiny)",
    )
    image_size: int = option(0, "model input size in px (0 = the adapters' size, else 224)")
    adapters: list[str] | None = option(
        None,
        "adapter bundle folder(s) to evaluate (repeatable); each becomes a row named after its bundle",
        flag="--adapter",
    )
    base: bool = option(True, "evaluate the base model without adapter too (--no-base skips it)")
    # protocol
    seed: int = option(0, "seed of the evaluation prompts and subsets (same seed, same prompts)")
    num_positive: int = option(3, "positive points per evaluation prompt set (1–3)")
    num_negative: int = option(3, "negative points per evaluation prompt set (0–3)")
    sensitivity_queries: int = option(
        200, "queries per task scored on the positives 1–3 × negatives 0–3 grid; 0 = skip"
    )
    robustness_repeats: int = option(
        5, "R: random 3 + 3 prompt sets per query for robustness (std of Dice); 0 = skip"
    )
    robustness_queries: int = option(
        200, "queries per task scored R times for robustness (a seeded subset)"
    )
    instances: bool = option(
        True, "instance metrics (PQ, AJI, detection F1) of the selected masks split into nuclei"
    )
    slot_rule: str = option(
        "iou",
        "which of SAM's 3 masks is scored: iou = the IoU head's pick (the paper's protocol); "
        "clicks = the one agreeing best with the prompt's points; auto = clicks for T2, iou for T1 "
        "(what the predictor does by default). The oracle columns are unaffected",
        choices=("iou", "clicks", "auto"),
    )
    classical: bool = option(
        False,
        "also score the classical floor (hematoxylin threshold + watershed; T2 keeps the "
        "nuclei that look like the positively clicked ones) on the same prompts",
    )
    whole_images: bool = option(
        False,
        "also segment every test image whole with the tiled predictor from 3 + 3 clicks in one "
        "tile (prompt propagation) and report whole-image Dice/IoU/PQ",
    )
    t2_modes: str = option(
        "decoder,exemplar,hybrid",
        "with --whole-images: the T2 modes scored side by side on the same clicks, comma-"
        "separated (decoder = SAM's decoder reads the type; exemplar = every nucleus classified "
        "from the clicked ones; hybrid = both; see docs/exemplars.md)",
    )
    match_radius: float = option(
        12.0,
        "with --whole-images: centroid distance (px) within which a predicted nucleus matches a "
        "true one for the per-class F1 (12 px = 3 µm at 40×, HoVer-Net's; use 6 at 20×)",
    )
    # compute
    batch_size: int = option(
        8, "queries per model call (the intents of one crop share its encoding)"
    )
    workers: int = option(
        0, "threads scoring the outputs (watershed split, instance matching); 0 = up to 8 CPUs"
    )
    device: str = option("auto", "auto = cuda, then mps, then cpu", choices=DEVICES)

    def validate(self) -> None:
        if not self.data:
            raise ConfigError("no test data: pass --data FOLDER")
        if self.model and self.model not in MODEL_TYPES:
            raise ConfigError(
                f"--model must be one of {', '.join(MODEL_TYPES)}, not {self.model!r}"
            )
        if not self.out:
            raise ConfigError("no output folder: pass --out FOLDER for the report")
        if self.task not in TASKS:
            raise ConfigError(f"--task must be one of {', '.join(TASKS)}, not {self.task!r}")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"--fraction must be in (0, 1], got {self.fraction}")
        if self.max_queries < 0:
            raise ConfigError("--max-queries must be ≥ 0 (0 = every query)")
        if self.image_size and (self.image_size % 16 or self.image_size < 0):
            raise ConfigError(
                f"--image-size {self.image_size} is not a positive multiple of 16; use e.g. 224"
            )
        if not 1 <= self.num_positive <= 3 or not 0 <= self.num_negative <= 3:
            raise ConfigError("prompts have 1–3 positive and 0–3 negative points")
        if min(self.sensitivity_queries, self.robustness_repeats, self.robustness_queries) < 0:
            raise ConfigError("--sensitivity-queries and --robustness-* must be ≥ 0")
        if self.batch_size < 1:
            raise ConfigError("--batch-size must be ≥ 1")
        if self.workers < 0:
            raise ConfigError("--workers must be ≥ 0 (0 = choose from the CPU count)")
        modes = [m.strip() for m in self.t2_modes.split(",") if m.strip()]
        from sampo_engine.predict.nucleus_classes import T2_MODES

        bad = [m for m in modes if m not in T2_MODES]
        if bad or not modes:
            raise ConfigError(
                f"--t2-modes {self.t2_modes!r}: use a comma-separated list of decoder, "
                f"exemplar, hybrid"
            )
        if self.match_radius <= 0:
            raise ConfigError(f"--match-radius must be > 0 px, got {self.match_radius}")
        if not self.base and not self.adapters and not self.classical:
            raise ConfigError(
                "nothing to evaluate: --no-base without any --adapter (or --classical)"
            )


# ------------------------------------------------------------------------------------ set-up


@dataclass
class Method:
    """One row of the report: the base model (adapter None) or an adapter bundle."""

    name: str
    kind: str  # 'base' | 'adapter'
    adapter: str | None = None
    info: object | None = None  # BundleInfo
    checkpoint: str | None = None  # base weights passed to load_model (None: its default)


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


def density_bin(num_nuclei: int) -> str:
    """The density label of a crop: <20, 20–50 (20 ≤ n < 50), 50–100 (50 ≤ n ≤ 100), >100."""
    if num_nuclei < 20:
        return "<20"
    if num_nuclei < 50:
        return "20-50"
    if num_nuclei <= 100:
        return "50-100"
    return ">100"


def _open_data(config: EvalConfig):
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


def _resolve_models(config: EvalConfig, log) -> tuple[list[Method], str, int, str | None]:
    """Read the bundles, check they fit one base model and input size, find the base weights."""
    from sampo_engine.models.build import DEFAULT_IMAGE_SIZE
    from sampo_engine.models.loading import checkpoint_sha256, resolve_checkpoint
    from sampo_engine.train.bundle import check_compatible, read_bundle

    infos = [read_bundle(a) for a in (config.adapters or [])]
    model_type = config.model or (infos[0].model_type if infos else "vit_b")
    image_size = config.image_size or (infos[0].image_size if infos else DEFAULT_IMAGE_SIZE)
    for info in infos:
        check_compatible(info, model_type, image_size)
    checkpoint = config.checkpoint or None
    if checkpoint is None:
        bases = [
            i.base_checkpoint
            for i in infos
            if i.kind == "lora" and i.base_checkpoint and Path(i.base_checkpoint).is_file()
        ]
        if bases:
            checkpoint = bases[0]
            if len(set(bases)) > 1:
                log(f"adapters were trained on different bases; the base row uses {checkpoint}")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise CheckpointError(f"checkpoint {checkpoint} not found; check --checkpoint")
    needs_base = config.base or any(i.kind == "lora" for i in infos)
    resolved = resolve_checkpoint(model_type, checkpoint) if needs_base else None
    sha = checkpoint_sha256(resolved) if resolved else None
    per_adapter: list[str | None] = []
    for adapter, info in zip(config.adapters or [], infos):
        own = info.base_checkpoint if info.kind == "lora" and info.base_checkpoint else None
        if info.kind != "lora":
            per_adapter.append(None)
        elif config.checkpoint or not own:
            check_compatible(info, model_type, image_size, sha)
            per_adapter.append(str(resolved) if resolved else None)
        elif Path(own).is_file():
            per_adapter.append(None)  # load_model takes the bundle's own base
        elif info.base_sha256 and info.base_sha256 == sha:
            per_adapter.append(str(resolved))
        else:
            raise CheckpointError(
                f"adapter {adapter} was trained on the base {own}, which is missing; pass that "
                f"base with --checkpoint FILE"
            )
    methods = []
    if config.base:
        methods.append(
            Method(
                f"{model_type} (no adapter)", "base", checkpoint=str(resolved) if resolved else None
            )
        )
    if config.classical:
        from sampo_engine.eval.classical import NAME

        methods.append(Method(NAME, "classical"))
    taken = {m.name for m in methods}
    for adapter, info, ckpt in zip(config.adapters or [], infos, per_adapter):
        stem = info.name or Path(adapter).name
        name, k = stem, 2
        while name in taken:
            name, k = f"{stem}#{k}", k + 1
        taken.add(name)
        methods.append(Method(name, "adapter", str(adapter), info, ckpt))
    return methods, model_type, image_size, str(resolved) if resolved else None


def _grid_and_robust_sets(q, seed: int, grid: bool, repeats: int) -> tuple[list, list]:
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


def plan_evaluation(config: EvalConfig, log=print) -> EvalPlan:
    """Check the data, adapters and weights, and build the queries and their prompt sets."""
    from sampo_engine.eval.queries import make_queries

    config.validate()
    dataset = _open_data(config)
    task = config.task
    if task == "both" and not dataset.has_classes:
        log("the test data has no classes: evaluating T1 only")
        task = "t1"
    methods, model_type, image_size, base_ckpt = _resolve_models(config, log)

    n = len(dataset)
    order = np.random.default_rng(config.seed).permutation(n)
    keep = max(1, round(n * config.fraction))
    image_indices = sorted(int(i) for i in order[:keep])
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
    tasks = ("t1", "t2") if task == "both" else (task,)
    if config.max_queries:
        crops: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            crops.setdefault(q.name, []).append(i)
        names = list(crops)
        chosen, count = set(), 0
        for k in np.random.default_rng(config.seed).permutation(len(names)):
            idx = crops[names[k]]
            n_rep = sum(queries[i].intent.task in tasks for i in idx)
            if count + n_rep > config.max_queries:
                continue
            chosen.add(names[k])
            count += n_rep
        queries = [q for q in queries if q.name in chosen]
    reported = [i for i, q in enumerate(queries) if q.intent.task in tasks]
    if not reported:
        what = {"t1": "nuclei", "t2": "classified nuclei", "both": "nuclei"}[task]
        raise DataError(
            f"empty test set: the {len(image_indices)} image(s) evaluated from {config.data} hold "
            f"no {what} for task {task}"
            + (" within --max-queries" if config.max_queries else "")
            + "; check the labels, --fraction and --max-queries"
        )
    crop_t1: dict[str, int] = {}
    crop_t2: dict[int, list[int]] = {}
    for i, q in enumerate(queries):
        if q.intent.task == "t1":
            crop_t1[q.name] = i
    for i in reported:
        q = queries[i]
        if q.intent.task == "t2" and q.name in crop_t1:
            crop_t2.setdefault(crop_t1[q.name], []).append(i)

    # seeded subsets per task for the sensitivity grid and robustness (nested: same order)
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
    return EvalPlan(
        dataset,
        queries,
        reported,
        crop_t2,
        prompt_sets,
        layout,
        methods,
        model_type,
        image_size,
        base_ckpt,
        image_indices,
    )


def prompts_digest(plan: EvalPlan) -> str:
    """SHA-256 of every query's name, intent and prompt sets, in order."""
    h = hashlib.sha256()
    for q, sets in zip(plan.queries, plan.prompt_sets):
        h.update(f"{q.name}|{q.intent.task}|{q.intent.class_id}".encode())
        for ps in sets:
            h.update(np.ascontiguousarray(ps.points, np.float32).tobytes())
            h.update(np.ascontiguousarray(ps.labels, np.int64).tobytes())
    return h.hexdigest()


def prepare_eval_dir(out: str | Path, overwrite: bool) -> Path:
    """A new or empty folder, or a previous evaluation with ``overwrite``; never a user's folder."""
    from sampo_engine.utils.atomic import write_json_atomic

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a folder for the evaluation report")
    if out.is_dir() and any(out.iterdir()):
        if not (out / EVAL_MARKER).is_file():
            raise ConfigError(
                f"--out {out} is a non-empty folder that is not a SAMPO evaluation; nothing was "
                f"written — choose a new or empty folder"
            )
        if not overwrite:
            raise ConfigError(
                f"--out {out} already holds a SAMPO evaluation; pass --overwrite to replace it"
            )
        for name in (EVAL_MARKER, METRICS_FILE, "report.md", "per_query.csv"):
            (out / name).unlink(missing_ok=True)
        for sub in ("plots", "curves"):
            shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        out / EVAL_MARKER, {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "complete": False}
    )
    return out


# ------------------------------------------------------------------------------------ scoring


def _overlap(pred: np.ndarray, target: np.ndarray) -> tuple[int, int, int]:
    return (
        int(np.count_nonzero(pred & target)),
        int(np.count_nonzero(pred)),
        int(np.count_nonzero(target)),
    )


def _scores(counts: tuple[int, int, int]) -> tuple[float, float]:
    """(Dice, IoU) of (|P∩T|, |P|, |T|); both empty → 1.0 (metrics.py's convention)."""
    inter, p, t = counts
    total = p + t
    if total == 0:
        return 1.0, 1.0
    return 2 * inter / total, inter / (total - inter)


def _score_slots(masks: np.ndarray, target: np.ndarray, slot: int) -> dict:
    """Selected-slot and oracle (best-Dice slot) scores and pixel counts of (3, S, S) masks."""
    counts = [_overlap(m, target) for m in masks]
    scores = [_scores(c) for c in counts]
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


def _slots(config: EvalConfig, query, prompt_sets, logits, iou_pred) -> np.ndarray:
    """The slot scored for each of the K prompt sets, by ``config.slot_rule``."""
    from sampo_engine.models.slots import select_slot

    rule = config.slot_rule
    if rule == "auto":
        rule = "clicks" if query.intent.task == "t2" else "iou"
    if rule == "iou":
        return iou_pred.argmax(axis=1)
    size = logits.shape[-1]
    return np.array(
        [
            select_slot(logits[k], iou_pred[k], ps.points, ps.labels, size, rule)
            for k, ps in enumerate(prompt_sets[: len(logits)])
        ]
    )


def _score_query(plan: EvalPlan, config: EvalConfig, i: int, logits, iou_pred, reported):
    """Every score of query ``i`` from its logits (K, 3, S, S): {query index: record part}."""
    from sampo_engine.eval.metrics import instance_metrics
    from sampo_engine.predict.instances import split_instances
    from sampo_engine.prompts import target_mask

    q = plan.queries[i]
    masks = logits > 0  # (K, 3, S, S)
    slots = _slots(config, q, plan.prompt_sets[i], logits, iou_pred)  # (K,) one slot per prompt set
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
                _scores(_overlap(masks[k, slots[k]], target)) for k in range(a, b)
            ]  # (Dice, IoU) per grid cell, positives-major
        if lay["robust"]:
            a, b = lay["robust"]
            rec["robust"] = [_scores(_overlap(masks[k, slots[k]], target))[0] for k in range(a, b)]
        out[i] = rec
    for j in plan.crop_t2.get(i, []):  # this T1 answer scored as the T2 queries of its crop
        t2_target = target_mask(q.inst, q.cls, plan.queries[j].intent)
        as_t2 = _score_slots(masks[0], t2_target, int(slots[0]))
        if pred_inst is not None:
            as_t2["instances"] = instance_metrics(np.where(t2_target, q.inst, 0), pred_inst)
        out.setdefault(j, {})["t1_as_t2"] = as_t2
    return out


def score_method(
    model,
    plan: EvalPlan,
    config: EvalConfig,
    device=None,
    progress: Callable[[int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> tuple[dict[int, dict], str]:
    """Per-query records of one model on the plan's queries, and the digest of its prompts.

    The model runs in this thread; the per-query scoring (thresholds, overlaps, the watershed
    split and instance matching — the costly part on a GPU machine) runs in a thread pool of
    ``config.workers`` beside it.
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from sampo_engine.eval.queries import predict_queries

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
    from sampo_engine.eval.metrics import instance_metrics

    records = {}
    for i in plan.reported:
        q = plan.queries[i]
        if q.intent.task != "t2":
            continue
        pred = q.inst > 0
        counts = _overlap(pred, q.target)
        d, u = _scores(counts)
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


# ------------------------------------------------------------------------------------ summaries


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
        d, u = _scores((inter, total, 0)) if total else (1.0, 1.0)
        out[f"{prefix}_dice"], out[f"{prefix}_iou"] = d, u
    return out


def _instance_block(recs: list[dict]) -> dict:
    from sampo_engine.eval.metrics import pooled_instance_metrics

    rows = [r["instances"] for r in recs if "instances" in r]
    if not rows:
        return {}
    out = {"n": len(rows)}
    for key in ("pq", "dq", "sq", "aji", "f1", "precision", "recall"):
        out[key] = _nanmean(r[key] for r in rows)
    out["pooled"] = pooled_instance_metrics(rows)
    return out


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
            arr = np.asarray(grid, float)  # (n, 12, 2)
            shape = (len(GRID_POSITIVES), len(GRID_NEGATIVES))
            out.setdefault("sensitivity", {})[task] = {
                "n": len(grid),
                "positives": list(GRID_POSITIVES),
                "negatives": list(GRID_NEGATIVES),
                "dice": arr[:, :, 0].mean(0).reshape(shape).tolist(),
                "iou": arr[:, :, 1].mean(0).reshape(shape).tolist(),
            }
        robust = [records[i]["robust"] for i in idx if "robust" in records[i]]
        if robust:
            arr = np.asarray(robust, float)  # (n, R)
            out.setdefault("robustness", {})[task] = {
                "n": len(robust),
                "repeats": int(arr.shape[1]),
                "mean_std_dice": float(arr.std(axis=1).mean()),
                "mean_dice": float(arr.mean()),
                "max_std_dice": float(arr.std(axis=1).max()),
            }
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


# ------------------------------------------------------------------------------------ driver


@dataclass
class EvalResult:
    out: Path
    metrics: dict = field(default_factory=dict)


def _per_query_csv(plan: EvalPlan, methods: list[dict], records: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    head = ["query", "sample", "row", "col", "task", "class_id", "tissue", "nuclei", "density"]
    for m in methods:
        head += [f"{m['name']}:{k}" for k in ("dice", "iou", "oracle_dice", "oracle_iou", "slot")]
        if m["kind"] != "trivial":
            head += [f"{m['name']}:pq", f"{m['name']}:t1_as_t2_dice"]
    writer.writerow(head)
    for i in plan.reported:
        q = plan.queries[i]
        row = [q.name, q.sample_name, q.origin[0], q.origin[1], q.intent.task]
        row += [q.intent.class_id if q.intent.task == "t2" else "", q.tissue or ""]
        row += [q.num_nuclei, density_bin(q.num_nuclei)]
        for m, recs in zip(methods, records):
            r = recs.get(i, {})
            for k in ("dice", "iou", "oracle_dice", "oracle_iou"):
                row.append(f"{r[k]:.6f}" if k in r else "")
            row.append(r.get("slot", ""))
            if m["kind"] != "trivial":
                pq = r.get("instances", {}).get("pq")
                row.append("" if pq is None or pq != pq else f"{pq:.6f}")
                t = r.get("t1_as_t2")
                row.append(f"{t['dice']:.6f}" if t else "")
        writer.writerow(row)
    return buf.getvalue()


def _copy_curves(methods: list[Method], out: Path) -> dict[str, str]:
    from sampo_engine.utils.atomic import atomic_path

    curves = {}
    for m in methods:
        src = Path(m.adapter) / "loss_curve.png" if m.adapter else None
        if src is None or not src.is_file():
            continue
        slug = _slug(m.name)
        dest = out / "curves" / f"{slug}_loss_curve.png"
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
        curves[m.name] = str(dest.relative_to(out))
    return curves


def _slug(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return keep.strip("_") or "method"


def run_evaluation(
    config: EvalConfig,
    progress: Callable[[int, int, str], None] | None = None,
    log: Callable[[str], None] = print,
    stop: Callable[[], bool] | None = None,
) -> EvalResult:
    """Run the protocol and write the report; returns the output folder and the metrics.

    ``progress(done, total, method_name)`` counts scored queries over all methods; ``stop`` is
    polled after every batch (a true value raises :class:`~sampo_engine.errors.Cancelled`).
    """
    from sampo_engine.data.detect import describe
    from sampo_engine.eval.report import write_report
    from sampo_engine.utils.atomic import write_json_atomic, write_text_atomic
    from sampo_engine.utils.device import resolve_device, seed_everything

    t_start = time.perf_counter()
    plan = plan_evaluation(config, log)
    device = resolve_device(config.device)
    out = prepare_eval_dir(config.out, config.overwrite)
    digest = prompts_digest(plan)
    n_reported = {
        t: sum(plan.queries[i].intent.task == t for i in plan.reported) for t in ("t1", "t2")
    }
    log(
        f"{describe(plan.dataset)}; evaluating {len(plan.image_indices)} image(s): "
        + ", ".join(f"{n} {t.upper()} queries" for t, n in n_reported.items() if n)
        + f" × {len(plan.methods)} method(s) on {device}"
    )
    total = len(plan.queries) * len(plan.methods)
    done = [0]
    class_names = dict(plan.dataset.class_names)

    method_entries, method_records = [], []
    for m in plan.methods:
        import torch

        from sampo_engine.models.loading import load_model

        t0 = time.perf_counter()
        seed_everything(config.seed)  # random weights (tiny without checkpoint) are reproducible
        if m.kind == "classical":
            from sampo_engine.eval.classical import ClassicalFloor

            model = ClassicalFloor()
        else:
            model = load_model(
                plan.model_type,
                m.checkpoint,
                m.adapter,
                plan.image_size,
                device,
            )

        def tick(k: int, name=m.name) -> None:
            done[0] += k
            if progress is not None:
                progress(done[0], total, name)

        whole = None
        try:
            records, fed = score_method(model, plan, config, device, tick, stop)
            if config.whole_images:
                from sampo_engine.eval.whole import score_whole_images, summarize_whole

                log(f"{m.name}: whole images with the tiled predictor")
                modes = [t.strip() for t in config.t2_modes.split(",") if t.strip()]
                if m.kind == "classical":  # no decoder: its own rule stands in ('decoder')
                    modes = [t for t in modes if t != "hybrid"] or ["exemplar"]
                rows = score_whole_images(
                    model, plan.dataset, plan.image_indices, config.task, config.seed,
                    str(device), config.instances, slot_rule=config.slot_rule,
                    t2_modes=modes, match_radius=config.match_radius,
                )  # fmt: skip
                whole = summarize_whole(rows)
        except torch.cuda.OutOfMemoryError:
            raise ConfigError(
                f"out of GPU memory at --batch-size {config.batch_size}; pass a smaller one"
            ) from None
        finally:
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
        entry = {
            "name": m.name,
            "kind": m.kind,
            "adapter": m.adapter,
            "prompts_sha256": fed,
            "seconds": time.perf_counter() - t0,
            **aggregate(plan.queries, plan.reported, records, class_names),
        }
        if whole is not None:
            entry["whole_image"] = whole
        if m.info is not None:
            info = m.info
            entry["bundle"] = {
                "name": info.name,
                "kind": info.kind,
                "rank": info.rank,
                "task": info.task,
                "epochs_done": info.epochs_done,
                "complete": info.complete,
                "base_checkpoint": info.base_checkpoint,
                "config": info.config,
            }
        t1_as_t2 = {i: r["t1_as_t2"] for i, r in records.items() if "t1_as_t2" in r}
        if t1_as_t2:
            entry["t1_as_t2"] = aggregate(plan.queries, plan.reported, t1_as_t2, class_names)
        method_entries.append(entry)
        method_records.append(records)

    trivial = []
    if any(plan.queries[i].intent.task == "t2" for i in plan.reported):
        recs = trivial_all_nuclei(plan, config.instances)
        trivial.append(
            {
                "name": "all nuclei, perfect (trivial)",
                "kind": "trivial",
                **aggregate(plan.queries, plan.reported, recs, class_names),
            }
        )
        csv_methods = method_entries + trivial
        csv_records = method_records + [recs]
    else:
        csv_methods, csv_records = method_entries, method_records

    paired = []
    base_idx = next((k for k, m in enumerate(plan.methods) if m.kind == "base"), None)
    if base_idx is not None:
        for k, m in enumerate(plan.methods):
            if k == base_idx:
                continue
            for t in ("t1", "t2"):
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

    curves = _copy_curves(plan.methods, out)
    metrics = {
        "format": "sampo-eval",
        "format_version": METRICS_FORMAT,
        "package_version": __version__,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "config": to_jsonable(config),
        "data": {
            "path": str(config.data),
            "format": plan.dataset.format,
            "description": describe(plan.dataset),
            "images_total": len(plan.dataset),
            "images_evaluated": len(plan.image_indices),
            "class_names": {str(k): v for k, v in class_names.items()},
            "crops": len({plan.queries[i].name for i in plan.reported}),
            "queries": {t: n for t, n in n_reported.items() if n},
        },
        "model": {
            "model_type": plan.model_type,
            "image_size": plan.image_size,
            "base_checkpoint": plan.base_checkpoint,
        },
        "protocol": {
            "seed": config.seed,
            "num_positive": config.num_positive,
            "num_negative": config.num_negative,
            "density_bins": list(DENSITY_BINS),
            "sensitivity_queries": config.sensitivity_queries,
            "robustness_repeats": config.robustness_repeats,
            "robustness_queries": config.robustness_queries,
            "instance_match_iou": 0.5,
            "percent": False,
        },
        "prompts_sha256": digest,
        "methods": method_entries,
        "baselines": trivial,
        "paired": paired,
        "curves": curves,
        "seconds": time.perf_counter() - t_start,
    }
    write_text_atomic(out / "per_query.csv", _per_query_csv(plan, csv_methods, csv_records))
    write_json_atomic(out / METRICS_FILE, _jsonable(metrics))
    write_report(metrics, out, log=log)
    write_json_atomic(
        out / EVAL_MARKER,
        {"written": metrics["written"], "complete": True, "prompts_sha256": digest},
    )
    return EvalResult(out, metrics)


def _jsonable(obj):
    """NaN/inf → None (strict JSON), numpy scalars → Python, tuples → lists."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
