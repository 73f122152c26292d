"""Training curves as a PNG (matplotlib, Agg backend: works headless)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def _smooth(values: list[float], window: int) -> np.ndarray:
    v = np.array([x if x is not None and not math.isnan(x) else np.nan for x in values], float)
    if len(v) < window or window <= 1:
        return v
    out = np.full_like(v, np.nan)
    for i in range(len(v)):
        chunk = v[max(0, i - window + 1) : i + 1]
        out[i] = np.nanmean(chunk) if np.isfinite(chunk).any() else np.nan
    return out


def plot_training(history: list[dict], epochs: list[dict], path: str | Path) -> None:
    """Four panels: losses, preference accuracy and usable pairs, reward margin, validation Dice."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from sampo_engine.utils.atomic import atomic_path

    steps = [h["step"] for h in history]
    window = max(1, len(history) // 50)
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
    ax = axes[0, 0]
    for key in ("loss", "sup", "pref"):
        if history:
            ax.plot(steps, _smooth([h.get(key) for h in history], window), label=key)
    ax.set(title="loss", xlabel="step")
    ax.legend()
    ax = axes[0, 1]
    for key in ("pref_acc", "usable_pairs", "iou_best"):
        if history:
            ax.plot(steps, _smooth([h.get(key) for h in history], window), label=key)
    ax.axhline(0.5, color="gray", lw=0.5, ls="--")
    ax.set(title="preference accuracy / usable pairs / best-slot IoU", xlabel="step", ylim=(0, 1))
    ax.legend()
    ax = axes[1, 0]
    if history:
        ax.plot(steps, _smooth([h.get("margin") for h in history], window), label="reward margin")
        ax.plot(
            steps,
            _smooth([h.get("grad_ratio") for h in history], window),
            label="pref/sup grad ratio",
        )
    ax.set(title="DPO reward margin", xlabel="step")
    ax.legend()
    ax = axes[1, 1]
    for key in ("t1_dice", "t2_dice"):
        pts = [(e["step"], e[key]) for e in epochs if key in e]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=f"held-out {key}")
    ax.set(title="validation (held-out images)", xlabel="step", ylim=(0, 1))
    if any(k in e for e in epochs for k in ("t1_dice", "t2_dice")):
        ax.legend()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
