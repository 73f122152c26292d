"""Reading the real-data study's evaluations back: each held-out dataset's ``metrics.json`` and
``per_query.csv`` (``sampo-engine eval``), a method's entry and its numbers, per-seed values of a
variant and the paired per-query differences between two methods."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

BASE_NAME = "small (no adapter)"
T1_AS_T2 = "t1-as-t2:"
FLOOR_NAME = "classical floor (hematoxylin + watershed)"
PRETTY = {
    "consep_train": "CoNSeP",
    "monuseg_train": "MoNuSeg",
    "gbm40": "GBM40",
    "pannuke_breast_2class": "PanNuke-2",
}


def load_eval(out: Path, folder: str, name: str) -> tuple[dict, list[dict]] | None:
    """``(metrics, per-query rows)`` of ``<out>/<folder>/<name>``; None before that eval ran."""
    path = out / folder / name
    if not (path / "metrics.json").exists():
        return None
    metrics = json.loads((path / "metrics.json").read_text())
    with open(path / "per_query.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return metrics, rows


def method_entry(metrics: dict, name: str) -> dict | None:
    for m in metrics["methods"] + metrics.get("baselines", []):
        if m["name"] == name:
            return m
    return None


def entry_value(entry: dict | None, task: str, key: str, block: str = "summary") -> float:
    try:
        return float(entry[block][task][key])
    except (KeyError, TypeError):
        return float("nan")


def seed_values(metrics, variant, seeds, task, key, block="summary") -> np.ndarray:
    return np.array(
        [entry_value(method_entry(metrics, f"{variant}_s{s}"), task, key, block) for s in seeds]
    )


def paired_difference(rows: list[dict], task: str, a: str, b: str) -> tuple[float, int]:
    """Mean over ``task`` queries of Dice(a) − Dice(b) on the same queries, and their number."""
    diffs = [
        float(r[f"{a}:dice"]) - float(r[f"{b}:dice"])
        for r in rows
        if r["task"] == task
        and r.get(f"{a}:dice") not in (None, "")
        and r.get(f"{b}:dice") not in (None, "")
    ]
    return (float(np.mean(diffs)) if diffs else float("nan")), len(diffs)


def dataset_tasks(info, ds) -> list[str]:
    return ["t1", "t2"] if "t2" in info["datasets"][ds]["tasks"] else ["t1"]


def class_dice(entry, cid) -> float:
    try:
        return float(entry["per_class"][cid]["dice"])
    except (KeyError, TypeError):
        return float("nan")
