"""The markdown report of one or more experiment grids (``experiments.md``), and
:func:`gather`, which merges the summaries of several grids (e.g. one per dataset) into one.

Scores are in percent, mean ± standard deviation over seeds, from the ``experiments.json``
summaries alone (:mod:`~sampo_engine.experiments.grid_summary`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sampo_engine.errors import ConfigError, DataError
from sampo_engine.utils.tables import markdown_table


def render_experiments(summaries: list[dict], out: Path | None = None) -> str:
    """The gathered markdown report of one or more experiment grids (one per dataset)."""
    datasets = [ds for s in summaries for ds in s["datasets"]]
    tables = _merged_tables(summaries)
    cols = _columns(datasets)
    lines = _preamble(summaries, datasets, out)
    if "main" in tables:
        lines += _main_table(tables["main"], datasets, cols)
    if "ablation" in tables:
        lines += _grid_table(
            f"Table 2: ablation (data fraction {round(tables['ablation'][0][0] * 100)}%)",
            tables["ablation"],
            ["L_inter", "L_intra", "L_sup"],
            lambda k: [_check(k[3]), _check(k[4]), _check(k[5])],
            cols,
        )
    if "alpha" in tables:
        lines += _grid_table(
            f"Table 3: preference weight α (data fraction {round(tables['alpha'][0][0] * 100)}%)",
            tables["alpha"],
            ["α"],
            lambda k: [f"{k[1]:.2f}"],
            cols,
        )
    if "rank" in tables:
        lines += _grid_table(
            f"Table 4: LoRA rank (data fraction {round(tables['rank'][0][0] * 100)}%)",
            tables["rank"],
            ["Rank"],
            lambda k: [str(k[2])],
            cols,
        )
    lines += [
        "## Runs",
        "",
        "Adapter bundles (training curves in each folder's loss_curve.png):",
        "",
    ]
    for ds in datasets:
        names = ", ".join(f"`{r['name']}`" for r in ds["runs"])
        lines.append(f"- {ds['label']}: {names}")
    lines.append("")
    return "\n".join(lines)


def gather(dirs: list[str], out: str) -> Path:
    """Merge the experiments.json of several grids (e.g. PanNuke and CoNSeP) into one report."""
    from sampo_engine.utils.atomic import write_json_atomic, write_text_atomic

    summaries = []
    for d in dirs:
        path = Path(d) / "experiments.json"
        if not path.is_file():
            raise DataError(
                f"{d} holds no experiments.json; pass the --out folder of a finished grid"
            )
        summaries.append(json.loads(path.read_text()))
    out_path = Path(out)
    if (
        out_path.is_dir()
        and any(out_path.iterdir())
        and not (out_path / "experiments_gathered.json").is_file()
    ):
        raise ConfigError(
            f"--out {out} is a non-empty folder; choose a new one for the gathered report"
        )
    out_path.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        out_path / "experiments_gathered.json",
        {"sources": [str(Path(d).resolve()) for d in dirs], "summaries": summaries},
    )
    write_text_atomic(out_path / "experiments.md", render_experiments(summaries, out_path))
    return out_path / "experiments.md"


def _merged_tables(summaries: list[dict]) -> dict[str, list]:
    """Per table, the configuration keys of its rows over all summaries (first seen first)."""
    tables: dict[str, list] = {}
    for s in summaries:
        for name, keys in s["tables"].items():
            tables.setdefault(name, [])
            for key in keys:
                if key not in tables[name]:
                    tables[name].append(key)
    return tables


def _preamble(summaries: list[dict], datasets: list[dict], out: Path | None) -> list[str]:
    """The title, the reading notes and one line per dataset linking its evaluation report."""
    first = summaries[0]
    lines = [
        "# SAMPO experiments",
        "",
        f"Preset {', '.join(sorted({s['preset'] for s in summaries}))}; model "
        f"{first['settings']['model']}, {first['settings']['epochs']} epoch(s) per run, seeds "
        f"{first['settings']['seeds']}. Scores in percent (macro over (crop, intent) queries, the "
        "IoU-head-selected slot), mean ± standard deviation over seeds. Every run of a dataset was "
        "evaluated on the same queries with identical prompts; each dataset's full report "
        "(oracle scores, instance metrics, per class/density/tissue, sensitivity, robustness) "
        "is linked below.",
        "",
    ]
    if any(s["preset"] == "smoke" for s in summaries):
        lines += [
            "> Smoke preset: a few training steps of the tiny model on generated data. It checks "
            "that the grid runs end to end; its numbers mean nothing (expect zeros).",
            "",
        ]
    for ds in datasets:
        report = Path(ds["eval"]) / "report.md"
        if out is not None:
            report = Path(os.path.relpath(report, Path(out).resolve()))
        lines.append(
            f"- **{ds['label']}**: train `{ds['train']}`, test `{ds['test']}` "
            f"({', '.join(f'{n} {t.upper()}' for t, n in ds['queries'].items())} queries, "
            f"prompts `{ds['prompts_sha256'][:12]}…`) — [evaluation report]({report.as_posix()})"
        )
    lines.append("")
    return lines


def _main_table(keys: list, datasets: list[dict], cols: list[tuple[dict, str]]) -> list[str]:
    """Table 1 (per dataset-task and data fraction: the base model, L_sup only and SAMPO) and
    the trivial T2 reference line."""
    fractions = sorted({k[0] for k in keys})
    header = ["Dataset-task", "Ratio", "SAM (no adapter) IoU", "Dice", "L_sup IoU", "Dice"]
    header += ["SAMPO IoU", "Dice", "SAMPO Dice★"]
    body = []
    for ds, t in cols:
        base = ds["base"].get(t, {})
        for f in fractions:
            lsup = next(k for k in keys if k[0] == f and k[3:] == [False, False, True])
            sampo = next(k for k in keys if k[0] == f and k[3:] == [True, True, True])
            row = [f"{ds['label']}-{t.upper()}", f"{round(f * 100)}%"]
            row += [_fmt_mean([base.get("iou")]), _fmt_mean([base.get("dice")])]
            for key in (lsup, sampo):
                row += [_fmt_mean(_values(ds, key, t, m)) for m in ("iou", "dice")]
            row.append(_fmt_mean(_values(ds, sampo, t, "oracle_dice")))
            body.append(row)
    lines = ["## Table 1: data fractions", "", markdown_table(header, body)]
    trivial = [(ds, b) for ds in datasets for b in ds.get("trivial", [])]
    if trivial:
        lines += [
            "Trivial T2 reference: "
            + "; ".join(
                f"{ds['label']}: {b['name']} T2 IoU {_fmt_mean([b.get('t2', {}).get('iou')])}, "
                f"Dice {_fmt_mean([b.get('t2', {}).get('dice')])}"
                for ds, b in trivial
            ),
            "",
        ]
    return lines


def _grid_table(
    title: str,
    keys: list,
    first_cols: list[str],
    describe: Callable[[list], list[str]],
    cols: list[tuple[dict, str]],
) -> list[str]:
    """One of Tables 2–4: a row per configuration key (``describe`` writes its first cells),
    IoU and Dice per dataset-task."""
    header = first_cols + [
        f"{ds['label']}-{t.upper()} {m}" for ds, t in cols for m in ("IoU", "Dice")
    ]
    body = []
    for key in keys:
        row = describe(key)
        for ds, t in cols:
            row += [_fmt_mean(_values(ds, key, t, m)) for m in ("iou", "dice")]
        body.append(row)
    return [f"## {title}", "", markdown_table(header, body)]


def _fmt_mean(values: list) -> str:
    """Mean ± sample standard deviation in percent of the non-missing values; '–' if none."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    mean = 100 * float(np.mean(vals))
    if len(vals) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {100 * float(np.std(vals, ddof=1)):.2f}"


def _values(ds: dict, key: list, task: str, metric: str) -> list:
    """The ``metric`` of every seed's run of configuration ``key`` (None where missing)."""
    vals = []
    for run in ds["runs"]:
        if run["key"] == key:
            vals.append(ds["results"].get(run["name"], {}).get(task, {}).get(metric))
    return vals


def _columns(datasets: list[dict]) -> list[tuple[dict, str]]:
    return [(ds, t) for ds in datasets for t in ds["tasks"]]


def _check(on: bool) -> str:
    return "✓" if on else "✗"
