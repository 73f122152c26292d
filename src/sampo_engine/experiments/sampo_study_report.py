"""``docs/sampo_study.md``: the second SAMPO study's tables, paired differences and verdicts,
read back from ``<out>/eval/<dataset>/metrics.json`` and ``<out>/preference.json``
(:mod:`sampo_engine.experiments.sampo_study`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from sampo_engine.experiments.pages import write_page
from sampo_engine.experiments.real_data.plan import VARIANTS
from sampo_engine.experiments.real_data.report import fmt_spread
from sampo_engine.experiments.real_data.results import PRETTY
from sampo_engine.utils.tables import markdown_table

#: (column title, how to read it from a method's entry) for one held-out dataset
COLUMNS = (
    ("T1 Dice", lambda e: e["summary"]["t1"]["dice"]),
    ("T2 Dice", lambda e: e["summary"]["t2"]["dice"]),
    ("T2 − its T1 as T2", lambda e: e["summary"]["t2"]["dice"] - _t1_as_t2(e)),
    ("T2 robustness std", lambda e: e["robustness"]["t2"]["mean_std_dice"]),
    ("whole-image T2 nucleus F1", lambda e: e["whole_image"]["t2:decoder"]["class_f1"]),
)


#: (title, reader, lower is better, unit) of the paired verdicts (SAMPO − L_sup only; each
#: sweep variant − SAMPO with the paper's numbers)
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


def _comparisons(variants) -> list[tuple[str, str]]:
    """The paired comparisons ``(variant, reference)`` the page answers: SAMPO against L_sup
    only, and every sweep variant (SAMPO with β, λ or K changed) against SAMPO as the paper
    sets it."""
    pairs = []
    if "sampo" in variants and "lsup" in variants:
        pairs.append(("sampo", "lsup"))
    if "sampo" in variants:
        pairs += [(v, "sampo") for v in variants if v not in VARIANTS]
    return pairs


#: the names of the answer lines
SHORT = {"sampo": "SAMPO", "lsup": "L_sup only"}


def _short(variant: str, labels: dict[str, str]) -> str:
    """``SAMPO``, ``L_sup only``, or a sweep variant's setting (``β = 8``)."""
    return SHORT.get(variant) or labels.get(variant, variant).removeprefix("SAMPO, ")


def _columns(evals) -> tuple:
    """:data:`COLUMNS` without those no method has (the whole-image F1 when the whole images
    were not scored)."""
    kept = []
    for title, read in COLUMNS:
        values = [_value(e, read) for m in evals.values() for e in _entries(m).values()]
        if any(np.isfinite(values)):
            kept.append((title, read))
    return tuple(kept)


def _scores_section(evals, args, labels) -> tuple[list[str], list[str]]:
    """The per-fraction tables and the verdict lines (:func:`_comparisons`, :data:`VERDICTS`)."""
    lines, answers = [], []
    columns = _columns(evals)
    for fraction in args.fractions:
        header = ["method"]
        for ds in evals:
            header += [f"{PRETTY.get(ds, ds)} {title}" for title, _ in columns]
        rows = []
        base_row = ["base (nuclei-small), no adapter"]
        for metrics in evals.values():
            base = _entries(metrics).get("base")
            base_row += [fmt_spread([_value(base, read)]) for _, read in columns]
        rows.append(base_row)
        for variant in args.variants:
            row = [labels.get(variant, variant)]
            for metrics in evals.values():
                named = _entries(metrics)
                for _, read in columns:
                    values = [
                        _value(named.get(_run_name(variant, fraction, s)), read) for s in args.seeds
                    ]
                    row.append(fmt_spread(values))
            rows.append(row)
        lines += [f"### {round(fraction * 100)} % of the class-labelled training images", ""]
        lines += _table(header, rows) + [""]
        for variant, reference in _comparisons(args.variants):
            names = (_short(variant, labels), _short(reference, labels))
            for title, read, lower_is_better, unit in VERDICTS:
                diffs, spread = _paired(evals, args, fraction, read, variant, reference)
                if diffs.size:
                    per_seed = ", ".join(f"{d:+.1f}" for d in diffs)
                    verdict = _verdict(diffs, spread, lower_is_better, unit, names)
                    answers.append(
                        f"- **{names[0]} vs {names[1]}, {title}, {round(fraction * 100)} % of "
                        f"the images** (macro over {len(evals)} held-out dataset(s)): difference "
                        f"per seed = {per_seed} → {verdict}."
                    )
    return lines, answers


