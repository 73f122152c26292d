"""``docs/split_head.md``: the split-head study's tables and plot, read back from
``<out>/rows.csv`` (:mod:`sampo_engine.experiments.split_head_study`).

Every head's (core level, minimum size) is chosen on the training images (macro mean PQ over the
datasets, mean over seeds); held-out numbers are means over images, then seeds, with the range
over seeds, beside the watershed split on the same maps; differences are paired by seed.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from sampo_engine.experiments.instance_split_sweep import predictor_setting
from sampo_engine.experiments.pages import save_figure, write_page
from sampo_engine.experiments.real_data.results import PRETTY
from sampo_engine.utils.tables import markdown_table

MEASURES = (
    ("pq", "PQ"),
    ("dq", "DQ (F1 at IoU 0.5)"),
    ("sq", "SQ (IoU of matches)"),
    ("dice", "Dice (foreground)"),
    ("centroid_f1", "nucleus F1 (12 px)"),
    ("count_ratio", "predicted / true nuclei"),
)
WATERSHED = "watershed"


def per_seed(rows, split: str, arm: str, core, min_size, measure: str = "pq"):
    """{seed: {dataset: mean over images, "macro": mean over datasets}} of one setting."""
    values: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["split"] != split or r["arm"] != arm:
            continue
        if arm != WATERSHED and (r["core"] != core or r["min_size"] != min_size):
            continue
        values[r["seed"]][r["dataset"]].append(r[measure])
    out = {}
    for seed, by_ds in values.items():
        means = {ds: float(np.mean(v)) for ds, v in by_ds.items()}
        means["macro"] = float(np.mean(list(means.values())))
        out[seed] = means
    return out


def chosen_setting(rows, arm: str) -> tuple[float, int]:
    """The (core level, min size) of ``arm`` with the best mean (over seeds) macro PQ on the
    training images."""
    settings = {(r["core"], r["min_size"]) for r in rows if r["arm"] == arm}

    def train_pq(setting):
        seeds = per_seed(rows, "train", arm, *setting)
        return np.mean([v["macro"] for v in seeds.values()])

    return max(sorted(settings), key=train_pq)


class Arm:
    """One method's held-out numbers at its chosen setting."""

    def __init__(self, rows, arm: str):
        self.arm = arm
        self.setting = (None, 0) if arm == WATERSHED else chosen_setting(rows, arm)
        self.by_measure = {m: per_seed(rows, "test", arm, *self.setting, m) for m, _ in MEASURES}
        self.train_pq = per_seed(rows, "train", arm, *self.setting)

    @property
    def seeds(self) -> list[int]:
        return sorted(self.by_measure["pq"])

    def cell(self, measure: str, key: str) -> str:
        vals = [v[key] for v in self.by_measure[measure].values() if key in v]
        if not vals:
            return "–"
        k = 1.0 if measure == "count_ratio" else 100.0
        fmt = "{:.2f}" if measure == "count_ratio" else "{:.1f}"
        text = fmt.format(k * float(np.mean(vals)))
        if len(vals) > 1:
            text += f" ({fmt.format(k * min(vals))}–{fmt.format(k * max(vals))})"
        return text


def _title(arm: Arm) -> str:
    if arm.arm == WATERSHED:
        return "watershed of the probability (the predictor until now)"
    core, size = arm.setting
    reads = "image + probability" if arm.arm == "image+prob" else "image only"
    return f"split head, {reads} (core > {core:g}, ≥ {size} px)"


def _held_out_table(arms, datasets) -> list[str]:
    header = ["method", "measure", *(PRETTY.get(d, d) for d in datasets), "mean"]
    table = []
    for arm in arms:
        for measure, name in MEASURES:
            cells = [arm.cell(measure, d) for d in datasets]
            table.append([_title(arm), name, *cells, arm.cell(measure, "macro")])
    return markdown_table(header, table).rstrip("\n").split("\n")


def _paired_table(arms, base: Arm, datasets) -> list[str]:
    """Per head arm and seed: held-out PQ minus the watershed's (the maps are the same, so the
    watershed has one value per image)."""
    ref = base.by_measure["pq"][-1]
    header = ["method", "seed", *(PRETTY.get(d, d) for d in datasets), "mean"]
    table = []
    for arm in arms:
        for seed in arm.seeds:
            v = arm.by_measure["pq"][seed]
            cells = [f"{100 * (v[d] - ref[d]):+.1f}" for d in datasets]
            table.append([_title(arm), seed, *cells, f"{100 * (v['macro'] - ref['macro']):+.1f}"])
    return markdown_table(header, table).rstrip("\n").split("\n")


