"""The paper's experiment grid: train every configuration, evaluate all on the same held-out
data and prompts, and gather one report (``sampo-engine experiments``).

The grid (paper §4, Tables 1–4; the ablation, α and rank tables are run at the smallest data
fraction, as the paper's numbers show — its Table 2–4 "full" rows equal Table 1's 10 % row):

- ``main`` (Table 1): each data fraction × {LoRA with L_sup only, SAMPO}; the base model
  without adapter (zero-shot) is evaluated once beside them;
- ``ablation`` (Table 2): the six on/off combinations of L_inter, L_intra, L_sup the paper lists;
- ``alpha`` (Table 3): the preference weight α;
- ``rank`` (Table 4): the LoRA rank.

Identical configurations are trained once; every configuration is trained once per seed and
reported as mean ± standard deviation over seeds. Every run is a normal adapter bundle under
``OUT/runs/<name>``; the evaluation of all of them together is ``OUT/eval`` (its report.md holds
every breakdown); the gathered tables are ``OUT/experiments.md`` and ``OUT/experiments.json``.

Presets: ``smoke`` — the ``tiny`` model on generated data, on CPU in a minute or two (a base is
pretrained once with every weight trainable, the LoRA grid runs on top of it); ``paper`` —
vit_b from the official checkpoint with the paper's values (GPU, hours). Any preset value can be
overridden by its option. An interrupted grid continues with ``--resume`` (finished runs are
kept, an interrupted one resumes from its checkpoint).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from sampo_engine._config import option
from sampo_engine._version import __version__
from sampo_engine.errors import ConfigError, DataError
from sampo_engine.models.registry import MODEL_TYPES

TABLES = ("main", "ablation", "alpha", "rank")
MARKER = "sampo_experiments.json"
DATASET_FORMATS = ("auto", "folder", "pannuke", "consep", "monuseg")

#: Table 2 rows, in the paper's order: (L_inter, L_intra, L_sup) switched on.
ABLATION_ROWS = (
    (True, True, True),
    (False, True, True),
    (True, False, True),
    (True, True, False),
    (False, False, True),
    (True, False, False),
)


@dataclass(frozen=True)
class Preset:
    model: str
    epochs: int
    max_steps: int
    batch_size: int
    lr: float
    lora_rank: int
    fractions: tuple[float, ...]
    ablation_fraction: float
    alphas: tuple[float, ...]
    ranks: tuple[int, ...]
    seeds: tuple[int, ...]
    pretrain_epochs: int  # models without pretrained weights: epochs of the --full base
    eval_sensitivity_queries: int
    eval_robustness_repeats: int
    eval_robustness_queries: int
    eval_max_queries: int
    eval_batch_size: int
    synthetic_train: int = 0  # images generated when no --train-data is given (smoke only)
    synthetic_test: int = 0


PRESETS = {
    "smoke": Preset(
        model="tiny",
        epochs=1,
        max_steps=2,
        batch_size=2,
        lr=2e-3,
        lora_rank=4,
        fractions=(0.5, 1.0),
        ablation_fraction=0.5,
        alphas=(0.5, 1.0),
        ranks=(2, 4),
        seeds=(0,),
        pretrain_epochs=2,
        eval_sensitivity_queries=4,
        eval_robustness_repeats=3,
        eval_robustness_queries=4,
        eval_max_queries=0,
        eval_batch_size=8,
        synthetic_train=6,
        synthetic_test=2,
    ),
    "paper": Preset(
        model="vit_b",
        epochs=10,
        max_steps=0,
        batch_size=8,
        lr=3e-4,
        lora_rank=64,
        fractions=(0.1, 0.2, 0.3, 1.0),
        ablation_fraction=0.1,
        alphas=(0.1, 0.5, 1.0, 2.0),
        ranks=(4, 8, 32, 64),
        seeds=(0, 1, 2),
        pretrain_epochs=0,
        eval_sensitivity_queries=500,
        eval_robustness_repeats=5,
        eval_robustness_queries=500,
        eval_max_queries=0,
        eval_batch_size=32,
    ),
}


@dataclass
class ExperimentsConfig:
    preset: str = option(
        "smoke",
        "smoke = tiny on generated data (CPU, 1–2 min); paper = vit_b with the paper's grid (GPU)",
        choices=tuple(PRESETS),
    )
    # data
    train_data: str = option(
        "", "training data (any supported layout); smoke: generated in OUT/data when empty"
    )
    train_format: str = option("auto", "layout of --train-data", choices=DATASET_FORMATS)
    train_split: str = option("", "CoNSeP: split of --train-data (train)")
    train_folds: list[int] | None = option(None, "PanNuke: fold(s) of --train-data (e.g. 1)")
    test_data: str = option("", "held-out test data (whole images never seen in training)")
    test_format: str = option("auto", "layout of --test-data", choices=DATASET_FORMATS)
    test_split: str = option("", "CoNSeP: split of --test-data (test)")
    test_folds: list[int] | None = option(None, "PanNuke: fold(s) of --test-data (e.g. 3)")
    dataset_name: str = option("", "dataset label in the tables (default: from the layout)")
    # grid
    tables: list[str] | None = option(None, f"tables to run: {', '.join(TABLES)} (default: all)")
    seeds: list[int] | None = option(None, "training seeds (default: smoke 0; paper 0 1 2)")
    fractions: list[float] | None = option(None, "data fractions of Table 1 (default: preset)")
    ablation_fraction: float = option(
        0.0, "data fraction of Tables 2–4 (0 = preset: the smallest fraction, as the paper)"
    )
    alphas: list[float] | None = option(None, "α values of Table 3 (default: preset)")
    ranks: list[int] | None = option(None, "LoRA ranks of Table 4 (default: preset)")
    train_task: str = option(
        "both", "task the adapters are trained on (t1, t2, both)", choices=("t1", "t2", "both")
    )
    eval_task: str = option("both", "tasks evaluated", choices=("t1", "t2", "both"))
    # training (0 / -1 = the preset's value)
    model: str = option("", f"SAM architecture: {', '.join(MODEL_TYPES)} (default: preset)")
    checkpoint: str = option(
        "",
        "base weights (default: the official checkpoint; for models without one, a base pretrained here with --full)",
    )
    image_size: int = option(224, "model input size in px (the paper: 224)")
    epochs: int = option(0, "epochs per run (0 = preset: smoke 1, paper 10)")
    max_steps: int = option(-1, "optimiser steps per run (-1 = preset: smoke 2; 0 = no limit)")
    batch_size: int = option(0, "images per training step (0 = preset: smoke 2, paper 8)")
    lr: float = option(0.0, "learning rate (0 = preset: smoke 2e-3, paper 3e-4)")
    lora_rank: int = option(0, "LoRA rank outside Table 4 (0 = preset: smoke 4, paper 64)")
    pretrain_epochs: int = option(
        0, "epochs of the --full base for models without weights (0 = preset)"
    )
    # evaluation
    eval_max_queries: int = option(-1, "evaluate at most this many queries (-1 = preset: all)")
    eval_seed: int = option(0, "seed of the evaluation prompts (identical for every run)")
    # run
    out: str = option("", "output folder: runs/, eval/, experiments.md, experiments.json")
    resume: bool = option(False, "continue a grid in --out: keep finished runs, resume the rest")
    overwrite: bool = option(False, "start the grid in --out again from scratch")
    device: str = option(
        "auto", "auto = cuda, then mps, then cpu", choices=("auto", "cuda", "mps", "cpu")
    )
    dry_run: bool = option(False, "print the planned runs as sampo-engine commands and stop")

    def settings(self) -> Preset:
        """The preset with every option given on the command line applied."""
        p = PRESETS[self.preset]
        over = {
            "model": self.model or None,
            "epochs": self.epochs or None,
            "max_steps": None if self.max_steps < 0 else self.max_steps,
            "batch_size": self.batch_size or None,
            "lr": self.lr or None,
            "lora_rank": self.lora_rank or None,
            "fractions": tuple(self.fractions) if self.fractions else None,
            "alphas": tuple(self.alphas) if self.alphas else None,
            "ranks": tuple(self.ranks) if self.ranks else None,
            "seeds": tuple(self.seeds) if self.seeds else None,
            "pretrain_epochs": self.pretrain_epochs or None,
            "eval_max_queries": None if self.eval_max_queries < 0 else self.eval_max_queries,
        }
        p = replace(p, **{k: v for k, v in over.items() if v is not None})
        if self.ablation_fraction:
            p = replace(p, ablation_fraction=self.ablation_fraction)
        elif self.fractions:
            p = replace(p, ablation_fraction=min(self.fractions))
        return p

    def validate(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}")
        if not self.out:
            raise ConfigError("no output folder: pass --out FOLDER")
        if self.model and self.model not in MODEL_TYPES:
            raise ConfigError(f"--model must be one of {', '.join(MODEL_TYPES)}")
        bad = [t for t in self.tables or () if t not in TABLES]
        if bad:
            raise ConfigError(f"unknown table(s) {bad}; choose among {', '.join(TABLES)}")
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; pick one")
        p = self.settings()
        if not p.synthetic_train and not (self.train_data and self.test_data):
            raise ConfigError(
                f"the {self.preset} preset needs --train-data and --test-data (held-out whole "
                f"images, e.g. PanNuke --train-folds 1 --test-folds 3, or CoNSeP --train-split "
                f"train --test-split test)"
            )
        if bool(self.train_data) != bool(self.test_data):
            raise ConfigError("pass both --train-data and --test-data (or neither, smoke only)")
        for f in (*p.fractions, p.ablation_fraction):
            if not 0 < f <= 1:
                raise ConfigError(f"data fractions must be in (0, 1], got {f}")
        if any(r < 1 for r in (*p.ranks, p.lora_rank)):
            raise ConfigError("LoRA ranks must be ≥ 1")
        if any(a < 0 for a in p.alphas):
            raise ConfigError("α values must be ≥ 0")
        if self.image_size <= 0 or self.image_size % 16:
            raise ConfigError(f"--image-size {self.image_size} is not a positive multiple of 16")


@dataclass(frozen=True)
class RunSpec:
    """One training configuration; ``key`` identifies it across seeds."""

    fraction: float
    alpha: float = 1.0
    rank: int = 64
    inter: bool = True
    intra: bool = True
    sup: bool = True
    seed: int = 0

    @property
    def key(self) -> tuple:
        return (self.fraction, self.alpha, self.rank, self.inter, self.intra, self.sup)

    @property
    def variant(self) -> str:
        terms = (self.inter, self.intra, self.sup)
        if all(terms):
            return "sampo"
        if terms == (False, False, True):
            return "lsup"
        return "+".join(n for n, on in zip(("inter", "intra", "sup"), terms) if on)

    def name(self, default_rank: int) -> str:
        parts = [f"f{round(self.fraction * 100)}", self.variant]
        if self.alpha != 1.0:
            parts.append(f"a{self.alpha:g}")
        if self.rank != default_rank:
            parts.append(f"r{self.rank}")
        return "-".join(parts) + f"-s{self.seed}"


def plan_runs(p: Preset, tables) -> tuple[list[RunSpec], dict[str, list[RunSpec]]]:
    """The unique runs (every seed) and, per table, its rows (seed 0 of each config)."""
    tables = tuple(tables or TABLES)
    rows: dict[str, list[RunSpec]] = {}
    f_abl, r0 = p.ablation_fraction, p.lora_rank
    if "main" in tables:
        rows["main"] = []
        for f in p.fractions:
            rows["main"] += [
                RunSpec(f, rank=r0, inter=False, intra=False),
                RunSpec(f, rank=r0),
            ]
    if "ablation" in tables:
        rows["ablation"] = [
            RunSpec(f_abl, rank=r0, inter=a, intra=b, sup=c) for a, b, c in ABLATION_ROWS
        ]
    if "alpha" in tables:
        rows["alpha"] = [RunSpec(f_abl, alpha=a, rank=r0) for a in p.alphas]
    if "rank" in tables:
        rows["rank"] = [RunSpec(f_abl, rank=r) for r in p.ranks]
    unique: dict[tuple, RunSpec] = {}
    for specs in rows.values():
        for spec in specs:
            for seed in p.seeds:
                s = replace(spec, seed=seed)
                unique.setdefault((*s.key, seed), s)
    return list(unique.values()), rows


# ------------------------------------------------------------------------------------ set-up


def _prepare_out(out: Path, resume: bool, overwrite: bool) -> None:
    from sampo_engine.utils.atomic import write_json_atomic

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise ConfigError(
                f"--out {out} is a non-empty folder that is not a SAMPO experiment grid; nothing "
                f"was written — choose a new or empty folder"
            )
        if not (resume or overwrite):
            raise ConfigError(
                f"--out {out} already holds an experiment grid; pass --resume to continue it or "
                f"--overwrite to start again"
            )
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / MARKER, {"started": time.strftime("%Y-%m-%dT%H:%M:%S")})


def _synthetic_data(out: Path, p: Preset) -> tuple[Path, Path]:
    """Generated train and test folders (different seeds: no test image is a training image)."""
    from sampo_engine.data.folder import write_folder
    from sampo_engine.data.synthetic import make_synthetic_dataset

    paths = []
    for name, n, seed in (("train", p.synthetic_train, 0), ("test", p.synthetic_test, 1000)):
        path = out / "data" / name
        if not (path / "meta.json").is_file():
            write_folder(make_synthetic_dataset(n, 224, seed=seed), path)
        paths.append(path)
    return paths[0], paths[1]


def _open(path, fmt, split, folds):
    from sampo_engine.data.detect import open_dataset

    dataset = open_dataset(path, format=fmt, split=split or None, folds=folds or None)
    if len(dataset) == 0:
        raise DataError(f"no images in {path}")
    return dataset


def _train_config(
    config: ExperimentsConfig, p: Preset, spec: RunSpec, data: str, out: Path, checkpoint
):
    from sampo_engine.train.config import TrainConfig

    return TrainConfig(
        data=data,
        data_format=config.train_format,
        task=config.train_task,
        fraction=spec.fraction,
        val_fraction=0.0,  # the held-out test set is evaluated instead; fractions stay exact
        out=str(out),
        model=p.model,
        checkpoint=str(checkpoint or ""),
        image_size=config.image_size,
        lora_rank=spec.rank,
        alpha=spec.alpha,
        no_inter=not spec.inter,
        no_intra=not spec.intra,
        no_sup=not spec.sup,
        epochs=p.epochs,
        max_steps=p.max_steps,
        batch_size=p.batch_size,
        lr=p.lr,
        seed=spec.seed,
        device=config.device,
        name=out.name,
    )


_COMPARED = ("model", "fraction", "lora_rank", "alpha", "no_inter", "no_intra", "no_sup", "seed",
             "epochs", "max_steps", "batch_size", "lr", "full")  # fmt: skip


def train_command(cfg, extra: dict | None = None) -> str:
    """The ``sampo-engine train`` command line of a TrainConfig (non-default options only)."""
    from dataclasses import fields

    from sampo_engine._config import _flag
    from sampo_engine.train.config import TrainConfig

    default = TrainConfig()
    args = ["sampo-engine", "train"]
    for f in fields(TrainConfig):
        value = getattr(cfg, f.name)
        if value == getattr(default, f.name) or f.name in ("device",):
            continue
        flag = _flag(f)
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, str(value)]
    for k, v in (extra or {}).items():
        args += [k, str(v)]
    return shlex.join(args)


def _train(cfg, dataset, resume_ok: bool, quiet: bool, log) -> str:
    """Train one run unless an identical finished bundle is there; returns what happened."""
    from tqdm.auto import tqdm

    from sampo_engine.train.bundle import BUNDLE_FILE, read_bundle
    from sampo_engine.train.trainer import Trainer

    out = Path(cfg.out)
    if out.is_dir() and any(out.iterdir()):
        if (out / BUNDLE_FILE).is_file():
            info = read_bundle(out)
            planned = {k: getattr(cfg, k) for k in _COMPARED}
            had = {k: info.config.get(k) for k in _COMPARED}
            if resume_ok and info.complete and planned == had:
                return "kept"
            if resume_ok and planned != had:
                diff = {k: (had[k], planned[k]) for k in _COMPARED if had[k] != planned[k]}
                raise ConfigError(
                    f"run {out} was trained with other settings {diff} (had, planned); pass "
                    f"--overwrite to retrain the grid"
                )
        if resume_ok and (out / "checkpoint.pt").is_file():
            cfg = replace(cfg, resume=True)
        else:
            cfg = replace(cfg, overwrite=True)
    trainer = Trainer(cfg, dataset=dataset, log=log)
    bar = tqdm(
        total=trainer.total_steps,
        initial=trainer.global_step,
        desc=out.name,
        unit="step",
        disable=quiet,
        leave=False,
    )
    for event in trainer.steps():
        if event.kind == "step":
            bar.update(1)
            bar.set_postfix(loss=f"{event.metrics['loss']:.3f}", refresh=False)
    bar.close()
    return "resumed" if cfg.resume else "trained"


# ------------------------------------------------------------------------------------ driver


@dataclass
class ExperimentsResult:
    out: Path
    summary: dict = field(default_factory=dict)


def run_experiments(
    config: ExperimentsConfig, log: Callable[[str], None] = print, quiet: bool = False
) -> ExperimentsResult:
    """Train the grid, evaluate every run on the same queries, write the gathered report."""
    from sampo_engine.data.detect import DISPLAY_NAMES
    from sampo_engine.eval.protocol import EvalConfig, run_evaluation
    from sampo_engine.models.loading import resolve_checkpoint
    from sampo_engine.models.registry import get_spec
    from sampo_engine.utils.atomic import write_json_atomic, write_text_atomic

    config.validate()
    p = config.settings()
    out = Path(config.out)
    runs, rows = plan_runs(p, config.tables)
    needs_pretrain = not config.checkpoint and not get_spec(p.model).pretrained
    if config.dry_run:
        _print_plan(config, p, runs, out, needs_pretrain, log)
        return ExperimentsResult(out, {"runs": [r.name(p.lora_rank) for r in runs]})

    t0 = time.perf_counter()
    # every check that can fail before hours of training
    if config.train_data:
        train_path, test_path = Path(config.train_data), Path(config.test_data)
        for path, fmt, split, folds in (
            (train_path, config.train_format, config.train_split, config.train_folds),
            (test_path, config.test_format, config.test_split, config.test_folds),
        ):
            _open(path, fmt, split, folds)
    checkpoint = None
    if not needs_pretrain:
        checkpoint = resolve_checkpoint(p.model, config.checkpoint or None)
    _prepare_out(out, config.resume, config.overwrite)
    if not config.train_data:
        train_path, test_path = _synthetic_data(out, p)
        train_fmt = test_fmt = "folder"
        train_split = test_split = ""
        train_folds = test_folds = None
    else:
        train_fmt, test_fmt = config.train_format, config.test_format
        train_split, test_split = config.train_split, config.test_split
        train_folds, test_folds = config.train_folds, config.test_folds
    train_set = _open(train_path, train_fmt, train_split, train_folds)
    test_set = _open(test_path, test_fmt, test_split, test_folds)
    for what, ds, task in (
        ("--train-data", train_set, config.train_task),
        ("--test-data", test_set, config.eval_task),
    ):
        if task == "t2" and not ds.has_classes:
            raise ConfigError(f"T2 needs class labels, but {what} has none; use t1 or both")
    label = config.dataset_name or (
        DISPLAY_NAMES.get(test_set.format, test_set.format) if config.train_data else "synthetic"
    )
    resume_ok = not config.overwrite

    if needs_pretrain:
        base_spec = RunSpec(1.0, alpha=0.0, rank=p.lora_rank, inter=False, intra=False, seed=0)
        cfg = _train_config(config, p, base_spec, str(train_path), out / "runs" / "base", None)
        cfg = replace(cfg, full=True, epochs=p.pretrain_epochs, max_steps=0, alpha=1.0)
        log(
            f"[base] pretraining {p.model} with every weight trainable ({p.pretrain_epochs} epoch(s))"
        )
        _train(cfg, train_set, resume_ok, quiet, log)
        checkpoint = out / "runs" / "base" / "base.pth"

    adapters = []
    for k, spec in enumerate(runs, 1):
        name = spec.name(p.lora_rank)
        cfg = _train_config(config, p, spec, str(train_path), out / "runs" / name, checkpoint)
        started = time.perf_counter()
        what = _train(cfg, train_set, resume_ok, quiet, log)
        log(f"[{k}/{len(runs)}] {name}: {what} in {time.perf_counter() - started:.0f} s")
        adapters.append(str(out / "runs" / name))

    eval_config = EvalConfig(
        data=str(test_path),
        data_format=test_fmt,
        split=test_split,
        folds=list(test_folds) if test_folds else None,
        task=config.eval_task,
        max_queries=p.eval_max_queries,
        out=str(out / "eval"),
        overwrite=True,
        model=p.model,
        checkpoint=str(checkpoint or ""),
        adapters=adapters,
        base=True,
        seed=config.eval_seed,
        sensitivity_queries=p.eval_sensitivity_queries,
        robustness_repeats=p.eval_robustness_repeats,
        robustness_queries=p.eval_robustness_queries,
        batch_size=p.eval_batch_size,
        device=config.device,
    )
    if (out / "eval").is_dir() and not (out / "eval" / "sampo_eval.json").is_file():
        raise ConfigError(f"{out / 'eval'} is not an evaluation folder; move it away")
    log(f"evaluating {len(adapters)} run(s) and the base model on {test_path}")
    evaluation = run_evaluation(eval_config, log=log)
    metrics = evaluation.metrics

    by_name = {m["name"]: m for m in metrics["methods"]}
    results = {}
    for spec in runs:
        name = spec.name(p.lora_rank)
        results[name] = _result_of(by_name[name])
    base_entry = next(m for m in metrics["methods"] if m["kind"] == "base")
    summary = {
        "format": "sampo-experiments",
        "format_version": 1,
        "package_version": __version__,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "preset": config.preset,
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in p.__dict__.items()},
        "datasets": [
            {
                "label": label,
                "train": str(train_path),
                "test": str(test_path),
                "eval": str((out / "eval").resolve()),
                "tasks": list(metrics["data"]["queries"]),
                "queries": metrics["data"]["queries"],
                "prompts_sha256": metrics["prompts_sha256"],
                "base": {"name": base_entry["name"], **_result_of(base_entry)},
                "trivial": [
                    {"name": b["name"], **_result_of(b)} for b in metrics.get("baselines", [])
                ],
                "runs": [
                    {"name": s.name(p.lora_rank), **s.__dict__, "key": list(s.key)} for s in runs
                ],
                "results": results,
            }
        ],
        "tables": {t: [list(s.key) for s in specs] for t, specs in rows.items()},
        "default_rank": p.lora_rank,
        "seconds": time.perf_counter() - t0,
    }
    summary = _strict(summary)
    write_json_atomic(out / "experiments.json", summary)
    write_text_atomic(out / "experiments.md", render_experiments([summary], out))
    return ExperimentsResult(out, summary)


def _result_of(entry: dict) -> dict:
    out = {}
    for task, s in entry.get("summary", {}).items():
        row = {k: s.get(k) for k in ("n", "iou", "dice", "oracle_iou", "oracle_dice")}
        inst = entry.get("instances", {}).get(task, {})
        row.update({k: inst.get(k) for k in ("pq", "aji", "f1")})
        rob = entry.get("robustness", {}).get(task)
        row["robustness_std_dice"] = rob["mean_std_dice"] if rob else None
        out[task] = row
    return out


def _strict(obj):
    if isinstance(obj, dict):
        return {str(k): _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _print_plan(config, p, runs, out, needs_pretrain, log) -> None:
    data = config.train_data or str(out / "data" / "train")
    checkpoint = config.checkpoint or (
        str(out / "runs" / "base" / "base.pth") if needs_pretrain else ""
    )
    log(f"# {len(runs)} run(s), preset {config.preset}, seeds {list(p.seeds)}")
    if needs_pretrain:
        spec = RunSpec(1.0, rank=p.lora_rank, inter=False, intra=False)
        cfg = replace(
            _train_config(config, p, spec, data, out / "runs" / "base", None),
            full=True,
            epochs=p.pretrain_epochs,
            max_steps=0,
        )
        log(train_command(cfg))
    for spec in runs:
        cfg = _train_config(
            config, p, spec, data, out / "runs" / spec.name(p.lora_rank), checkpoint
        )
        log(train_command(cfg))
    adapters = " ".join(
        f"--adapter {shlex.quote(str(out / 'runs' / s.name(p.lora_rank)))}" for s in runs
    )
    log(
        f"sampo-engine eval --data {shlex.quote(config.test_data or str(out / 'data' / 'test'))} "
        f"--model {p.model} {adapters} --out {shlex.quote(str(out / 'eval'))}"
    )
    if config.train_split or config.train_folds:
        log(
            "# the train commands above read the whole --train-data folder: split/folds are "
            "applied by `sampo-engine experiments` itself (run it, or point --data at one split)"
        )


# ------------------------------------------------------------------------------------ report


def _fmt_mean(values: list) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    mean = 100 * float(np.mean(vals))
    if len(vals) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {100 * float(np.std(vals, ddof=1)):.2f}"


def _values(ds: dict, key: list, task: str, metric: str) -> list:
    vals = []
    for run in ds["runs"]:
        if run["key"] == key:
            vals.append(ds["results"].get(run["name"], {}).get(task, {}).get(metric))
    return vals


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _columns(datasets: list[dict]) -> list[tuple[dict, str]]:
    return [(ds, t) for ds in datasets for t in ds["tasks"]]


def _check(on: bool) -> str:
    return "✓" if on else "✗"


def render_experiments(summaries: list[dict], out: Path | None = None) -> str:
    """The gathered markdown report of one or more experiment grids (one per dataset)."""
    datasets = [ds for s in summaries for ds in s["datasets"]]
    first = summaries[0]
    tables = {}
    for s in summaries:
        for name, keys in s["tables"].items():
            tables.setdefault(name, [])
            for key in keys:
                if key not in tables[name]:
                    tables[name].append(key)
    cols = _columns(datasets)
    lines = [
        "# SAMPO experiments",
        "",
        f"Preset {', '.join(sorted({s['preset'] for s in summaries}))}; model "
        f"{first['settings']['model']}, {first['settings']['epochs']} epoch(s) per run, seeds "
        f"{first['settings']['seeds']}. Scores in percent (macro over (crop, intent) queries, the "
        "IoU-head-selected slot), mean ± standard deviation over seeds. Every run of a dataset was "
        "evaluated on the same queries with identical prompts; each dataset's full report "
        "(oracle scores, instance metrics, per class/density/tissue, sensitivity, robustness) "
        "is linked below.",
        "",
    ]
    if any(s["preset"] == "smoke" for s in summaries):
        lines += [
            "> Smoke preset: a few training steps of the tiny model on generated data. It checks "
            "that the grid runs end to end; its numbers mean nothing (expect zeros).",
            "",
        ]
    for ds in datasets:
        report = Path(ds["eval"]) / "report.md"
        if out is not None:
            report = Path(os.path.relpath(report, Path(out).resolve()))
        lines.append(
            f"- **{ds['label']}**: train `{ds['train']}`, test `{ds['test']}` "
            f"({', '.join(f'{n} {t.upper()}' for t, n in ds['queries'].items())} queries, "
            f"prompts `{ds['prompts_sha256'][:12]}…`) — [evaluation report]({report.as_posix()})"
        )
    lines.append("")
    if "main" in tables:
        fractions = sorted({k[0] for k in tables["main"]})
        header = ["Dataset-task", "Ratio", "SAM (no adapter) IoU", "Dice", "L_sup IoU", "Dice"]
        header += ["SAMPO IoU", "Dice", "SAMPO Dice★"]
        body = []
        for ds, t in cols:
            base = ds["base"].get(t, {})
            for f in fractions:
                lsup = next(
                    k for k in tables["main"] if k[0] == f and k[3:] == [False, False, True]
                )
                sampo = next(k for k in tables["main"] if k[0] == f and k[3:] == [True, True, True])
                row = [f"{ds['label']}-{t.upper()}", f"{round(f * 100)}%"]
                row += [_fmt_mean([base.get("iou")]), _fmt_mean([base.get("dice")])]
                for key in (lsup, sampo):
                    row += [_fmt_mean(_values(ds, key, t, m)) for m in ("iou", "dice")]
                row.append(_fmt_mean(_values(ds, sampo, t, "oracle_dice")))
                body.append(row)
        lines += ["## Table 1: data fractions", "", _table(header, body)]
        trivial = [(ds, b) for ds in datasets for b in ds.get("trivial", [])]
        if trivial:
            lines += [
                "Trivial T2 reference: "
                + "; ".join(
                    f"{ds['label']}: {b['name']} T2 IoU {_fmt_mean([b.get('t2', {}).get('iou')])}, "
                    f"Dice {_fmt_mean([b.get('t2', {}).get('dice')])}"
                    for ds, b in trivial
                ),
                "",
            ]

    def grid_table(title: str, keys: list, first_cols: list[str], describe) -> None:
        header = first_cols + [
            f"{ds['label']}-{t.upper()} {m}" for ds, t in cols for m in ("IoU", "Dice")
        ]
        body = []
        for key in keys:
            row = describe(key)
            for ds, t in cols:
                row += [_fmt_mean(_values(ds, key, t, m)) for m in ("iou", "dice")]
            body.append(row)
        lines.extend([f"## {title}", "", _table(header, body)])

    if "ablation" in tables:
        grid_table(
            f"Table 2: ablation (data fraction {round(tables['ablation'][0][0] * 100)}%)",
            tables["ablation"],
            ["L_inter", "L_intra", "L_sup"],
            lambda k: [_check(k[3]), _check(k[4]), _check(k[5])],
        )
    if "alpha" in tables:
        grid_table(
            f"Table 3: preference weight α (data fraction {round(tables['alpha'][0][0] * 100)}%)",
            tables["alpha"],
            ["α"],
            lambda k: [f"{k[1]:.2f}"],
        )
    if "rank" in tables:
        grid_table(
            f"Table 4: LoRA rank (data fraction {round(tables['rank'][0][0] * 100)}%)",
            tables["rank"],
            ["Rank"],
            lambda k: [str(k[2])],
        )
    lines += [
        "## Runs",
        "",
        "Adapter bundles (training curves in each folder's loss_curve.png):",
        "",
    ]
    for ds in datasets:
        names = ", ".join(f"`{r['name']}`" for r in ds["runs"])
        lines.append(f"- {ds['label']}: {names}")
    lines.append("")
    return "\n".join(lines)


def gather(dirs: list[str], out: str) -> Path:
    """Merge the experiments.json of several grids (e.g. PanNuke and CoNSeP) into one report."""
    from sampo_engine.utils.atomic import write_json_atomic, write_text_atomic

    summaries = []
    for d in dirs:
        path = Path(d) / "experiments.json"
        if not path.is_file():
            raise DataError(
                f"{d} holds no experiments.json; pass the --out folder of a finished grid"
            )
        summaries.append(json.loads(path.read_text()))
    out_path = Path(out)
    if (
        out_path.is_dir()
        and any(out_path.iterdir())
        and not (out_path / "experiments_gathered.json").is_file()
    ):
        raise ConfigError(
            f"--out {out} is a non-empty folder; choose a new one for the gathered report"
        )
    out_path.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        out_path / "experiments_gathered.json",
        {"sources": [str(Path(d).resolve()) for d in dirs], "summaries": summaries},
    )
    write_text_atomic(out_path / "experiments.md", render_experiments(summaries, out_path))
    return out_path / "experiments.md"
