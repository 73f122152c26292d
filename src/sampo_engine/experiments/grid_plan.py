"""The runs of an experiment grid: which configurations, their names and training options.

:func:`plan_runs` lists every unique run (each configuration once per seed) and the rows of each
table; :func:`train_config` is the :class:`~sampo_engine.train.config.TrainConfig` of one run,
:func:`train_command` its ``sampo-engine train`` command line and :func:`print_plan` prints the
whole grid as commands (``--dry-run``).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace
from pathlib import Path

from sampo_engine.experiments.grid_config import ABLATION_ROWS, TABLES, ExperimentsConfig, Preset


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


def train_config(
    config: ExperimentsConfig, p: Preset, spec: RunSpec, data: str, out: Path, checkpoint
):
    """The training options of run ``spec``: data ``data`` (its layout from ``config``), bundle
    folder ``out``, base weights ``checkpoint`` (None: the model's default)."""
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


def base_config(config: ExperimentsConfig, p: Preset, data: str, out: Path):
    """The training options of the base pretrained here for a model without weights: every
    weight trainable (``--full``) on all the data with L_sup only, ``p.pretrain_epochs`` epochs,
    no step limit."""
    spec = RunSpec(1.0, rank=p.lora_rank, inter=False, intra=False, seed=0)
    cfg = train_config(config, p, spec, data, out, None)
    return replace(cfg, full=True, epochs=p.pretrain_epochs, max_steps=0)


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


def print_plan(
    config: ExperimentsConfig, p: Preset, runs, out: Path, needs_pretrain: bool, log
) -> None:
    """Log the grid as ``sampo-engine`` commands: the base pretraining, every run, the eval."""
    data = config.train_data or str(out / "data" / "train")
    checkpoint = config.checkpoint or (
        str(out / "runs" / "base" / "base.pth") if needs_pretrain else ""
    )
    log(f"# {len(runs)} run(s), preset {config.preset}, seeds {list(p.seeds)}")
    if needs_pretrain:
        log(train_command(base_config(config, p, data, out / "runs" / "base")))
    for spec in runs:
        cfg = train_config(config, p, spec, data, out / "runs" / spec.name(p.lora_rank), checkpoint)
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
