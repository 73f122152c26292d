"""docs/type_head.md from the type-head study's rows (``tools/type_head_study.py``).

Rows are ``tools/exemplar_study.py``'s (one per held-out image × class × click seed × rule):
CoNSeP rows carry the nucleus F1 (centroid within 12 px) and the T2 Dice, the point sets' rows
the precision and coverage against the expert dots. A measure of one (dataset, rule) is averaged
over the images of each class, then over the classes; per click seed first, then over the seeds
(:func:`measure`).

The baseline (no type head) is scored once per click seed; every type head (one per training
seed) with the same clicks. The difference of a head is its mean over the click seeds minus the
baseline's: the clicks are paired, the training seeds give the spread.
"""

from __future__ import annotations

import math

import numpy as np

#: (dataset, measure, label) of the page's tables, in order
MEASURES = (
    ("consep", "f1", "CoNSeP nucleus F1, mean of 4 classes"),
    ("consep", "dice", "CoNSeP T2 Dice"),
    ("brca_m2c_points", "precision", "BRCA-M2C precision"),
    ("brca_m2c_points", "coverage", "BRCA-M2C coverage"),
    ("crchisto_points", "precision", "CRCHistoPhenotypes precision"),
    ("crchisto_points", "coverage", "CRCHistoPhenotypes coverage"),
)
#: each nucleus source: its rule without a head (logreg on the descriptors), its label
SOURCES = (
    ("gt-logreg", "true nuclei (CoNSeP; the classifier's ceiling)"),
    ("classical-logreg", "classical floor's nuclei"),
    ("model-exemplar", "nuclei-small's nuclei (exemplar T2)"),
)
#: the classifiers scored with a head (``--classifier``) and the suffix of their rule name
HEAD_RULES = (
    ("logreg", ""),
    ("types", "-types"),
    ("blend", "-blend"),
)


def head_rule(base_rule: str, suffix: str) -> str:
    """The rule name of a classifier on a source: 'gt-logreg' + '-types' → 'gt-types';
    'model-exemplar' + '-types' → 'model-exemplar-types'."""
    if not suffix:
        return base_rule
    stem = base_rule[: -len("-logreg")] if base_rule.endswith("-logreg") else base_rule
    return stem + suffix


CLASS_NAMES = {
    "consep": {1: "other", 2: "inflammatory", 3: "epithelial", 4: "spindle"},
    "brca_m2c_points": {1: "lymphocyte", 2: "tumour", 3: "stromal"},
    "crchisto_points": {1: "epithelial", 2: "fibroblast", 3: "inflammatory", 4: "others"},
}


def _value(row: dict, key: str) -> float:
    try:
        v = float(row.get(key, "nan") or "nan")
    except ValueError:
        return math.nan
    return v


def per_class(rows: list[dict], dataset: str, rule: str, key: str) -> dict[int, dict[int, float]]:
    """class → click seed → mean over the images of that class (NaNs skipped)."""
    out: dict[int, dict[int, list[float]]] = {}
    for r in rows:
        if r["dataset"] != dataset or r["rule"] != rule:
            continue
        v = _value(r, key)
        if not math.isnan(v):
            out.setdefault(int(r["class"]), {}).setdefault(int(r["seed"]), []).append(v)
    return {c: {s: float(np.mean(v)) for s, v in seeds.items()} for c, seeds in out.items()}


def measure(rows: list[dict], dataset: str, rule: str, key: str) -> dict | None:
    """{"mean": over seeds of the class mean, "seed_std", "classes": {class: mean over seeds}}
    of one measure, or None where the rows have none."""
    table = per_class(rows, dataset, rule, key)
    if not table:
        return None
    seeds = sorted({s for v in table.values() for s in v})
    per_seed = [np.mean([v[s] for v in table.values() if s in v]) for s in seeds]
    return {
        "mean": float(np.mean(per_seed)),
        "seed_std": float(np.std(per_seed)),
        "classes": {c: float(np.mean(list(v.values()))) for c, v in sorted(table.items())},
    }


