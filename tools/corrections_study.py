"""Does learning from a pathologist's corrections help? A controlled study on generated tiles.

1. Pre-train the tiny SAM (``--full``) on generated tiles (task both) -> base weights. It
   segments nuclei after ~150 steps of batch 8 but hardly tells the classes apart.
2. "The pathologist" runs the base model with T2 prompts on other generated tiles and erases
   every predicted pixel that is not a nucleus of the clicked class:
   corrected = original ∩ target class. Each edited tile becomes a correction record.
3. Per seed, fine-tune the base for the same number of steps on the same online data, with and
   without the records (``corrections``), same seed.
4. On held-out generated tiles (T2 evaluation prompts, IoU-head slot): the share of predicted
   pixels on nuclei of another class or on background ("wrong"), T2 Dice; on the training
   records: ℓ(M_c|c) − ℓ(M_o|c) of the shown slot.

    python tools/corrections_study.py --seeds 0 1 2 --out runs/corrections_study

writes ``results.json`` there and prints a Markdown table (copied into docs/corrections.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class StudyConfig:
    image_size: int = 112
    train_images: int = 24
    pretrain_steps: int = 300
    pretrain_batch_size: int = 8
    pretrain_lr: float = 2e-3
    pretrain_warmup: int = 20
    pretrain_alpha: float = 0.5
    task: str = "t1"  # what the annotated (online) data teaches: "t1" = outlines, no classes
    record_tiles: int = 24
    eval_tiles: int = 12
    finetune_steps: int = 40
    batch_size: int = 4
    lr: float = 1e-3
    beta: float = 2.0
    corrections_weight: float = 1.0
    seeds: tuple[int, ...] = (0, 1, 2)


def _train(
    cfg: StudyConfig,
    out: Path,
    dataset,
    seed: int,
    steps: int,
    lr: float,
    batch_size: int | None = None,
    **extra,
):
    from sampo_engine.train.config import TrainConfig
    from sampo_engine.train.trainer import Trainer

    config = TrainConfig(
        data="generated tiles",
        out=str(out),
        model="tiny",
        full=True,
        task=cfg.task,
        image_size=cfg.image_size,
        batch_size=batch_size or cfg.batch_size,
        lr=lr,
        beta=cfg.beta,
        epochs=10_000,
        max_steps=steps,
        val_fraction=0.0,
        eval_crops=0,
        seed=seed,
        device="cpu",
        overwrite=True,
        **extra,
    )
    trainer = Trainer(config, dataset=dataset, log=lambda *a, **k: None)
    trainer.run()
    return trainer


def _queries(cfg: StudyConfig, seed: int, n: int, name: str):
    from sampo_engine.data.synthetic import make_synthetic_dataset
    from sampo_engine.eval.queries import make_queries

    data = make_synthetic_dataset(n, cfg.image_size, seed=seed)
    return make_queries(data, None, cfg.image_size, "t2", seed=seed)


@torch.no_grad()
def _shown_masks(adapted, queries, batch: int = 16) -> list[np.ndarray]:
    """The mask the user sees (IoU-head slot, logits > 0) for each query."""
    from sampo_engine.models.forward import decode, encode, select_by_iou_head, upsample
    from sampo_engine.prompts import pack

    adapted.eval()
    masks = []
    for start in range(0, len(queries), batch):
        chunk = queries[start : start + batch]
        images = torch.stack([torch.from_numpy(q.image.transpose(2, 0, 1).copy()) for q in chunk])
        packed = [pack([q.prompts]) for q in chunk]
        points = torch.from_numpy(np.stack([p[0] for p in packed]))
        labels = torch.from_numpy(np.stack([p[1] for p in packed]))
        out = decode(adapted.sam, encode(adapted.sam, images), points, labels)
        logits, _ = select_by_iou_head(out.logits, out.iou_pred)
        logits = upsample(logits, images.shape[-2:])
        masks += [m[0].numpy() > 0 for m in logits]
    return masks


def make_records(adapted, queries, model_name: str = "tiny base"):
    """The simulated pathologist: erase what is not a nucleus of the clicked class."""
    from sampo_engine.corrections import CorrectionRecord

    records = []
    for q, original in zip(queries, _shown_masks(adapted, queries), strict=True):
        corrected = original & q.target
        if (corrected != original).sum() < 10:
            continue  # nothing (much) to correct
        records.append(
            CorrectionRecord(
                image=q.image,
                points=q.prompts.points,
                labels=q.prompts.labels,
                original=original,
                corrected=corrected,
                task="t2",
                class_id=q.intent.class_id,
                model={"model": model_name},
                image_name=q.name,
            )
        )
    return records


def evaluate(adapted, queries) -> dict[str, float]:
    """Held-out T2 scores of the shown slot: wrong share (1 − precision), missed share
    (1 − recall), Dice and the predicted fraction of the tile; means over queries."""
    wrong, missed, dice, share = [], [], [], []
    for q, pred in zip(queries, _shown_masks(adapted, queries), strict=True):
        target = q.target
        share.append(float(pred.mean()))
        inter = float((pred & target).sum())
        wrong.append(1.0 - inter / max(1.0, float(pred.sum())))
        missed.append(1.0 - inter / max(1.0, float(target.sum())))
        dice.append(2 * inter / max(1.0, float(pred.sum() + target.sum())))
    return {
        "wrong_share": float(np.mean(wrong)),
        "missed_share": float(np.mean(missed)),
        "t2_dice": float(np.mean(dice)),
        "predicted_share": float(np.mean(share)),
    }


def run_study(cfg: StudyConfig, out: Path, log=print) -> dict:
    from sampo_engine.corrections import CorrectionStore
    from sampo_engine.data.synthetic import make_synthetic_dataset
    from sampo_engine.train.corrections_loss import record_logliks

    t0 = time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train_data = make_synthetic_dataset(cfg.train_images, cfg.image_size, seed=100)
    base = _train(
        cfg,
        out / "base",
        train_data,
        0,
        cfg.pretrain_steps,
        cfg.pretrain_lr,
        batch_size=cfg.pretrain_batch_size,
        warmup_steps=cfg.pretrain_warmup,
        alpha=cfg.pretrain_alpha,
    )
    base_path = out / "base" / "base.pth"
    record_queries = _queries(cfg, 200, cfg.record_tiles, "records")
    eval_queries = _queries(cfg, 300, cfg.eval_tiles, "held-out")
    records = make_records(base.adapted, record_queries)
    if not records:
        raise SystemExit("the base model's outputs needed no correction: nothing to study")
    store = CorrectionStore(out / "corrections")
    for old in store.ids():
        store.delete(old)
    for r in records:
        store.add(r)
    log(
        f"base: {cfg.pretrain_steps} steps; {len(records)} correction records from "
        f"{len(record_queries)} T2 queries; {len(eval_queries)} held-out T2 queries"
    )
    result = {
        "config": {k: v for k, v in cfg.__dict__.items()},
        "records": len(records),
        "eval_queries": len(eval_queries),
        "base": evaluate(base.adapted, eval_queries),
        "runs": [],
    }
    for seed in cfg.seeds:
        row = {"seed": seed}
        for arm, extra in (
            ("online", {}),
            (
                "corrections",
                {
                    "corrections": str(out / "corrections"),
                    "corrections_weight": cfg.corrections_weight,
                },
            ),
        ):
            trainer = _train(
                cfg,
                out / f"{arm}-{seed}",
                train_data,
                seed,
                cfg.finetune_steps,
                cfg.lr,
                checkpoint=str(base_path),
                **extra,
            )
            ll = record_logliks(trainer.adapted, records, cfg.image_size, "cpu")
            row[arm] = {
                **evaluate(trainer.adapted, eval_queries),
                "record_ll_corrected": float(ll["corrected"].mean()),
                "record_ll_original": float(ll["original"].mean()),
                "record_ll_gap": float((ll["corrected"] - ll["original"]).mean()),
            }
        log(json.dumps(row))
        result["runs"].append(row)
    result["seconds"] = time.perf_counter() - t0
    (out / "results.json").write_text(json.dumps(result, indent=2))
    return result


def summary_table(result: dict) -> str:
    keys = ("predicted_share", "wrong_share", "missed_share", "t2_dice", "record_ll_gap")
    lines = [
        "| seed | arm | predicted share | wrong share ↓ | missed share ↓ | T2 Dice ↑ "
        "| ℓ(M_c) − ℓ(M_o) on records ↑ |",
        "|---|---|---|---|---|---|---|",
    ]
    b = result["base"]
    lines.append(
        f"| – | base | {b['predicted_share']:.3f} | {b['wrong_share']:.3f} "
        f"| {b['missed_share']:.3f} | {b['t2_dice']:.3f} | |"
    )
    for row in result["runs"]:
        for arm in ("online", "corrections"):
            v = row[arm]
            lines.append(
                f"| {row['seed']} | {arm} | " + " | ".join(f"{v[k]:.3f}" for k in keys) + " |"
            )
    for arm in ("online", "corrections"):
        means = [np.mean([row[arm][k] for row in result["runs"]]) for k in keys]
        lines.append(f"| mean | {arm} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = StudyConfig()
    parser.add_argument("--out", default="")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(defaults.seeds))
    for name in (
        "pretrain_steps",
        "pretrain_batch_size",
        "finetune_steps",
        "train_images",
        "record_tiles",
        "eval_tiles",
        "batch_size",
    ):
        parser.add_argument(
            "--" + name.replace("_", "-"), type=int, default=getattr(defaults, name)
        )
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument(
        "--task",
        default=defaults.task,
        choices=("t1", "t2", "both"),
        help="task of the annotated data (base and online training); t1 = no classes",
    )
    parser.add_argument("--corrections-weight", type=float, default=defaults.corrections_weight)
    args = parser.parse_args(argv)
    cfg = StudyConfig(
        **{
            k: getattr(args, k)
            for k in StudyConfig.__dataclass_fields__
            if k != "seeds" and hasattr(args, k)
        }
        | {"seeds": tuple(args.seeds)}
    )
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="corrections_study."))
    result = run_study(cfg, out)
    print(summary_table(result))
    print(f"({result['seconds']:.0f} s; results in {out / 'results.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
