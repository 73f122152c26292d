"""The options of an experiment grid (``sampo-engine experiments``) and its presets.

A :class:`Preset` holds every value of a grid (model, training, the Table 1–4 values, seeds and
the evaluation sizes); :class:`ExperimentsConfig` holds the command's options, and
:meth:`ExperimentsConfig.settings` is the preset with every given option applied.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sampo_engine._config import DEVICES, option
from sampo_engine.errors import ConfigError
from sampo_engine.models.registry import MODEL_TYPES
from sampo_engine.tasks import TASK_MIXES

TABLES = ("main", "ablation", "alpha", "rank")
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
        "both", "task the adapters are trained on (t1, t2, both)", choices=TASK_MIXES
    )
    eval_task: str = option("both", "tasks evaluated", choices=TASK_MIXES)
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
    device: str = option("auto", "auto = cuda, then mps, then cpu", choices=DEVICES)
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
