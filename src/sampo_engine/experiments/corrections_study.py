"""Does learning from a pathologist's corrections help? A controlled study on generated tiles.

1. Pre-train the tiny SAM (``--full``) on annotated generated tiles (``--task``, default T1:
   outlines, no classes) -> base weights. It segments nuclei after ~150 steps of batch 8.
2. "The pathologist" runs the base on other generated tiles — their own images — and corrects
   its output. Two scenarios (``--scenario``):

   - ``debris`` (default): the user's tiles hold pigment deposits (dark brown granular clumps,
     ``make_synthetic_sample(debris=...)``) that the annotated tiles lack; with T1 prompts the
     base marks some of them as nuclei, and the user deletes every predicted object that lies
     mostly off the nuclei (the plugin's "delete label"): corrected = original minus those
     objects.
   - ``t2-class``: with T2 prompts, the user erases every predicted pixel that is not a nucleus
     of the clicked class: corrected = original ∩ target class.

   Each edited tile becomes a correction record.
3. Per seed, fine-tune the base for the same number of steps on the same annotated (online)
   data, with and without the records (``corrections``), same seed.
4. On held-out tiles of the user's kind (same scenario, evaluation prompts, IoU-head slot): the
   share of predicted pixels off the target ("wrong"), the share of the target missed, Dice; on
   the training records: ℓ(M_c|c) − ℓ(M_o|c) of the shown slot.

    python tools/corrections_study.py --seeds 0 1 2 --out runs/corrections_study

writes ``results.json`` there and prints a Markdown table (copied into docs/corrections.md).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

from sampo_engine.corrections.store import CorrectionRecord, CorrectionStore
from sampo_engine.data.crops import pad_to
from sampo_engine.data.synthetic import make_synthetic_dataset
from sampo_engine.models.forward import decode, encode, select_by_iou_head, upsample
from sampo_engine.prompts import pack
from sampo_engine.scoring.metrics import dice as dice_score
from sampo_engine.scoring.queries import make_queries
from sampo_engine.train.config import TrainConfig
from sampo_engine.train.corrections_loss import record_logliks
from sampo_engine.train.trainer import Trainer


@dataclass
class StudyConfig:
    image_size: int = 112
    train_images: int = 24
    pretrain_steps: int = 600
    pretrain_batch_size: int = 8
    pretrain_lr: float = 2e-3
    pretrain_warmup: int = 20
    pretrain_alpha: float = 0.5
    task: str = "t1"  # what the annotated (online) data teaches: "t1" = outlines, no classes
    record_tiles: int = 48
    eval_tiles: int = 36
    finetune_steps: int = 80
    batch_size: int = 4
    lr: float = 1e-3
    beta: float = 2.0
    corrections_weight: float = 1.0
    seeds: tuple[int, ...] = (0, 1, 2)
    scenario: str = "debris"  # what the user corrects: "debris" (T1) or "t2-class"
    debris: float = 3.0  # pigment deposits per 10,000 px² on the user's tiles ("debris")
    # torch CPU threads of every training (0 = auto, as the CLI: the free cores). The thread
    # count changes floating-point paths, so an exact rerun of a table needs the same count.
    threads: int = 0

    @property
    def query_task(self) -> str:
        """The task of the user's prompts (records and held-out evaluation)."""
        return "t1" if self.scenario == "debris" else "t2"


SCENARIOS = ("debris", "t2-class")


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
        threads=cfg.threads,
        **extra,
    )
    trainer = Trainer(config, dataset=dataset, log=lambda *a, **k: None)
    trainer.run()
    return trainer


def _queries(cfg: StudyConfig, seed: int, n: int):
    """Evaluation-protocol queries on ``n`` generated tiles of the user's kind, each with its
    crop's (S, S) bool pigment mask in ``q.extra["debris"]`` (None without pigment)."""
    debris = cfg.debris if cfg.scenario == "debris" else 0.0
    data = make_synthetic_dataset(n, cfg.image_size, seed=seed, debris=debris)
    queries = make_queries(data, None, cfg.image_size, cfg.query_task, seed=seed)
    pigment = {}
    for i in range(len(data)):
        sample = pad_to(data[i], cfg.image_size)
        pigment[sample.name] = sample.debris
    size = cfg.image_size
    for q in queries:
        (top, left), mask = q.origin, pigment.get(q.sample_name)
        q.extra["debris"] = None if mask is None else mask[top : top + size, left : left + size]
    return queries


def correct(original: np.ndarray, target: np.ndarray, scenario: str) -> np.ndarray:
    """The simulated pathologist's correction of one (S, S) bool output.

    ``debris``: delete every predicted object (connected component) of which less than half
    lies on the target nuclei — whole false nuclei go, the outlines of true ones stay as the
    model drew them. ``t2-class``: erase every pixel off the clicked class (original ∩ target).
    """
    if scenario == "t2-class":
        return original & target
    objects, n = ndi.label(original)
    if n == 0:
        return original.copy()
    area = np.bincount(objects.ravel(), minlength=n + 1)
    on_target = np.bincount(objects.ravel(), weights=target.ravel(), minlength=n + 1)
    false = on_target < 0.5 * area
    false[0] = False
    return original & ~false[objects]


