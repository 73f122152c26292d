"""Train the nucleus type head (docs/type_head.md) on the training images of every class-labelled
set, and measure it on the held-out ones.

Training: the official train images of BRCA-M2C and CRCHistoPhenotypes (dots), the real-data
study's training images of CoNSeP and PanNuke-2 (``--split-root``/train, instance maps with
classes). Held out (never trained on): the point sets' official validation images and the study's
test images. Writes ``<out>/type_head_seed<S>.safetensors`` and ``<out>/type_head_seed<S>.json``
(recipe, wall time, loss curve, held-out accuracy per vocabulary and class); an existing head is
kept (delete it to train again).

Usage::

    python tools/train_type_head.py --out runs/type_head --seed 0          # ~12 min, 2 threads
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def sources(shared: Path, split_root: Path, split: str):
    from sampo_engine.train.type_head import TypeSource

    points_split = ("train",) if split == "train" else ("val", "validation")
    inf, epi, stro, other = "inflammatory", "epithelial", "stromal", "other"
    return [
        TypeSource("brca_m2c_points", shared / "brca_m2c_points", "points", 0.5, points_split,
                   {1: inf, 2: epi, 3: stro}),
        TypeSource("crchisto_points", shared / "crchisto_points", "points", 0.5, points_split,
                   {1: epi, 2: stro, 3: inf, 4: other}),
        TypeSource("consep", split_root / split / "consep_train", "instances", 0.25, (),
                   {1: other, 2: inf, 3: epi, 4: stro}),
        TypeSource("pannuke_2", split_root / split / "pannuke_breast_2class", "instances", 0.25,
                   (), {1: epi}),
    ]  # fmt: skip


def main(argv=None, repo: Path | None = None) -> int:
    import torch
    from tqdm import tqdm

    from sampo_engine.models.type_head import load_type_head, save_type_head
    from sampo_engine.train.type_head import (
        TypeHeadConfig,
        load_type_examples,
        train_type_head,
        type_accuracy,
    )
    from sampo_engine.utils.atomic import write_text_atomic

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    repo = Path.cwd() if repo is None else Path(repo)
    parser.add_argument("--shared", default=str(repo.parent / "shared" / "data"))
    parser.add_argument("--split-root", default=str(repo / "runs" / "study" / "data"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=float, default=TypeHeadConfig.epochs)
    parser.add_argument("--batch-size", type=int, default=TypeHeadConfig.batch_size)
    parser.add_argument("--width", type=int, default=TypeHeadConfig.width)
    parser.add_argument("--max-images", type=int, default=0, help="per set (0 = all; smoke runs)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    head_path = out / f"type_head_seed{args.seed}.safetensors"
    log_path = head_path.with_suffix(".json")
    cfg = TypeHeadConfig(
        epochs=args.epochs, batch_size=args.batch_size, width=args.width, seed=args.seed
    )
    shared, split_root = Path(args.shared), Path(args.split_root)
    t0 = time.perf_counter()
    if head_path.is_file() and log_path.is_file():
        print(f"{head_path} exists: kept (delete it to train again)")
        net = load_type_head(head_path)
        log = json.loads(log_path.read_text())
    else:
        with tqdm(desc="reading training nuclei", unit="image", file=sys.stdout) as bar:
            train = load_type_examples(
                sources(shared, split_root, "train"), args.max_images, lambda _: bar.update()
            )
        print(f"{len(train)} training nuclei: {json.dumps(train.counts())}")
        with tqdm(desc="training", unit="step", file=sys.stdout) as bar:

            def step(i, total, loss):
                bar.total = total
                bar.update()
                if i % 25 == 0:
                    bar.set_postfix(loss=f"{loss:.3f}")

            net, run = train_type_head(train, cfg, step)
        recipe = (f"python tools/train_type_head.py --out {args.out} --seed {args.seed} "
                  f"--epochs {args.epochs:g}")  # fmt: skip
        save_type_head(net, head_path, {"recipe": recipe, "seed": args.seed})
        log = {"recipe": recipe, "config": cfg.__dict__, "train_counts": train.counts(),
               "seconds": run["seconds"], "steps": run["steps"],
               "losses": run["losses"][:: max(1, len(run["losses"]) // 200)]}  # fmt: skip
    held = load_type_examples(sources(shared, split_root, "test"), args.max_images)
    log["held_out_counts"] = held.counts()
    log["held_out_accuracy"] = type_accuracy(net, held)
    write_text_atomic(log_path, json.dumps(log, indent=1))
    for name, acc in log["held_out_accuracy"].items():
        per = ", ".join(f"{k} {100 * v:.1f}" for k, v in acc.items() if k not in ("accuracy",))
        print(f"held-out {name}: accuracy {100 * acc['accuracy']:.1f} ({per})")
    print(f"done in {time.perf_counter() - t0:.0f} s; head {head_path}")
    return 0
