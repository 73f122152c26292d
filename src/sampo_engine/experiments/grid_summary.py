"""The ``experiments.json`` summary of one grid: its settings, runs and every run's scores.

The scores are the grid's evaluation's (``OUT/eval/metrics.json``), reduced per run and task to
the numbers of the paper's tables; :mod:`~sampo_engine.experiments.grid_report` renders them.
NaN is written as null.
"""

from __future__ import annotations

import time
from pathlib import Path

from sampo_engine._version import __version__
from sampo_engine.experiments.grid_config import ExperimentsConfig, Preset
from sampo_engine.experiments.grid_data import GridData
from sampo_engine.experiments.grid_plan import RunSpec
from sampo_engine.utils.jsonable import strict_jsonable


def build_summary(
    config: ExperimentsConfig,
    p: Preset,
    runs: list[RunSpec],
    rows: dict[str, list[RunSpec]],
    data: GridData,
    metrics: dict,
    out: Path,
    t0: float,
) -> dict:
    """The summary of a finished grid (strict JSON values): ``metrics`` is its evaluation's
    structure, ``rows`` the table rows of :func:`~sampo_engine.experiments.grid_plan.plan_runs`
    and ``t0`` the grid's start (:func:`time.perf_counter`)."""
    by_name = {m["name"]: m for m in metrics["methods"]}
    results = {}
    for spec in runs:
        name = spec.name(p.lora_rank)
        results[name] = result_of(by_name[name])
    base_entry = next(m for m in metrics["methods"] if m["kind"] == "base")
    summary = {
        "format": "sampo-experiments",
        "format_version": 1,
        "package_version": __version__,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "preset": config.preset,
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in p.__dict__.items()},
        "datasets": [
            {
                "label": data.label,
                "train": str(data.train_path),
                "test": str(data.test_path),
                "eval": str((out / "eval").resolve()),
                "tasks": list(metrics["data"]["queries"]),
                "queries": metrics["data"]["queries"],
                "prompts_sha256": metrics["prompts_sha256"],
                "base": {"name": base_entry["name"], **result_of(base_entry)},
                "trivial": [
                    {"name": b["name"], **result_of(b)} for b in metrics.get("baselines", [])
                ],
                "runs": [
                    {"name": s.name(p.lora_rank), **s.__dict__, "key": list(s.key)} for s in runs
                ],
                "results": results,
            }
        ],
        "tables": {t: [list(s.key) for s in specs] for t, specs in rows.items()},
        "default_rank": p.lora_rank,
        "seconds": time.perf_counter() - t0,
    }
    return strict_jsonable(summary)


def result_of(entry: dict) -> dict:
    """Per task the table numbers of one method entry of ``metrics.json``: n, IoU, Dice (and
    their oracle), PQ, AJI, F1 and the robustness spread (None where not scored)."""
    out = {}
    for task, s in entry.get("summary", {}).items():
        row = {k: s.get(k) for k in ("n", "iou", "dice", "oracle_iou", "oracle_dice")}
        inst = entry.get("instances", {}).get(task, {})
        row.update({k: inst.get(k) for k in ("pq", "aji", "f1")})
        rob = entry.get("robustness", {}).get(task)
        row["robustness_std_dice"] = rob["mean_std_dice"] if rob else None
        out[task] = row
    return out
