"""``docs/sampo_study.md``: the second SAMPO study's tables, paired differences and verdicts,
read back from ``<out>/eval/<dataset>/metrics.json`` and ``<out>/preference.json``
(:mod:`sampo_engine.experiments.sampo_study`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from sampo_engine.experiments.real_data.report import fmt_spread
from sampo_engine.experiments.real_data.results import PRETTY
from sampo_engine.utils.atomic import write_text_atomic
from sampo_engine.utils.tables import markdown_table

#: (column title, how to read it from a method's entry) for one held-out dataset
COLUMNS = (
    ("T1 Dice", lambda e: e["summary"]["t1"]["dice"]),
    ("T2 Dice", lambda e: e["summary"]["t2"]["dice"]),
    ("T2 − its T1 as T2", lambda e: e["summary"]["t2"]["dice"] - _t1_as_t2(e)),
    ("T2 robustness std", lambda e: e["robustness"]["t2"]["mean_std_dice"]),
    ("whole-image T2 nucleus F1", lambda e: e["whole_image"]["t2:decoder"]["class_f1"]),
)


#: (title, reader, lower is better) of the paired SAMPO − L_sup-only verdicts
VERDICTS = (
    ("T2 Dice", lambda e: e["summary"]["t2"]["dice"], False, "Dice"),
    ("T1 Dice", lambda e: e["summary"]["t1"]["dice"], False, "Dice"),
    (
        "T2 robustness std (lower = less sensitive to where the clicks fall)",
        lambda e: e["robustness"]["t2"]["mean_std_dice"],
        True,
        "Dice of std",
    ),
    (
        "whole-image T2 nucleus F1 (decoder)",
        lambda e: e["whole_image"]["t2:decoder"]["class_f1"],
        False,
        "F1",
    ),
)


def _t1_as_t2(entry: dict) -> float:
    return entry["t1_as_t2"]["summary"]["t2"]["dice"]


def _value(entry: dict | None, read) -> float:
    try:
        return float(read(entry))
    except (KeyError, TypeError):
        return float("nan")


def _run_name(variant: str, fraction: float, seed: int) -> str:
    return f"{variant}_f{round(fraction * 100)}_s{seed}"


def _entries(metrics: dict) -> dict[str, dict]:
    named = {m["name"]: m for m in metrics["methods"]}
    base = next((m for m in metrics["methods"] if m.get("kind") == "base"), None)
    if base is not None:
        named["base"] = base
    return named


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return markdown_table(header, rows).rstrip("\n").split("\n")


def _scores_section(evals, args, labels) -> tuple[list[str], list[str]]:
    """The per-fraction tables and the verdict lines (T2 Dice, SAMPO − L_sup only)."""
    lines, answers = [], []
    for fraction in args.fractions:
        header = ["method"]
        for ds in evals:
            header += [f"{PRETTY.get(ds, ds)} {title}" for title, _ in COLUMNS]
        rows = []
        base_row = ["base (nuclei-small), no adapter"]
        for metrics in evals.values():
            base = _entries(metrics).get("base")
            base_row += [fmt_spread([_value(base, read)]) for _, read in COLUMNS]
        rows.append(base_row)
        for variant in args.variants:
            row = [labels.get(variant, variant)]
            for metrics in evals.values():
                named = _entries(metrics)
                for _, read in COLUMNS:
                    values = [
                        _value(named.get(_run_name(variant, fraction, s)), read) for s in args.seeds
                    ]
                    row.append(fmt_spread(values))
            rows.append(row)
        lines += [f"### {round(fraction * 100)} % of the class-labelled training images", ""]
        lines += _table(header, rows) + [""]
        for title, read, lower_is_better, unit in VERDICTS:
            diffs, spread = _paired(evals, args, fraction, read)
            if diffs.size:
                per_seed = ", ".join(f"{d:+.1f}" for d in diffs)
                answers.append(
                    f"- **{title}, {round(fraction * 100)} % of the images** (macro over "
                    f"{len(evals)} held-out dataset(s)): SAMPO − L_sup-only per seed = "
                    f"{per_seed} → {_verdict(diffs, spread, lower_is_better, unit)}."
                )
    return lines, answers


def _paired(evals, args, fraction: float, read) -> tuple[np.ndarray, float]:
    """Per-seed SAMPO − L_sup-only values of ``read`` (× 100, macro over datasets) and the seed
    spread (mean over methods and datasets of the seed-to-seed std)."""
    if "sampo" not in args.variants or "lsup" not in args.variants:
        return np.zeros(0), 0.0

    def value(metrics, variant, seed):
        return 100 * _value(_entries(metrics).get(_run_name(variant, fraction, seed)), read)

    diffs = []
    for seed in args.seeds:
        per_ds = [value(m, "sampo", seed) - value(m, "lsup", seed) for m in evals.values()]
        per_ds = [d for d in per_ds if np.isfinite(d)]
        if per_ds:
            diffs.append(float(np.mean(per_ds)))
    spreads = []
    for variant in ("sampo", "lsup"):
        for metrics in evals.values():
            values = [value(metrics, variant, s) for s in args.seeds]
            values = [v for v in values if np.isfinite(v)]
            if len(values) > 1:
                spreads.append(float(np.std(values, ddof=1)))
    return np.array(diffs), float(np.mean(spreads)) if spreads else 0.0


def _verdict(diffs: np.ndarray, spread: float, lower_is_better: bool, unit: str) -> str:
    """Plain words for per-seed paired differences against the seed spread — the rule of
    :func:`~sampo_engine.experiments.real_data.report.verdict` (every seed the same sign and the
    mean beyond the spread), in ``unit``; for a quantity where less is better (the robustness std)
    the lower side wins."""
    mean = float(np.mean(diffs))
    same_sign = bool(np.all(diffs > 0) or np.all(diffs < 0))
    if abs(mean) <= spread or not same_sign:
        return f"no difference ({mean:+.1f} {unit}, within the seed spread of {spread:.1f})"
    sampo_wins = mean < 0 if lower_is_better else mean > 0
    word = "SAMPO better" if sampo_wins else "L_sup-only better"
    return f"{word} by {abs(mean):.1f} {unit} (every seed; seed spread {spread:.1f})"


def _margin(values) -> str:
    """Mean ± std of reward margins (β·Δℓ, small numbers: three decimals)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "–"
    return f"{v.mean():.3f}" if v.size == 1 else f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"


