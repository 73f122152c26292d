"""Checks of trained split heads beside the split-head study's own stages
(:mod:`~sampo_engine.experiments.split_head_study`; docs/split_head.md), each on the study's
cached maps and heads:

- ``flips``: each head with and without averaging over flips;
- ``errors``: why held-out true nuclei go unmatched (:mod:`sampo_engine.scoring.misses`);
- ``compare``: two recipes (two study folders) paired by seed, and their time per pass;
- ``thresholds``: the head's foreground threshold, chosen on the training images.
"""

from __future__ import annotations

import csv
import io
import sys
import time
from pathlib import Path

import numpy as np

from sampo_engine.experiments.instance_split_sweep import score_instances
from sampo_engine.experiments.split_head_files import (
    HEAD_THRESHOLD,
    head_file,
    load_heads,
    map_pairs,
    read_rows,
    scored_images,
)


def stage_flips(args) -> list[dict]:
    """Held-out PQ of each head with and without flip averaging (``predict_split_maps(...,
    flips=True)``) at ``--flip-setting``; rows to ``flips.csv``, a table on stdout."""
    from tqdm import tqdm

    from sampo_engine.models.split_head import predict_split_maps
    from sampo_engine.predict.instances import split_by_distance
    from sampo_engine.utils.imageio import read_image

    heads = load_heads(args, args.arms)
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
    from sampo_engine.models.split_head import predict_split_maps
    from sampo_engine.predict.instances import split_by_distance
    from sampo_engine.scoring.misses import MissCauses, miss_causes
    from sampo_engine.utils.atomic import write_text_atomic
    from sampo_engine.utils.imageio import read_image

    heads = load_heads(args, args.arms)
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


def _macro(rows, split: str, threshold: float, seed: int | None = None, key: str = "pq"):
    """{dataset: mean over images, "macro": mean over datasets} of one threshold (one seed, or
    the mean over seeds)."""
    seeds = sorted({r["seed"] for r in rows}) if seed is None else [seed]
    per_seed = []
    for sd in seeds:
        pick = [r for r in rows if r["split"] == split and r["threshold"] == threshold
                and r["seed"] == sd]  # fmt: skip
        by_ds = {ds: float(np.mean([r[key] for r in pick if r["dataset"] == ds]))
                 for ds in sorted({r["dataset"] for r in pick})}  # fmt: skip
        by_ds["macro"] = float(np.mean(list(by_ds.values())))
        per_seed.append(by_ds)
    return {k: float(np.mean([d[k] for d in per_seed])) for k in per_seed[0]}


def thresholds_table(rows: list[dict], base: float = HEAD_THRESHOLD) -> tuple[float, list[str]]:
    """(the threshold with the best training-image macro PQ, markdown: held-out PQ per dataset
    for every threshold, the training PQ that chose, and the chosen one's held-out difference
    from ``base`` per seed)."""
    from sampo_engine.experiments.real_data.results import PRETTY

    levels = sorted({r["threshold"] for r in rows})
    chosen = max(levels, key=lambda t: _macro(rows, "train", t)["macro"])
    datasets = sorted({r["dataset"] for r in rows if r["split"] == "test"})
    header = ("| foreground threshold | training PQ (chooses) | "
              + " | ".join(PRETTY.get(d, d) for d in datasets) + " | held-out mean |")  # fmt: skip
    lines = [header, "|" + "---|" * (len(datasets) + 3)]
    for t in levels:
        test = _macro(rows, "test", t)
        mark = " (chosen)" if t == chosen else (" (shipped)" if t == base else "")
        cells = " | ".join(f"{100 * test[d]:.1f}" for d in [*datasets, "macro"])
        lines.append(f"| {t:g}{mark} | {100 * _macro(rows, 'train', t)['macro']:.1f} | {cells} |")
    if base in levels and chosen != base:
        seeds = sorted({r["seed"] for r in rows})
        diffs = [_macro(rows, "test", chosen, s)["macro"] - _macro(rows, "test", base, s)["macro"]
                 for s in seeds]  # fmt: skip
        lines += ["", f"Held-out mean PQ, {chosen:g} minus {base:g}, per seed: "
                  + " / ".join(f"{100 * d:+.1f}" for d in diffs) + "."]  # fmt: skip
    return chosen, lines


def stage_thresholds(args) -> list[str]:
    """Each head of ``--out`` at ``--flip-setting`` with its foreground cut at every
    ``--thresholds`` level, on the training images that choose and the held-out images; the
    level chosen on the training images; rows to ``thresholds.csv``, the table on stdout and in
    ``thresholds.md``."""
    from tqdm import tqdm

    from sampo_engine.models.split_head import predict_split_maps
    from sampo_engine.predict.instances import split_by_distance
    from sampo_engine.utils.atomic import write_text_atomic
    from sampo_engine.utils.imageio import read_image

    heads = {seed: head for (_, seed), head in load_heads(args, ["image+prob"]).items()}
    core, min_size = float(args.flip_setting[0]), int(args.flip_setting[1])
    images = scored_images(args)
    rows = []
    for split, ds, npz, image in tqdm(images, desc="thresholds", unit="image"):
        with np.load(npz) as data:
            prob, truth = data["prob"].astype(np.float32), data["inst"]
        rgb = read_image(image)
        for seed, head in heads.items():
            fg, dist = predict_split_maps(head, rgb, prob)
            for t in args.thresholds:
                labels = split_by_distance(fg > t, dist, core, min_size)
                rows.append({"split": split, "dataset": ds, "image": npz.stem, "seed": seed,
                             "threshold": float(t), **score_instances(labels, fg > t, truth)})  # fmt: skip
    keys = ("split", "dataset", "image", "seed", "threshold", "pq", "dq", "sq", "dice")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(Path(args.out) / "thresholds.csv", buf.getvalue())
    _, lines = thresholds_table(rows)
    lines += ["", f"{len(heads)} head(s) at core > {core:g}, ≥ {min_size} px; PQ × 100, means "
              "over images, then datasets, then heads."]  # fmt: skip
    write_text_atomic(Path(args.out) / "thresholds.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return lines