def _fmt(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def verdict(diffs: list[float], spread: float) -> str:
    """'better' / 'worse' when every seed agrees in sign and the mean exceeds ``spread`` (the
    larger of the two arms' seed std), else 'no difference'."""
    if not diffs:
        return "–"
    mean = float(np.mean(diffs))
    same = all(d > 0 for d in diffs) or all(d < 0 for d in diffs)
    if same and abs(mean) > spread:
        return "better" if mean > 0 else "worse"
    return "no difference"


def comparison(baseline: list[dict], heads: dict[int, list[dict]]) -> list[dict]:
    """One record per (source, classifier, measure) present in the rows: the baseline (logreg
    without a head), each head's value, the per-seed differences and the verdict."""
    from itertools import product

    records = []
    for (rule, source), (method, suffix), (dataset, key, label) in product(
        SOURCES, HEAD_RULES, MEASURES
    ):
        base = measure(baseline, dataset, rule, key)
        with_head = head_rule(rule, suffix)
        got = {s: measure(rows, dataset, with_head, key) for s, rows in heads.items()}
        got = {s: m for s, m in got.items() if m is not None}
        if base is None or not got:
            continue
        values = [m["mean"] for m in got.values()]
        diffs = [m["mean"] - base["mean"] for m in got.values()]
        classes = {
            c: (b, float(np.mean([m["classes"].get(c, np.nan) for m in got.values()])))
            for c, b in base["classes"].items()
        }
        records.append(
            {"source": source, "rule": rule, "method": method, "dataset": dataset, "key": key,
             "label": label, "base": base, "heads": got, "mean": float(np.mean(values)),
             "std": float(np.std(values)), "diffs": diffs, "classes": classes,
             "verdict": verdict(diffs, max(base["seed_std"], float(np.std(values))))}
        )  # fmt: skip
    return records


def tables(records: list[dict], per_class_method: str = "blend") -> list[str]:
    """Markdown: one table per nucleus source (every classifier and measure), then the per-class
    values of ``per_class_method``."""
    lines = []
    for _, source in SOURCES:
        mine = [r for r in records if r["source"] == source]
        if not mine:
            continue
        lines += [
            f"**{source}**",
            "",
            "| measure | classifier with the head | without the head (logreg) | with the head | "
            "difference per training seed | verdict |",
            "|---|---|---|---|---|---|",
        ]
        for r in mine:
            base = r["base"]
            diffs = " / ".join(f"{100 * d:+.1f}" for d in r["diffs"])
            lines.append(
                f"| {r['label']} | {r['method']} | {_fmt(base['mean'])} ± "
                f"{_fmt(base['seed_std'])} | **{_fmt(r['mean'])} ± {_fmt(r['std'])}** | {diffs} | "
                f"{r['verdict']} |"
            )
        lines.append("")
    lines += [
        f"Per class, classifier `{per_class_method}` (without the head → with it; the with-value "
        "is the mean over the training seeds):",
        "",
        "| nuclei | measure | per class |",
        "|---|---|---|",
    ]
    for r in records:
        if r["method"] != per_class_method:
            continue
        names = CLASS_NAMES.get(r["dataset"], {})
        cells = ", ".join(
            f"{names.get(c, c)} {_fmt(a)} → {_fmt(b)}" for c, (a, b) in r["classes"].items()
        )
        lines.append(f"| {r['source']} | {r['label']} | {cells} |")
    return lines


def accuracy_table(logs: dict[int, dict]) -> list[str]:
    """Markdown: the heads' own held-out accuracy per vocabulary (mean ± std over seeds)."""
    if not logs:
        return []
    vocabs = list(next(iter(logs.values())).get("held_out_accuracy", {}))
    lines = [
        "| vocabulary (held-out images) | nuclei | accuracy | balanced accuracy | recall per class |",
        "|---|---|---|---|---|",
    ]
    for v in vocabs:
        accs = [log["held_out_accuracy"][v] for log in logs.values() if v in log.get(
            "held_out_accuracy", {})]  # fmt: skip
        counts = next(iter(logs.values())).get("held_out_counts", {}).get(v, {})
        classes = [k for k in accs[0] if k not in ("accuracy", "balanced")]
        per = ", ".join(
            f"{k.split(' (')[0]} {100 * np.mean([a[k] for a in accs]):.1f}" for k in classes
        )
        acc = [a["accuracy"] for a in accs]
        bal = [a["balanced"] for a in accs]
        lines.append(
            f"| {v} | {sum(counts.values())} | {100 * np.mean(acc):.1f} ± {100 * np.std(acc):.1f} "
            f"| {100 * np.mean(bal):.1f} ± {100 * np.std(bal):.1f} | {per} |"
        )
    return lines


def figure(records: list[dict], path) -> None:
    """Bars per measure for nuclei-small's nuclei: without the head, and each classifier with
    it (mean over the training seeds, their std as error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sampo_engine.experiments.pages import save_figure

    mine = [r for r in records if r["rule"] == "model-exemplar"]
    labels = list(dict.fromkeys(r["label"] for r in mine))
    if not labels:
        return
    fig, ax = plt.subplots(figsize=(9, 3.8))
    width = 0.2
    x = np.arange(len(labels))
    base = [next(r["base"]["mean"] for r in mine if r["label"] == lab) for lab in labels]
    ax.bar(x - 1.5 * width, 100 * np.array(base), width, label="without the type head",
           color="#bbbbbb")  # fmt: skip
    colours = {"logreg": "#6baed6", "types": "#fd8d3c", "blend": "#31a354"}
    for i, (method, _) in enumerate(HEAD_RULES):
        vals = [next((r for r in mine if r["label"] == lab and r["method"] == method), None)
                for lab in labels]  # fmt: skip
        mean = [100 * v["mean"] if v else np.nan for v in vals]
        std = [100 * v["std"] if v else 0 for v in vals]
        ax.bar(x + (i - 0.5) * width, mean, width, yerr=std, label=f"with it: {method}",
               color=colours.get(method))  # fmt: skip
    ax.set_xticks(x, [lab.replace(", mean of 4 classes", "").replace(" ", "\n", 1)
                      for lab in labels], fontsize=8)  # fmt: skip
    ax.set_ylabel("× 100")
    ax.set_ylim(0, 100)
    ax.set_title("Exemplar T2 on nuclei-small's nuclei, held-out images, 3 + 3 clicks")
    ax.legend(fontsize=8, ncol=4, loc="upper center")
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)


def recipe_comparison(
    first: dict[int, list[dict]], second: dict[int, list[dict]], rule: str = "model-exemplar-blend"
) -> list[dict]:
    """Two head recipes (e.g. 6 and 12 epochs) compared by training seed, on one rule's rows.

    ``first``/``second``: training seed → rows of that seed's head (the same click seeds).
    One record per measure of :data:`MEASURES` that both have: ``first`` and ``second`` (mean
    over the seeds both have), ``diffs`` (second − first, per seed), ``classes`` (class →
    (first, second), means over those seeds) and the :func:`verdict`.
    """
    seeds = sorted(set(first) & set(second))
    records = []
    for dataset, key, label in MEASURES:
        a = {s: measure(first[s], dataset, rule, key) for s in seeds}
        b = {s: measure(second[s], dataset, rule, key) for s in seeds}
        both = [s for s in seeds if a[s] is not None and b[s] is not None]
        if not both:
            continue
        va = [a[s]["mean"] for s in both]
        vb = [b[s]["mean"] for s in both]
        classes = {
            c: (float(np.mean([a[s]["classes"][c] for s in both])),
                float(np.mean([b[s]["classes"].get(c, np.nan) for s in both])))
            for c in a[both[0]]["classes"]
        }  # fmt: skip
        records.append(
            {"dataset": dataset, "key": key, "label": label, "seeds": both,
             "first": float(np.mean(va)), "second": float(np.mean(vb)),
             "diffs": [y - x for x, y in zip(va, vb)], "classes": classes,
             "verdict": verdict([y - x for x, y in zip(va, vb)],
                                max(float(np.std(va)), float(np.std(vb))))}
        )  # fmt: skip
    return records


def recipe_table(records: list[dict], first: str, second: str) -> list[str]:
    """Markdown: one row per measure (``first`` and ``second`` name the recipes), then the
    per-class values."""
    lines = [
        f"| measure | {first} | {second} | difference per training seed | verdict |",
        "|---|---|---|---|---|",
    ]
    for r in records:
        diffs = " / ".join(f"{100 * d:+.1f}" for d in r["diffs"])
        lines.append(
            f"| {r['label']} | {_fmt(r['first'])} | {_fmt(r['second'])} | {diffs} | "
            f"{r['verdict']} |"
        )
    lines += ["", "| measure | class | " + first + " | " + second + " |", "|---|---|---|---|"]
    for r in records:
        names = CLASS_NAMES.get(r["dataset"], {})
        for c, (x, y) in r["classes"].items():
            lines.append(f"| {r['label']} | {names.get(c, c)} | {_fmt(x)} | {_fmt(y)} |")
    return lines
