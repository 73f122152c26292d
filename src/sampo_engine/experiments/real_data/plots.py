"""The real-data study's figures (docs/images/results_*.png): held-out Dice per method, dataset
and task, and the prompt-sensitivity grids of SAMPO and its L_sup-only twin."""

from __future__ import annotations

import numpy as np

from sampo_engine.experiments.real_data.plan import LABELS
from sampo_engine.experiments.real_data.results import (
    BASE_NAME,
    FLOOR_NAME,
    PRETTY,
    dataset_tasks,
    entry_value,
    method_entry,
    seed_values,
)


def sensitivity_plot(metrics, seeds, info, ds, plt):
    tasks = dataset_tasks(info, ds)
    fig, axes = plt.subplots(len(tasks), 2, figsize=(8, 3.2 * len(tasks)), squeeze=False)
    for r, task in enumerate(tasks):
        for c, variant in enumerate(("sampo", "lsup")):
            grids = []
            for s in seeds:
                e = method_entry(metrics, f"{variant}_s{s}")
                if e and e.get("sensitivity", {}).get(task):
                    grids.append(np.array(e["sensitivity"][task]["dice"], float))
            ax = axes[r, c]
            if not grids:
                ax.axis("off")
                continue
            g = np.mean(grids, axis=0) * 100
            ax.imshow(g, cmap="viridis", vmin=0, vmax=100)
            for (i, j), v in np.ndenumerate(g):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", color="w", fontsize=9)
            ax.set_xticks(range(g.shape[1]), [str(k) for k in range(g.shape[1])])
            ax.set_yticks(range(g.shape[0]), [str(k + 1) for k in range(g.shape[0])])
            ax.set_xlabel("negative clicks")
            ax.set_ylabel("positive clicks")
            ax.set_title(f"{LABELS[variant].split(' (')[0]} — {task.upper()}", fontsize=10)
    fig.tight_layout()
    return fig


def dice_plot(evals, info, seeds, variants, plt):
    groups = [(ds, "t1") for ds in evals] + [
        (ds, "t2") for ds in evals if "t2" in info["datasets"][ds]["tasks"]
    ]
    methods = [("classical floor", FLOOR_NAME, None), ("base", BASE_NAME, None)] + [
        (LABELS[v].split(" (")[0], None, v) for v in variants
    ]
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(groups)), 4))
    width = 0.8 / len(methods)
    for k, (lab, name, variant) in enumerate(methods):
        means, stds = [], []
        for ds, task in groups:
            metrics = evals[ds][0]
            if variant:
                v = seed_values(metrics, variant, seeds, task, "dice") * 100
            else:
                v = np.array([entry_value(method_entry(metrics, name), task, "dice")]) * 100
            means.append(np.nanmean(v))
            stds.append(np.nanstd(v, ddof=1) if v.size > 1 else 0)
        x = np.arange(len(groups)) + (k - (len(methods) - 1) / 2) * width
        ax.bar(x, means, width, yerr=stds, label=lab, capsize=2)
    ax.set_xticks(range(len(groups)), [f"{PRETTY.get(d, d)}\n{t.upper()}" for d, t in groups])
    ax.set_ylabel("held-out Dice × 100 (IoU-head slot)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, ncol=3, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
