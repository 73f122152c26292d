"""The split-head study (docs/split_head.md): does a small full-resolution network that reads the
image and the model's probability cut whole-image nuclei better than the distance-transform
watershed of the probability (the predictor's split until now, docs/instances.md)?

Stages (each cached; rerun any):

- ``maps``: the model's whole-image T1 probability of every training and held-out image of the
  real-data split, from the evaluation's 3 + 3 clicks, at the model's own resampling factor
  (:func:`~sampo_engine.experiments.instance_split_sweep.probability_maps`):
  ``<out>/maps/<split>/<dataset>/<image>.npz``.
- ``train``: one head per (arm, seed) on the training images
  (:mod:`sampo_engine.train.split_head`): ``<out>/heads/<arm>_s<seed>.safetensors``. Arms:
  ``image+prob`` (what the predictor would use) and ``image`` (the image alone: does the
  model's answer matter?).
- ``score``: every head on the held-out images and on the training images that choose the
  setting (as many as the instance study's), each (core level, minimum size) of a small grid,
  and the watershed at the predictor's setting on the same maps: ``<out>/rows.csv``.
- ``report``: the setting chosen on the training images, held-out numbers per dataset with the
  spread over seeds and paired differences (:mod:`~sampo_engine.experiments.split_head_report`).

Checks of trained heads (``flips``, ``errors``, ``compare``, ``thresholds``) are in
:mod:`~sampo_engine.experiments.split_head_checks`.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import numpy as np

from sampo_engine.experiments.instance_split_sweep import predictor_setting, score_instances
from sampo_engine.experiments.split_head_files import (
    HEAD_THRESHOLD,
    head_path,
    image_folder,
    load_heads,
    map_folder,
    map_pairs,
    read_rows,
    scored_images,
    write_rows,
)

#: the instance-labelled datasets of the real-data split
DATASETS = ("consep_train", "monuseg_train", "gbm40", "pannuke_breast_2class")
ARMS = ("image+prob", "image")


def build_parser(repo: Path):
    import argparse

    parser = argparse.ArgumentParser(
        description="Does a learned split head cut whole-image nuclei better than the watershed "
        "of the model's probability? (docs/split_head.md)"
    )
    parser.add_argument(
        "stage",
        choices=(
            "maps",
            "train",
            "score",
            "report",
            "all",
            "flips",
            "compare",
            "errors",
            "thresholds",
        ),
    )
    parser.add_argument("--out", default=str(repo / "runs" / "split_head"))
    parser.add_argument(
        "--split-dir",
        default=str(repo / "runs" / "study"),
        help="the real-data study's folder with data/train|test/<dataset> (`python "
        "tools/real_data_study.py split`)",
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--max-images", type=int, default=0, help="per folder (0 = all)")
    parser.add_argument(
        "--choose-images",
        type=int,
        default=0,
        help="training images per dataset scored to choose the core level and minimum size "
        "(0 = the instance study's numbers: 6 CoNSeP, 4 MoNuSeg, 6 GBM40, 24 PanNuke)",
    )
    parser.add_argument("--model", default="nuclei-small")
    parser.add_argument("--checkpoint", default="", help="base weights (default: the model's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--depth", type=int, default=2, choices=(2, 3))
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--core-levels", type=float, nargs="+", default=[0.4, 0.5, 0.6])
    parser.add_argument("--min-sizes", type=int, nargs="+", default=[32, 48])
    parser.add_argument(
        "--thresholds", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6],
        help="thresholds: the head's foreground levels scored (the shipped head cuts at 0.5)",
    )  # fmt: skip
    parser.add_argument(
        "--against", default="", help="compare: another recipe's folder (its rows.csv and heads)"
    )
    parser.add_argument("--docs", default=str(repo / "docs"))
    parser.add_argument("--page", default="split_head.md")
    parser.add_argument(
        "--flip-setting", type=float, nargs=2, default=(0.4, 48), metavar=("CORE", "MIN_SIZE"),
        help="flips, errors, thresholds: the core level and minimum size scored (default: the "
        "shipped head's)",
    )  # fmt: skip
    return parser


def stage_maps(args) -> None:
    from tqdm import tqdm

    from sampo_engine.experiments.instance_split_sweep import probability_maps
    from sampo_engine.models.loading import load_model
    from sampo_engine.predict.resample import resample_factor

    for split, ds in itertools.product(("train", "test"), args.datasets):
        if not image_folder(args, split, ds).is_dir():
            sys.exit(f"no image folder {image_folder(args, split, ds)}: run `python "
                     "tools/real_data_study.py split` first")  # fmt: skip
    model = load_model(args.model, args.checkpoint or None, device=args.device)
    scale = resample_factor(args.model, 0.0, 0.0)
    for split, ds in itertools.product(("train", "test"), args.datasets):
        with tqdm(desc=f"maps {split}/{ds}", unit="image", leave=False) as bar:
            probability_maps(
                model, image_folder(args, split, ds), map_folder(args, split, ds), 0,
                args.max_images or None, args.device, progress=lambda name: bar.update(1),
                scale=scale,
            )  # fmt: skip


def stage_train(args) -> None:
    from tqdm import tqdm

    from sampo_engine.models.split_head import save_split_head
    from sampo_engine.train.split_head import SplitHeadConfig, load_examples, train_split_head
    from sampo_engine.utils.atomic import write_json_atomic

    pairs = [(npz, image) for _, npz, image in map_pairs(args, "train")]
    if not pairs:
        sys.exit(f"no probability maps under {args.out}/maps/train: run the maps stage first")
    for arm in args.arms:
        todo = [s for s in args.seeds if not head_path(args, arm, s).exists()]
        if not todo:
            continue
        examples = load_examples(pairs, arm)
        for seed in todo:
            cfg = SplitHeadConfig(
                steps=args.steps, batch_size=args.batch_size, crop=args.crop, width=args.width,
                lr=args.lr, inputs=arm, seed=seed, depth=args.depth,
            )  # fmt: skip
            with tqdm(total=cfg.steps, desc=f"{arm} seed {seed}", unit="step") as bar:

                def tick(step, loss, bar=bar):
                    bar.update(1)
                    if step % 50 == 0:
                        bar.set_postfix(loss=f"{loss:.3f}")

                head, log = train_split_head(examples, cfg, tick)
            meta = {"steps": cfg.steps, "seed": seed, "depth": cfg.depth, "train_images": len(pairs),
                    "seconds": f"{log['seconds']:.0f}", "model": args.model}  # fmt: skip
            path = head_path(args, arm, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_split_head(head, path, meta)
            write_json_atomic(path.with_suffix(".losses.json"), log["losses"])


def _settings(args):
    return list(itertools.product(args.core_levels, args.min_sizes))


def score_image(head, rgb, prob, truth, settings) -> list[dict]:
    """One row per (core level, min size) for ``head`` on one image."""
    from sampo_engine.models.split_head import predict_split_maps
    from sampo_engine.predict.instances import split_by_distance

    fg, dist = predict_split_maps(head, rgb, prob)
    mask = fg > HEAD_THRESHOLD
    rows = []
    for core, min_size in settings:
        labels = split_by_distance(mask, dist, core, min_size)
        rows.append({"core": core, "min_size": min_size, **score_instances(labels, mask, truth)})
    return rows


def stage_score(args) -> None:
    from tqdm import tqdm

    from sampo_engine.utils.imageio import read_image

    heads = load_heads(args, args.arms)
    watershed = predictor_setting(args.model)
    settings = _settings(args)
    images = scored_images(args)
    rows = []
    for split, ds, npz, image in tqdm(images, desc="score", unit="image"):
        with np.load(npz) as data:
            prob, truth = data["prob"].astype(np.float32), data["inst"]
        base = {"split": split, "dataset": ds, "image": npz.stem}
        rows.append({**base, "arm": "watershed", "seed": -1, "core": "", "min_size": watershed.min_size,
                     **score_instances(watershed.split(prob), prob > watershed.threshold, truth)})  # fmt: skip
        rgb = read_image(image)
        for (arm, seed), head in heads.items():
            for row in score_image(head, rgb, prob, truth, settings):
                rows.append({**base, "arm": arm, "seed": seed, **row})
    write_rows(rows, Path(args.out) / "rows.csv")


def main(argv=None, repo: Path | None = None) -> None:
    repo = Path.cwd() if repo is None else Path(repo)
    args = build_parser(repo).parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    todo = ["maps", "train", "score", "report"] if args.stage == "all" else [args.stage]
    start = time.perf_counter()
    if todo[0] in ("flips", "errors", "compare", "thresholds"):
        from sampo_engine.experiments import split_head_checks

        if todo[0] == "compare" and not args.against:
            sys.exit("compare needs --against <another recipe's folder>")
        getattr(split_head_checks, f"stage_{todo[0]}")(args)
    if "maps" in todo:
        stage_maps(args)
    if "train" in todo:
        stage_train(args)
    if "score" in todo:
        stage_score(args)
    if "report" in todo:
        from sampo_engine.experiments.split_head_report import report

        rows_path = Path(args.out) / "rows.csv"
        if not rows_path.exists():
            sys.exit(f"no {rows_path}: run the score stage first")
        report(args, read_rows(rows_path), len(map_pairs(args, "train")))
    print(f"done in {time.perf_counter() - start:.0f} s")
