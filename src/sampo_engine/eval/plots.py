"""PNG plots of an evaluation (matplotlib's Agg canvas, no pyplot: safe headless and beside Qt).

Every function takes the ``metrics.json`` structure (or one method entry of it) and writes one
PNG atomically. Scores are drawn in percent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TASK_TITLES = {"t1": "T1: all nuclei", "t2": "T2: nuclei of the prompted class"}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), constrained_layout=True)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    from sampo_engine.utils.atomic import atomic_path

    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def _pct(value) -> float:
    return float("nan") if value is None else 100.0 * float(value)


def plot_sensitivity(entry: dict, path: str | Path) -> Path | None:
    """Heatmap of Dice over positives 1–3 (rows) × negatives 0–3 (columns), one panel per task."""
    grids = entry.get("sensitivity") or {}
    if not grids:
        return None
    fig = _figure(4.2 * len(grids), 3.4)
    axes = fig.subplots(1, len(grids), squeeze=False)[0]
    image = None
    for ax, (task, grid) in zip(axes, grids.items()):
        values = np.asarray(grid["dice"], float) * 100
        image = ax.imshow(values, vmin=0, vmax=100, cmap="viridis", origin="upper")
        ax.set_xticks(range(len(grid["negatives"])), [str(n) for n in grid["negatives"]])
        ax.set_yticks(range(len(grid["positives"])), [str(p) for p in grid["positives"]])
        ax.set(xlabel="negative points", ylabel="positive points")
        ax.set_title(f"{task.upper()} Dice (n = {grid['n']})", fontsize=10)
        for r in range(values.shape[0]):
            for c in range(values.shape[1]):
                v = values[r, c]
                ax.text(
                    c,
                    r,
                    f"{v:.1f}",
                    ha="center",
                    va="center",
                    color="white" if v < 60 else "black",
                    fontsize=9,
                )
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="Dice (%)")
    fig.suptitle(f"Prompt sensitivity: {entry['name']}", fontsize=11)
    return _save(fig, path)


def _grouped_bars(ax, labels: list[str], series: list[tuple[str, list[float]]]) -> None:
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(series))
    for k, (name, values) in enumerate(series):
        ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)


def plot_density(metrics: dict, path: str | Path) -> Path | None:
    """Dice per density bin (nuclei per crop), grouped by method, one panel per task."""
    entries = metrics["methods"]
    tasks = [t for t in ("t1", "t2") if any(t in e.get("density", {}) for e in entries)]
    if not tasks:
        return None
    bins = metrics["protocol"]["density_bins"]
    fig = _figure(5.5 * len(tasks), 3.8)
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, task in zip(axes, tasks):
        counts = [entries[0]["density"].get(task, {}).get(b, {}).get("n", 0) for b in bins]
        labels = [f"{b}\n(n={n})" for b, n in zip(bins, counts)]
        series = [
            (e["name"], [_pct(e["density"][task][b].get("dice")) for b in bins])
            for e in entries
            if task in e.get("density", {})
        ]
        _grouped_bars(ax, labels, series)
        ax.set(xlabel="nuclei per crop", ylabel="Dice (%)", title=TASK_TITLES[task])
    axes[0].legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_per_class(metrics: dict, path: str | Path) -> Path | None:
    """T2 Dice per class, grouped by method (the trivial rows included)."""
    rows = [e for e in metrics["methods"] + metrics.get("baselines", []) if e.get("per_class")]
    if not rows:
        return None
    classes = list(rows[0]["per_class"])
    names = [rows[0]["per_class"][c]["name"] for c in classes]
    counts = [rows[0]["per_class"][c]["n"] for c in classes]
    fig = _figure(max(5.0, 1.6 * len(classes) + 2), 3.8)
    ax = fig.subplots()
    series = [(e["name"], [_pct(e["per_class"][c].get("dice")) for c in classes]) for e in rows]
    _grouped_bars(ax, [f"{n}\n(n={k})" for n, k in zip(names, counts)], series)
    ax.set(ylabel="Dice (%)", title="T2 per class")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_summary(metrics: dict, path: str | Path) -> Path | None:
    """Dice per method and task, the IoU-head-selected slot with the oracle (best slot) behind."""
    entries = metrics["methods"]
    tasks = [t for t in ("t1", "t2") if any(t in e["summary"] for e in entries)]
    if not tasks:
        return None
    fig = _figure(max(5.0, 1.2 * len(entries) * len(tasks) + 2), 3.8)
    ax = fig.subplots()
    x = np.arange(len(tasks))
    width = 0.8 / len(entries)
    for k, e in enumerate(entries):
        pos = x + (k - (len(entries) - 1) / 2) * width
        oracle = [_pct(e["summary"].get(t, {}).get("oracle_dice")) for t in tasks]
        picked = [_pct(e["summary"].get(t, {}).get("dice")) for t in tasks]
        ax.bar(pos, oracle, width, color="lightgray", edgecolor="gray")
        ax.bar(pos, picked, width * 0.7, label=e["name"])
    ax.set_xticks(x, [TASK_TITLES[t] for t in tasks])
    ax.set(ylabel="Dice (%)", ylim=(0, 100), title="Dice (grey: best slot, the oracle)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)