def _paired(
    evals, args, fraction: float, read, variant: str, reference: str
) -> tuple[np.ndarray, float]:
    """Per-seed ``variant`` − ``reference`` values of ``read`` (× 100, macro over datasets) and
    the seed spread (mean over the two methods and the datasets of the seed-to-seed std)."""
    if variant not in args.variants or reference not in args.variants:
        return np.zeros(0), 0.0

    def value(metrics, name, seed):
        return 100 * _value(_entries(metrics).get(_run_name(name, fraction, seed)), read)

    diffs = []
    for seed in args.seeds:
        per_ds = [value(m, variant, seed) - value(m, reference, seed) for m in evals.values()]
        per_ds = [d for d in per_ds if np.isfinite(d)]
        if per_ds:
            diffs.append(float(np.mean(per_ds)))
    spreads = []
    for name in (variant, reference):
        for metrics in evals.values():
            values = [value(metrics, name, s) for s in args.seeds]
            values = [v for v in values if np.isfinite(v)]
            if len(values) > 1:
                spreads.append(float(np.std(values, ddof=1)))
    return np.array(diffs), float(np.mean(spreads)) if spreads else 0.0


def _verdict(
    diffs: np.ndarray,
    spread: float,
    lower_is_better: bool,
    unit: str,
    names: tuple[str, str],
) -> str:
    """Plain words for per-seed paired differences ``names[0] − names[1]`` against the seed
    spread — the rule of :func:`~sampo_engine.experiments.real_data.report.verdict` (every seed
    the same sign and the mean beyond the spread), in ``unit``; for a quantity where less is
    better (the robustness std) the lower side wins."""
    mean = float(np.mean(diffs))
    same_sign = bool(np.all(diffs > 0) or np.all(diffs < 0))
    if abs(mean) <= spread or not same_sign:
        return f"no difference ({mean:+.1f} {unit}, within the seed spread of {spread:.1f})"
    first_wins = mean < 0 if lower_is_better else mean > 0
    word = f"{names[0] if first_wins else names[1]} better"
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


def _options(args) -> str:
    """The command-line options that made a page other than the default study's (so its
    "Generated by" line can be rerun as it stands)."""
    parts = []
    if Path(args.out).name != "sampo_study":
        parts += ["--out", str(args.out)]
    if list(args.fractions) != [1.0, 0.1]:
        parts += ["--fractions", *(f"{f:g}" for f in args.fractions)]
    if list(args.variants) != list(VARIANTS):
        parts += ["--variants", *args.variants]
    if not getattr(args, "whole_images", True):
        parts.append("--no-whole-images")
    page = getattr(args, "page", "sampo_study.md")
    if page != "sampo_study.md":
        parts += ["--page", page]
    return "".join(f" {p}" for p in parts)


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
    sweep = [v for v in args.variants if v not in VARIANTS]
    title = (
        "SAMPO's open numbers: β, λ and K with little labelled data"
        if sweep
        else "Second SAMPO study: a class-aware base, little labelled data"
    )
    options = _options(args)
    text = [
        f"# {title}",
        "",
        f"Generated by `python tools/sampo_study.py all{options}` (this page: `python "
        f"tools/sampo_study.py report{options}`). From the shipped class-aware model `nuclei-small`, LoRA adapters (rank "
        f"{args.rank}, {args.steps} steps of batch {args.batch_size}, lr {args.lr}) trained on "
        f"the class-labelled training images ({', '.join(PRETTY.get(d, d) for d in args.datasets)}) "
        f"at {', '.join(f'{round(f * 100)} %' for f in args.fractions)} of the images, seeds "
        f"{', '.join(map(str, args.seeds))}; runs of one seed and fraction are paired (same "
        "images, crops, mined prompts, initial LoRA weights). Scored with `sampo-engine eval` on "
        "the held-out whole images of the real-data study's split (docs/results.md): 224 px "
        "crops with seeded 3 + 3 clicks, identical for every method, slot rule `auto` (IoU head "
        "for T1, the click-consistent slot for T2)"
        + (
            "; the whole images segmented from 3 + 3 clicks for the per-class nucleus F1 (12 px)"
            if getattr(args, "whole_images", True)
            else ""
        )
        + ". Values × 100, mean ± std over seeds.",
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
    return write_page(args.docs, getattr(args, "page", "sampo_study.md"), text)