def plot(arms, datasets, path: Path) -> Path:
    """Held-out PQ per dataset, one bar per method (the range over seeds as error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [*datasets, "macro"]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        vals = [[100 * v[k] for v in arm.by_measure["pq"].values()] for k in keys]
        mean = [np.mean(v) for v in vals]
        err = [[m - min(v) for m, v in zip(mean, vals)], [max(v) - m for m, v in zip(mean, vals)]]
        x = np.arange(len(keys)) + (i - (len(arms) - 1) / 2) * width
        label = {"watershed": "watershed", "image+prob": "head: image + probability",
                 "image": "head: image only"}[arm.arm]  # fmt: skip
        ax.bar(x, mean, width, yerr=err if len(arm.seeds) > 1 else None, label=label, capsize=2)
    ax.set_xticks(np.arange(len(keys)), [PRETTY.get(k, "mean") for k in keys])
    ax.set_ylabel("held-out whole-image PQ")
    ax.legend(fontsize=8)
    ax.set_title("How touching nuclei are cut apart (nuclei-small, held-out whole images)",
                 fontsize=10)  # fmt: skip
    return save_figure(fig, path)


def report(args, rows, n_trained: int) -> Path:
    """Write the page from the score rows; ``n_trained``: training images the heads learnt from."""
    datasets = [d for d in args.datasets if any(r["dataset"] == d for r in rows)]
    n_images = {s: len({(r["dataset"], r["image"]) for r in rows if r["split"] == s})
                for s in ("train", "test")}  # fmt: skip
    present = [a for a in ("image+prob", "image") if any(r["arm"] == a for r in rows)]
    base = Arm(rows, WATERSHED)
    heads = [Arm(rows, a) for a in present]
    arms = [base, *heads]
    docs = Path(args.docs)
    image = plot(arms, datasets, docs / "images" / Path(args.page).with_suffix(".png").name)
    ws = predictor_setting(args.model)
    seeds = sorted({r["seed"] for r in rows if r["arm"] != WATERSHED})
    answer = []
    for arm in heads:
        diffs = [100 * (arm.by_measure["pq"][s]["macro"] - base.by_measure["pq"][-1]["macro"])
                 for s in arm.seeds]  # fmt: skip
        answer.append(
            f"- {_title(arm)}: held-out mean PQ {arm.cell('pq', 'macro')} against "
            f"{base.cell('pq', 'macro')} for the watershed — **{np.mean(diffs):+.1f}** "
            f"(per seed {', '.join(f'{d:+.1f}' for d in diffs)})."
        )
    text = [
        "# Cutting touching nuclei apart: a learned split head",
        "",
        "Generated by `python tools/split_head_study.py all` (module "
        "`sampo_engine.experiments.split_head_study`). For model "
        f"`{args.model}`, every image's whole-image T1 probability comes from the evaluation's "
        "3 + 3 clicks in one tile and prompt propagation for the rest, at the model's own "
        "resampling (computed once). The **split head** (`sampo_engine.models.split_head`: a "
        f"two-level U-Net of width {args.width}, at the image's own resolution) reads the image "
        "and that probability and draws the nuclei's foreground and the normalised distance to "
        "each nucleus' border; the nuclei are the cores of that distance (above a *core level*) "
        "grown by a watershed over the head's foreground (`split_by_distance`). Each head is "
        f"trained for {args.steps} steps (batch {args.batch_size}, {args.crop} px crops) on the "
        f"{n_trained} training images of the real-data split, seeds "
        f"{', '.join(map(str, seeds))}; its core level and minimum size are chosen on "
        f"{n_images['train']} of those images and it is **reported on the {n_images['test']} "
        "held-out whole images**, "
        "beside the watershed of the same probability at the predictor's setting "
        f"(threshold {ws.threshold:g}, σ {ws.sigma:g} px, seeds ≥ {ws.min_distance} px apart, "
        f"≥ {ws.min_size} px; docs/instances.md). Values × 100 except the count ratio; means "
        "over images, then datasets, then seeds; in brackets the range over seeds.",
        "",
        "## Answer",
        "",
        *answer,
        "",
        "## Held-out whole images",
        "",
        *_held_out_table(arms, datasets),
        "",
        f"![held-out PQ by method](images/{image.name})",
        "",
        "## Paired by seed: held-out PQ minus the watershed's",
        "",
        *_paired_table(heads, base, datasets),
        "",
        "Training-image PQ at the chosen settings (what chose them): "
        + "; ".join(
            f"{_title(a)} {100 * np.mean([v['macro'] for v in a.train_pq.values()]):.1f}"
            for a in arms
        )
        + ".",
        "",
    ]
    return write_page(docs, args.page, text)


def compare_table(rows, against, names: tuple[str, str]) -> list[str]:
    """Markdown: the ``image+prob`` heads of two recipes (``rows`` and ``against``, each from its
    own ``rows.csv``, ``names`` = (theirs, ours)), each at its own setting chosen on the training
    images: held-out PQ / DQ / SQ / Dice per dataset and the mean over datasets (means over
    images, then seeds), and the PQ difference paired by seed."""
    new, old = Arm(rows, "image+prob"), Arm(against, "image+prob")
    datasets = sorted({r["dataset"] for r in rows if r["split"] == "test"})
    seeds = sorted(set(new.seeds) & set(old.seeds))
    header = ["data"]
    for _, title in MEASURES[:4]:
        header += [f"{title.split(' ')[0]} {names[0]}", names[1]]  # theirs, then ours
    header.append("PQ difference per seed")
    table = []
    for key in [*datasets, "macro"]:
        cells = []
        for measure, _ in MEASURES[:4]:
            cells += [old.cell(measure, key).split(" ")[0], new.cell(measure, key).split(" ")[0]]
        diffs = " / ".join(
            f"{100 * (new.by_measure['pq'][s][key] - old.by_measure['pq'][s][key]):+.1f}"
            for s in seeds
        )
        table.append([PRETTY.get(key, "mean"), *cells, diffs])
    lines = markdown_table(header, table).rstrip("\n").split("\n")
    settings = "; ".join(
        f"{name}: core > {arm.setting[0]:g}, ≥ {arm.setting[1]} px, training-image PQ "
        f"{100 * np.mean([v['macro'] for v in arm.train_pq.values()]):.1f}"
        for name, arm in zip(names, (old, new))
    )
    return [*lines, "", f"Chosen on the training images — {settings}."]
