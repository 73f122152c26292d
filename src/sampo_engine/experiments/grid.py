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

This module runs a grid; its parts are :mod:`~sampo_engine.experiments.grid_config` (options and
presets), :mod:`~sampo_engine.experiments.grid_plan` (the runs), ``grid_data`` (train and test
data), ``grid_training`` (one run), ``grid_summary`` (``experiments.json``) and ``grid_report``
(``experiments.md``, :func:`gather`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sampo_engine.errors import ConfigError
from sampo_engine.experiments.grid_config import ExperimentsConfig, Preset
from sampo_engine.experiments.grid_data import GridData, check_given_data, grid_data
from sampo_engine.experiments.grid_plan import (
    RunSpec,
    base_config,
    plan_runs,
    print_plan,
    train_config,
)
from sampo_engine.experiments.grid_report import gather, render_experiments
from sampo_engine.experiments.grid_summary import build_summary
from sampo_engine.experiments.grid_training import train_run

__all__ = ["ExperimentsConfig", "ExperimentsResult", "gather", "run_experiments"]

MARKER = "sampo_experiments.json"


@dataclass
class ExperimentsResult:
    out: Path
    summary: dict = field(default_factory=dict)


def run_experiments(
    config: ExperimentsConfig, log: Callable[[str], None] = print, quiet: bool = False
) -> ExperimentsResult:
    """Train the grid, evaluate every run on the same queries, write the gathered report."""
    from sampo_engine.models.loading import resolve_checkpoint
    from sampo_engine.models.registry import get_spec
    from sampo_engine.utils.atomic import write_json_atomic, write_text_atomic

    config.validate()
    p = config.settings()
    out = Path(config.out)
    runs, rows = plan_runs(p, config.tables)
    needs_pretrain = not config.checkpoint and not get_spec(p.model).pretrained
    if config.dry_run:
        print_plan(config, p, runs, out, needs_pretrain, log)
        return ExperimentsResult(out, {"runs": [r.name(p.lora_rank) for r in runs]})

    t0 = time.perf_counter()
    check_given_data(config)  # every check that can fail before hours of training
    checkpoint = None
    if not needs_pretrain:
        checkpoint = resolve_checkpoint(p.model, config.checkpoint or None)
    prepare_out(out, config.resume, config.overwrite)
    data = grid_data(config, p, out)
    resume_ok = not config.overwrite
    if needs_pretrain:
        log(
            f"[base] pretraining {p.model} with every weight trainable ({p.pretrain_epochs} epoch(s))"
        )
        cfg = base_config(config, p, str(data.train_path), out / "runs" / "base")
        train_run(cfg, data.train_set, resume_ok, quiet, log)
        checkpoint = out / "runs" / "base" / "base.pth"
    adapters = _train_runs(config, p, runs, data, out, checkpoint, resume_ok, quiet, log)
    metrics = _evaluate(config, p, data, adapters, checkpoint, out, log)
    summary = build_summary(config, p, runs, rows, data, metrics, out, t0)
    write_json_atomic(out / "experiments.json", summary)
    write_text_atomic(out / "experiments.md", render_experiments([summary], out))
    return ExperimentsResult(out, summary)


def prepare_out(out: Path, resume: bool, overwrite: bool) -> None:
    """A new or empty folder, or a grid's folder with ``resume`` / ``overwrite``; never a
    user's folder. Writes the grid's marker."""
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


def _train_runs(
    config: ExperimentsConfig,
    p: Preset,
    runs: list[RunSpec],
    data: GridData,
    out: Path,
    checkpoint,
    resume_ok: bool,
    quiet: bool,
    log,
) -> list[str]:
    """Train (or keep, or resume) every run on top of ``checkpoint``; their bundle folders."""
    adapters = []
    for k, spec in enumerate(runs, 1):
        name = spec.name(p.lora_rank)
        cfg = train_config(config, p, spec, str(data.train_path), out / "runs" / name, checkpoint)
        started = time.perf_counter()
        what = train_run(cfg, data.train_set, resume_ok, quiet, log)
        log(f"[{k}/{len(runs)}] {name}: {what} in {time.perf_counter() - started:.0f} s")
        adapters.append(str(out / "runs" / name))
    return adapters


def _evaluate(
    config: ExperimentsConfig,
    p: Preset,
    data: GridData,
    adapters: list[str],
    checkpoint,
    out: Path,
    log,
) -> dict:
    """Evaluate the base model and every run together on the test data (``OUT/eval``, the
    same queries and prompts for all); returns the evaluation's metrics."""
    from sampo_engine.eval.config import EvalConfig
    from sampo_engine.eval.protocol import run_evaluation

    eval_config = EvalConfig(
        data=str(data.test_path),
        data_format=data.test_format,
        split=data.test_split,
        folds=list(data.test_folds) if data.test_folds else None,
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
    log(f"evaluating {len(adapters)} run(s) and the base model on {data.test_path}")
    return run_evaluation(eval_config, log=log).metrics