@torch.no_grad()
def _shown_masks(adapted, queries, batch: int = 16) -> list[np.ndarray]:
    """The mask the user sees (IoU-head slot, logits > 0) for each query."""
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


def make_records(adapted, queries, scenario: str, model_name: str = "tiny base"):
    """The simulated pathologist corrects the model's output on each query (:func:`correct`);
    queries needing (almost) no correction give no record."""
    records = []
    for q, original in zip(queries, _shown_masks(adapted, queries), strict=True):
        corrected = correct(original, q.target, scenario)
        if (corrected != original).sum() < 10:
            continue  # nothing (much) to correct
        task = "t1" if scenario == "debris" else "t2"
        records.append(
            CorrectionRecord(
                image=q.image,
                points=q.prompts.points,
                labels=q.prompts.labels,
                original=original,
                corrected=corrected,
                task=task,
                class_id=q.intent.class_id if task == "t2" else 0,
                model={"model": model_name},
                image_name=q.name,
            )
        )
    return records


def evaluate(adapted, queries) -> dict[str, float]:
    """Held-out scores of the shown slot against each query's target (T1: all nuclei; T2: the
    clicked class): wrong share (1 − precision), missed share (1 − recall), Dice and the
    predicted fraction of the tile (means over queries), and the share of all pigment pixels
    predicted as nucleus (``debris`` scenario; NaN without pigment)."""
    wrong, missed, dice, share = [], [], [], []
    on_debris, debris_px = 0.0, 0.0
    for q, pred in zip(queries, _shown_masks(adapted, queries), strict=True):
        target = q.target
        share.append(float(pred.mean()))
        pigment = q.extra.get("debris")
        if pigment is not None:
            on_debris += float((pred & pigment).sum())
            debris_px += float(pigment.sum())
        inter = float((pred & target).sum())
        wrong.append(1.0 - inter / max(1.0, float(pred.sum())))
        missed.append(1.0 - inter / max(1.0, float(target.sum())))
        dice.append(dice_score(pred, target))  # targets are never empty: no 0/0 case
    return {
        "wrong_share": float(np.mean(wrong)),
        "missed_share": float(np.mean(missed)),
        "dice": float(np.mean(dice)),
        "predicted_share": float(np.mean(share)),
        # the corrected behaviour itself: the share of pigment pixels predicted as nuclei
        "debris_predicted": on_debris / debris_px if debris_px else float("nan"),
    }


def run_study(cfg: StudyConfig, out: Path, log=print) -> dict:
    t0 = time.perf_counter()
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
    if cfg.scenario not in SCENARIOS:
        raise SystemExit(f"unknown scenario {cfg.scenario!r}; choose one of {SCENARIOS}")
    record_queries = _queries(cfg, 200, cfg.record_tiles)
    eval_queries = _queries(cfg, 300, cfg.eval_tiles)
    records = make_records(base.adapted, record_queries, cfg.scenario)
    if not records:
        raise SystemExit("the base model's outputs needed no correction: nothing to study")
    store = CorrectionStore(out / "corrections")
    for old in store.ids():
        store.delete(old)
    for r in records:
        store.add(r)
    log(
        f"base: {cfg.pretrain_steps} steps; {len(records)} correction records from "
        f"{len(record_queries)} {cfg.query_task.upper()} queries ({cfg.scenario}); "
        f"{len(eval_queries)} held-out queries"
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
    """A Markdown table: base, then each seed's two arms, then the means over seeds."""
    debris = result["config"].get("scenario", "t2-class") == "debris"
    task = "T1" if debris else "T2"
    columns = [
        ("predicted_share", "predicted share"),
        ("wrong_share", "wrong share ↓"),
        ("missed_share", "missed share ↓"),
        ("dice", f"{task} Dice ↑"),
    ]
    if debris:
        columns.append(("debris_predicted", "pigment predicted ↓"))
    head = [label for _, label in columns] + ["ℓ(M_c) − ℓ(M_o) on records ↑"]
    lines = [
        "| seed | arm | " + " | ".join(head) + " |",
        "|---|---|" + "---|" * len(head),
    ]
    keys = [k for k, _ in columns] + ["record_ll_gap"]
    b = result["base"]
    lines.append("| – | base | " + " | ".join(f"{b[k]:.3f}" for k, _ in columns) + " | |")
    for row in result["runs"]:
        for arm in ("online", "corrections"):
            v = row[arm]
            lines.append(
                f"| {row['seed']} | {arm} | " + " | ".join(f"{v[k]:.3f}" for k in keys) + " |"
            )
    for arm in ("online", "corrections"):
        means = [np.mean([row[arm][k] for row in result["runs"]]) for k in keys]
        lines.append(f"| **mean** | {arm} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
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
    parser.add_argument(
        "--scenario",
        default=defaults.scenario,
        choices=SCENARIOS,
        help="what the user corrects: debris = deletes false nuclei (pigment) in T1; "
        "t2-class = erases nuclei of other classes in T2",
    )
    parser.add_argument(
        "--debris", type=float, default=defaults.debris, help="pigment deposits per 10,000 px²"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=defaults.threads,
        help="torch CPU threads per training (0 = auto; docs/corrections.md's tables: 2, or 1 "
        "where it says so)",
    )
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