def _preference_section(found: dict, args, labels) -> list[str]:
    header = ["model", "task", "inter: usable", "reward acc", "margin", "rank acc"]
    header += ["intra: usable", "reward acc", "margin", "rank acc"]
    groups = [("base (nuclei-small), no adapter", ["base"])]
    for fraction in args.fractions:
        for variant in args.variants:
            names = [_run_name(variant, fraction, s) for s in args.seeds]
            groups.append((f"{labels.get(variant, variant)}, {round(fraction * 100)} %", names))
    rows = []
    for title, names in groups:
        present = [found[n] for n in names if n in found]
        if not present:
            continue
        for task in ("t1", "t2"):
            row = [title, task.upper()]
            for kind in ("inter", "intra"):
                for key in ("usable", "reward_acc", "margin", "rank_acc"):
                    values = [p[task][kind][key] for p in present if task in p]
                    row.append(_margin(values) if key == "margin" else fmt_spread(values))
            rows.append(row)
    return _table(header, rows)


def report(args, labels: dict[str, str]) -> Path:
    out = Path(args.out)
    evals = {}
    for ds in args.datasets:
        path = out / "eval" / ds / "metrics.json"
        if path.exists():
            evals[ds] = json.loads(path.read_text())
    if not evals:
        sys.exit(f"no evaluations under {out}/eval: run the eval stage first")
    pref_path = out / "preference.json"
    found = json.loads(pref_path.read_text()) if pref_path.exists() else {}
    timings = (
        json.loads((out / "timings.json").read_text()) if (out / "timings.json").exists() else {}
    )
    score_lines, answers = _scores_section(evals, args, labels)
    minutes = sum(t["seconds"] for t in timings.values()) / 60
    text = [
        "# Second SAMPO study: a class-aware base, little labelled data",
        "",
        "Generated by `python tools/sampo_study.py all` (this page: `python tools/sampo_study.py "
        "report`). From the shipped class-aware model `nuclei-small`, LoRA adapters (rank "
        f"{args.rank}, {args.steps} steps of batch {args.batch_size}, lr {args.lr}) trained on "
        f"the class-labelled training images ({', '.join(PRETTY.get(d, d) for d in args.datasets)}) "
        f"at {', '.join(f'{round(f * 100)} %' for f in args.fractions)} of the images, seeds "
        f"{', '.join(map(str, args.seeds))}; runs of one seed and fraction are paired (same "
        "images, crops, mined prompts, initial LoRA weights). Scored with `sampo-engine eval` on "
        "the held-out whole images of the real-data study's split (docs/results.md): 224 px "
        "crops with seeded 3 + 3 clicks, identical for every method, slot rule `auto` (IoU head "
        "for T1, the click-consistent slot for T2); the whole images segmented from 3 + 3 clicks "
        "for the per-class nucleus F1 (12 px). Values × 100, mean ± std over seeds.",
        "",
        "## Answer",
        "",
        *answers,
        "",
        "A difference counts only when every seed agrees in sign and the mean paired difference "
        "exceeds the typical seed-to-seed std of a method.",
        "",
        "## Scores on held-out images",
        "",
        '"T2 − its T1 as T2" is the method\'s T2 Dice minus the Dice of its own T1 answer scored '
        "as the T2 answer: 0 means the answer ignores which type was clicked.",
        "",
        *score_lines,
        "## Is the preference term learning? (held-out pairs)",
        "",
        "On held-out crops with K = 4 mined prompt sets per crop, the training pairs "
        "(`sampo_engine.scoring.preference`): *usable* = share of candidate pairs that are not "
        "ties (no usable inter pairs = every prompt set gives the same mask); *reward acc* = "
        "share of pairs with a positive DPO margin Δ against the base (0 for the base itself); "
        "*margin* = mean Δ (β = 2); *rank acc* = share of pairs whose winner the model itself "
        "finds more likely under the pair's context. Under the inter pairs' context (the "
        "loser's prompt set) the loser is the context's own thresholded answer, so rank acc "
        "starts at 0 there by construction.",
        "",
        *(_preference_section(found, args, labels) if found else ["(not probed yet)"]),
        "",
        f"## Wall time\n\n{len(timings)} commands, {minutes:.0f} min in all on this machine "
        f"(`{out}/timings.json` has each command).",
        "",
    ]
    page = getattr(args, "page", "sampo_study.md")
    discussion = Path(args.docs) / page.replace(".md", "_discussion.md")
    if discussion.exists():
        text += [discussion.read_text(encoding="utf-8").rstrip(), ""]
    dst = Path(args.docs) / page
    write_text_atomic(dst, "\n".join(text))
    print(f"wrote {dst}")
    return dst
