"""Training the runs of an experiment grid: keep a finished run, resume an interrupted one.

A run is an ordinary adapter bundle trained by :class:`~sampo_engine.train.trainer.Trainer`; a
grid continued with ``--resume`` keeps every bundle whose settings match the plan and refuses one
trained with other settings.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from sampo_engine.errors import ConfigError

#: The training settings a finished bundle must share with the plan to be kept.
_COMPARED = ("model", "fraction", "lora_rank", "alpha", "no_inter", "no_intra", "no_sup", "seed",
             "epochs", "max_steps", "batch_size", "lr", "full")  # fmt: skip


def train_run(cfg, dataset, resume_ok: bool, quiet: bool, log) -> str:
    """Train one run unless an identical finished bundle is there; returns what happened
    ('kept', 'resumed' or 'trained'). ``cfg`` is its TrainConfig, ``dataset`` the opened
    training data."""
    from tqdm.auto import tqdm

    from sampo_engine.models.bundle import BUNDLE_FILE, read_bundle
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
