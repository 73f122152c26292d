"""Terminal driver of the trainer: tqdm progress and a closing summary."""

from __future__ import annotations

import math

from tqdm.auto import tqdm

from sampo_engine.train import distributed
from sampo_engine.train.config import TrainConfig
from sampo_engine.train.trainer import StepEvent, Trainer


def _fmt(value) -> str:
    return (
        "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
    )


def _quiet(*args, **kwargs) -> None:
    pass


def run_training(config: TrainConfig, progress_bar: bool = True, dataset=None) -> StepEvent:
    """Train from the terminal; print where the bundle, metrics and plot went.

    Under torchrun (``WORLD_SIZE`` > 1) every rank runs this inside a distributed session: see
    :mod:`sampo_engine.train.distributed`.
    """
    if distributed.launched():  # distributed: join the group; a failing rank exits at once
        with distributed.session(config.device):
            return _run_training(config, progress_bar and distributed.is_main(), dataset)
    return _run_training(config, progress_bar, dataset)


def _run_training(config: TrainConfig, progress_bar: bool, dataset) -> StepEvent:
    log = tqdm.write if progress_bar else print
    if not distributed.is_main():  # distributed: rank 0 speaks
        log = _quiet
    trainer = Trainer(config, dataset=dataset, log=log)
    bar = tqdm(
        total=trainer.total_steps,
        initial=trainer.global_step,
        desc="SAMPO",
        unit="step",
        disable=not progress_bar,
    )
    final = None
    for event in trainer.steps():
        if event.kind == "step":
            m = event.metrics
            bar.update(1)
            bar.set_postfix(
                loss=_fmt(m["loss"]),
                acc=_fmt(m["pref_acc"]),
                iou=_fmt(m["iou_best"]),
                refresh=False,
            )
        elif event.kind == "epoch":
            m = event.metrics
            parts = [f"{k}={_fmt(m[k])}" for k in ("t1_dice", "t2_dice") if k in m]
            log(
                f"epoch {event.epoch + 1}/{config.epochs}: "
                + (", ".join(parts) or "no validation images")
            )
        else:
            final = event
    bar.close()
    if not distributed.is_main():  # distributed: rank 0 prints the summary
        return final
    out = trainer.out
    m = final.metrics
    print(
        f"held-out T1 Dice: {_fmt(m.get('t1_dice'))}   T2 Dice: {_fmt(m.get('t2_dice'))}"
        f"   (IoU-head slot, {len(trainer.val_indices)} held-out image(s))"
    )
    if "t2_clicks_dice" in m:
        print(
            "held-out T2 Dice with the slot that agrees with the clicks (the plugin's T2 default):"
            f" {_fmt(m.get('t2_clicks_dice'))}   best slot (oracle): {_fmt(m.get('t2_oracle_dice'))}"
        )
    print(f"adapter bundle: {out}")
    print(f"metrics:        {out / 'metrics.jsonl'} (per step), {out / 'epochs.jsonl'} (per epoch)")
    print(f"plot:           {out / 'loss_curve.png'}")
    return final
