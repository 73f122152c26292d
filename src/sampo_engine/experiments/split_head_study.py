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
"""

from __future__ import annotations

import csv
import io
import itertools
import sys
import time
from pathlib import Path

import numpy as np

from sampo_engine.experiments.instance_split_sweep import predictor_setting, score_instances

#: the instance-labelled datasets of the real-data split
DATASETS = ("consep_train", "monuseg_train", "gbm40", "pannuke_breast_2class")
ARMS = ("image+prob", "image")
#: the head's foreground probability is cut here (its own BCE + Dice optimum)
HEAD_THRESHOLD = 0.5


def build_parser(repo: Path):
    import argparse

    parser = argparse.ArgumentParser(
        description="Does a learned split head cut whole-image nuclei better than the watershed "
        "of the model's probability? (docs/split_head.md)"
    )
    parser.add_argument(
        "stage",
        choices=("maps", "train", "score", "report", "all", "flips", "compare", "errors"),
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
        "--against", default="", help="compare: another recipe's folder (its rows.csv and heads)"
    )
    parser.add_argument("--docs", default=str(repo / "docs"))
    parser.add_argument("--page", default="split_head.md")
    parser.add_argument(
        "--flip-setting", type=float, nargs=2, default=(0.4, 48), metavar=("CORE", "MIN_SIZE"),
        help="flips, errors: the core level and minimum size scored (default: the shipped "
        "head's)",
    )  # fmt: skip
    return parser


def _folder(args, split: str, ds: str) -> Path:
    return Path(args.split_dir) / "data" / split / ds


def _map_folder(args, split: str, ds: str) -> Path:
    return Path(args.out) / "maps" / split / ds


def map_pairs(args, split: str, choosing: bool = False) -> list[tuple[str, Path, Path]]:
    """(dataset, cached map, image file) of every cached image of ``split`` (``choosing``: only
    the training images that choose the setting)."""
    from sampo_engine.experiments.instance_study import DATASETS as CHOOSE

    out = []
    for ds in args.datasets:
        paths = sorted(_map_folder(args, split, ds).glob("*.npz"))
        if args.max_images:
            paths = paths[: args.max_images]
        if choosing:
            paths = paths[: args.choose_images or CHOOSE.get(ds, 6)]
        for npz in paths:
            out.append((ds, npz, _folder(args, split, ds) / f"{npz.stem}_image.png"))
    return out


def stage_maps(args) -> None:
    from tqdm import tqdm

    from sampo_engine.experiments.instance_split_sweep import probability_maps
    from sampo_engine.models.loading import load_model
    from sampo_engine.predict.resample import resample_factor

    for split, ds in itertools.product(("train", "test"), args.datasets):
        if not _folder(args, split, ds).is_dir():
            sys.exit(f"no image folder {_folder(args, split, ds)}: run `python "
                     "tools/real_data_study.py split` first")  # fmt: skip
    model = load_model(args.model, args.checkpoint or None, device=args.device)
    scale = resample_factor(args.model, 0.0, 0.0)
    for split, ds in itertools.product(("train", "test"), args.datasets):
        with tqdm(desc=f"maps {split}/{ds}", unit="image", leave=False) as bar:
            probability_maps(
                model, _folder(args, split, ds), _map_folder(args, split, ds), 0,
                args.max_images or None, args.device, progress=lambda name: bar.update(1),
                scale=scale,
            )  # fmt: skip


def head_path(args, arm: str, seed: int) -> Path:
    return head_file(args.out, arm, seed)


def head_file(folder: str | Path, arm: str, seed: int) -> Path:
    """The head of ``arm`` and ``seed`` in a study folder."""
    return Path(folder) / "heads" / f"{arm}_s{seed}.safetensors"


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

    from sampo_engine.models.split_head import load_split_head
    from sampo_engine.utils.imageio import read_image

    heads = {(arm, s): head_path(args, arm, s) for arm in args.arms for s in args.seeds}
    heads = {k: load_split_head(p) for k, p in heads.items() if p.exists()}
    if not heads:
        sys.exit(f"no heads under {args.out}/heads: run the train stage first")
    watershed = predictor_setting(args.model)
    settings = _settings(args)
    images = [("train", *p) for p in map_pairs(args, "train", choosing=True)]
    images += [("test", *p) for p in map_pairs(args, "test")]
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


FIELDS = ("split", "dataset", "image", "arm", "seed", "core", "min_size", "dice", "pq", "dq",
          "sq", "centroid_f1", "count_ratio")  # fmt: skip


def stage_flips(args) -> list[dict]:
    """Held-out PQ of each head with and without flip averaging (``predict_split_maps(...,
    flips=True)``) at ``--flip-setting``; rows to ``flips.csv``, a table on stdout."""
    from tqdm import tqdm

    from sampo_engine.models.split_head import load_split_head, predict_split_maps
    from sampo_engine.predict.instances import split_by_distance
    from sampo_engine.utils.imageio import read_image

    heads = {(arm, s): head_path(args, arm, s) for arm in args.arms for s in args.seeds}
    heads = {k: load_split_head(p) for k, p in heads.items() if p.exists()}
    if not heads:
        sys.exit(f"no heads under {args.out}/heads: run the train stage first")
    core, min_size = float(args.flip_setting[0]), int(args.flip_setting[1])
    rows = []
    for ds, npz, image in tqdm(map_pairs(args, "test"), desc="flips", unit="image"):
        with np.load(npz) as data:
            prob, truth = data["prob"].astype(np.float32), data["inst"]
        rgb = read_image(image)
        for (arm, seed), head in heads.items():
            for flips in (False, True):
                start = time.perf_counter()
                fg, dist = predict_split_maps(head, rgb, prob, flips=flips)
                seconds = time.perf_counter() - start
                mask = fg > HEAD_THRESHOLD
                labels = split_by_distance(mask, dist, core, min_size)
                rows.append({"dataset": ds, "image": npz.stem, "arm": arm, "seed": seed,
                             "flips": int(flips), "seconds": seconds,
                             **score_instances(labels, mask, truth)})  # fmt: skip
    keys = ("dataset", "image", "arm", "seed", "flips", "seconds", "pq", "dq", "sq", "dice")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    from sampo_engine.utils.atomic import write_text_atomic

    write_text_atomic(Path(args.out) / "flips.csv", buf.getvalue())
    print("\n".join(flips_table(rows)))
    return rows


def flips_table(rows: list[dict]) -> list[str]:
    """Markdown: per dataset, mean PQ / DQ / SQ / Dice (× 100) without and with flip averaging
    (means over images, then seeds), the PQ difference per seed and the time ratio."""

    def mean(ds, flips, key, seed=None):
        pick = [r[key] for r in rows if r["dataset"] == ds and r["flips"] == flips
                and (seed is None or r["seed"] == seed)]  # fmt: skip
        return float(np.mean(pick))

    seeds = sorted({r["seed"] for r in rows})
    lines = ["| data | PQ | with flips | DQ | with flips | SQ | with flips | Dice | with flips | "
             "PQ difference per seed | time × |", "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for ds in sorted({r["dataset"] for r in rows}):
        cells = [f"{100 * mean(ds, f, k):.1f}" for k in ("pq", "dq", "sq", "dice") for f in (0, 1)]
        diffs = " / ".join(
            f"{100 * (mean(ds, 1, 'pq', s) - mean(ds, 0, 'pq', s)):+.1f}" for s in seeds
        )
        ratio = mean(ds, 1, "seconds") / max(mean(ds, 0, "seconds"), 1e-9)
        lines.append(f"| {ds} | {' | '.join(cells)} | {diffs} | {ratio:.1f} |")
    return lines


def stage_errors(args) -> list[str]:
    """Why held-out true nuclei go unmatched with each head of ``--out`` at ``--flip-setting``
    (:func:`~sampo_engine.scoring.misses.miss_causes`): per dataset, counts summed over the
    images, mean over the heads; a table on stdout and in ``<out>/errors.md``."""
    from tqdm import tqdm

    from sampo_engine.experiments.real_data.results import PRETTY
    from sampo_engine.models.split_head import load_split_head, predict_split_maps
    from sampo_engine.predict.instances import split_by_distance
    from sampo_engine.scoring.misses import MissCauses, miss_causes
    from sampo_engine.utils.atomic import write_text_atomic
    from sampo_engine.utils.imageio import read_image

    heads = {(arm, s): head_path(args, arm, s) for arm in args.arms for s in args.seeds}
    heads = {k: load_split_head(p) for k, p in heads.items() if p.exists()}
    if not heads:
        sys.exit(f"no heads under {args.out}/heads: run the train stage first")
    core, min_size = float(args.flip_setting[0]), int(args.flip_setting[1])
    totals: dict[str, MissCauses] = {}
    for ds, npz, image in tqdm(map_pairs(args, "test"), desc="errors", unit="image"):
        with np.load(npz) as data:
            prob, truth = data["prob"].astype(np.float32), data["inst"]
        rgb = read_image(image)
        for head in heads.values():
            fg, dist = predict_split_maps(head, rgb, prob)
            labels = split_by_distance(fg > HEAD_THRESHOLD, dist, core, min_size)
            totals[ds] = totals.get(ds, MissCauses()) + miss_causes(truth, labels)
    keys = ("true", "matched", "merged", "misshapen", "not_found", "spurious", "pieces")
    lines = [
        "| data | true nuclei | matched | missed: merged | missed: misshapen | missed: not found "
        "| unmatched predictions: spurious | unmatched predictions: pieces |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for ds in sorted(totals):
        counts = totals[ds].as_dict()
        cells = " | ".join(f"{counts[k] / len(heads):.0f}" for k in keys)
        lines.append(f"| {PRETTY.get(ds, ds)} | {cells} |")
    lines += ["", f"{len(heads)} head(s) at core > {core:g}, ≥ {min_size} px; counts summed over "
              "the held-out images, mean over the heads."]  # fmt: skip
    write_text_atomic(Path(args.out) / "errors.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return lines


def head_seconds(path: Path, size: int = 1000, repeats: int = 3) -> float:
    """Best-of-``repeats`` seconds of the head at ``path`` over a ``size``² tile (one pass)."""
    from sampo_engine.models.split_head import load_split_head, predict_split_maps

    head = load_split_head(path)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    prob = rng.random((size, size), dtype=np.float32)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict_split_maps(head, rgb, prob)
        times.append(time.perf_counter() - start)
    return min(times)


def stage_compare(args) -> list[str]:
    """``--out``'s heads against ``--against``'s (another recipe on the same maps), each at the
    setting chosen on its training images, paired by seed, and the time of one pass of each
    recipe's seed-0 head over a 1000² tile in this run: a table on stdout and in
    ``<out>/compare.md``."""
    from sampo_engine.experiments.split_head_report import compare_table
    from sampo_engine.utils.atomic import write_text_atomic

    paths = [Path(args.out) / "rows.csv", Path(args.against) / "rows.csv"]
    for path in paths:
        if not path.exists():
            sys.exit(f"no {path}: run the score stage for both recipes first")
    names = (Path(args.against).name, Path(args.out).name)
    lines = compare_table(read_rows(paths[0]), read_rows(paths[1]), names)
    heads = [head_file(folder, "image+prob", 0) for folder in (args.against, args.out)]
    if all(h.exists() for h in heads):
        t_old, t_new = (head_seconds(h) for h in heads)
        lines += ["", f"One pass over a 1000² tile (this machine, this run): {names[0]} "
                  f"{t_old:.2f} s, {names[1]} {t_new:.2f} s (× {t_new / t_old:.2f})."]  # fmt: skip
    write_text_atomic(Path(args.out) / "compare.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return lines


def write_rows(rows, path: Path) -> None:
    from sampo_engine.utils.atomic import write_text_atomic

    buf = io.StringIO()
    writer = csv.DictWriter(buf, FIELDS)
    writer.writeheader()
    writer.writerows({k: row[k] for k in FIELDS} for row in rows)
    write_text_atomic(path, buf.getvalue())


def read_rows(path: Path) -> list[dict]:
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            row["seed"] = int(row["seed"])
            row["core"] = float(row["core"]) if row["core"] else None
            row["min_size"] = int(row["min_size"])
            for k in FIELDS[7:]:
                row[k] = float(row[k])
            rows.append(row)
    return rows


def main(argv=None, repo: Path | None = None) -> None:
    repo = Path.cwd() if repo is None else Path(repo)
    args = build_parser(repo).parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    todo = ["maps", "train", "score", "report"] if args.stage == "all" else [args.stage]
    start = time.perf_counter()
    if "flips" in todo:
        stage_flips(args)
    if "errors" in todo:
        stage_errors(args)
    if "compare" in todo:
        if not args.against:
            sys.exit("compare needs --against <another recipe's folder>")
        stage_compare(args)
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
