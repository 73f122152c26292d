"""``report.md`` and the plots of an evaluation, built from the ``metrics.json`` structure alone
(so a report can be redrawn from a saved metrics file with :func:`write_report`).

Tables follow the paper's layout: rows = methods, columns = task × (IoU, Dice), in percent with
two decimals; the best-slot (oracle) score sits beside each. The two trivial T2 rows
(docs/evaluation.md) are set apart in italics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from sampo_engine.eval.outputs import slug
from sampo_engine.utils.tables import markdown_table

ORACLE = "★"


def fmt(value, digits: int = 2) -> str:
    """A fraction as a percentage with ``digits`` decimals; '–' for missing/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * float(value):.{digits}f}"


def _tasks(metrics: dict) -> list[str]:
    return [t for t in ("t1", "t2") if t in metrics["data"]["queries"]]


def _label(entry: dict) -> str:
    return f"*{entry['name']}*" if entry.get("kind") in ("trivial", "t1_as_t2") else entry["name"]


def _rows_with_trivial(metrics: dict) -> list[dict]:
    """The methods, then per method its T1 answer used as T2, then "all nuclei, perfect"."""
    rows = list(metrics["methods"])
    for e in metrics["methods"]:
        if e.get("t1_as_t2"):
            rows.append(
                {"name": f"{e['name']}: T1 answer as T2", "kind": "t1_as_t2", **e["t1_as_t2"]}
            )
    return rows + list(metrics.get("baselines", []))


def main_table(metrics: dict) -> str:
    tasks = _tasks(metrics)
    header = ["Method"]
    for t in tasks:
        header += [f"{t.upper()} IoU", f"{t.upper()} Dice", f"IoU{ORACLE}", f"Dice{ORACLE}"]
    rows = []
    for e in _rows_with_trivial(metrics):
        row = [_label(e)]
        for t in tasks:
            s = e.get("summary", {}).get(t, {})
            row += [fmt(s.get(k)) for k in ("iou", "dice", "oracle_iou", "oracle_dice")]
        rows.append(row)
    return markdown_table(header, rows)


def pooled_table(metrics: dict) -> str:
    tasks = _tasks(metrics)
    header = ["Method"]
    for t in tasks:
        header += [f"{t.upper()} pooled IoU", f"{t.upper()} pooled Dice", f"Dice{ORACLE}"]
    if "t2" in tasks:
        header += ["T2 class-mean IoU", "T2 class-mean Dice"]
    rows = []
    for e in _rows_with_trivial(metrics):
        row = [_label(e)]
        for t in tasks:
            s = e.get("summary", {}).get(t, {})
            row += [fmt(s.get("pooled_iou")), fmt(s.get("pooled_dice"))]
            row += [fmt(s.get("pooled_oracle_dice"))]
        if "t2" in tasks:
            s = e.get("summary", {}).get("t2", {})
            row += [fmt(s.get("class_macro_iou")), fmt(s.get("class_macro_dice"))]
        rows.append(row)
    return markdown_table(header, rows)


def instance_table(metrics: dict) -> str | None:
    tasks = _tasks(metrics)
    entries = [e for e in _rows_with_trivial(metrics) if e.get("instances")]
    if not entries:
        return None
    header = ["Method"]
    for t in tasks:
        header += [f"{t.upper()} PQ", f"{t.upper()} AJI", f"{t.upper()} F1", "DQ", "SQ"]
    rows = []
    for e in entries:
        row = [_label(e)]
        for t in tasks:
            s = e["instances"].get(t, {})
            row += [fmt(s.get(k)) for k in ("pq", "aji", "f1", "dq", "sq")]
        rows.append(row)
    return markdown_table(header, rows)


def robustness_table(metrics: dict) -> str | None:
    tasks = _tasks(metrics)
    entries = [e for e in metrics["methods"] if e.get("robustness")]
    if not entries:
        return None
    header = ["Method"]
    for t in tasks:
        header += [f"{t.upper()} std of Dice", f"{t.upper()} mean Dice", "n × R"]
    rows = []
    for e in entries:
        row = [e["name"]]
        for t in tasks:
            r = e["robustness"].get(t)
            row += (
                [fmt(r["mean_std_dice"]), fmt(r["mean_dice"]), f"{r['n']} × {r['repeats']}"]
                if r
                else ["–"] * 3
            )
        rows.append(row)
    return markdown_table(header, rows)


def per_class_table(metrics: dict) -> str | None:
    entries = [e for e in _rows_with_trivial(metrics) if e.get("per_class")]
    if not entries:
        return None
    classes = list(entries[0]["per_class"])
    header = ["Method"]
    for c in classes:
        info = entries[0]["per_class"][c]
        header += [f"{info['name']} IoU", f"Dice (n={info['n']})"]
    rows = []
    for e in entries:
        row = [_label(e)]
        for c in classes:
            b = e["per_class"].get(c, {})
            row += [fmt(b.get("iou")), fmt(b.get("dice"))]
        rows.append(row)
    return markdown_table(header, rows)


def density_table(metrics: dict) -> str | None:
    tasks = _tasks(metrics)
    bins = metrics["protocol"]["density_bins"]
    entries = [e for e in metrics["methods"] if e.get("density")]
    if not entries:
        return None
    header = ["Method"]
    for t in tasks:
        first = entries[0]["density"].get(t, {})
        header += [f"{t.upper()} {b} (n={first.get(b, {}).get('n', 0)})" for b in bins]
    rows = []
    for e in entries:
        row = [e["name"]]
        for t in tasks:
            row += [fmt(e["density"].get(t, {}).get(b, {}).get("dice")) for b in bins]
        rows.append(row)
    return markdown_table(header, rows)


def tissue_table(metrics: dict) -> str | None:
    entries = [e for e in metrics["methods"] if e.get("per_tissue")]
    if not entries:
        return None
    tasks = _tasks(metrics)
    tissues = sorted(entries[0]["per_tissue"])
    header = ["Tissue"] + [f"{e['name']} {t.upper()} Dice" for e in entries for t in tasks]
    rows = []
    for tissue in tissues:
        row = [tissue]
        for e in entries:
            for t in tasks:
                row.append(fmt(e["per_tissue"].get(tissue, {}).get(t, {}).get("dice")))
        rows.append(row)
    return markdown_table(header, rows)


def sensitivity_tables(entry: dict) -> str | None:
    grids = entry.get("sensitivity")
    if not grids:
        return None
    parts = []
    for t, g in grids.items():
        header = [f"{t.upper()} Dice: pos \\ neg"] + [str(n) for n in g["negatives"]]
        rows = [[str(p)] + [fmt(v) for v in line] for p, line in zip(g["positives"], g["dice"])]
        parts.append(f"{t.upper()}, {g['n']} queries:\n\n" + markdown_table(header, rows))
    return "\n".join(parts)


def paired_table(metrics: dict) -> str | None:
    rows = [p for p in metrics.get("paired", []) if p.get("n")]
    if not rows:
        return None
    header = ["Method", "versus", "task", "n", "Δ Dice", "95 % CI", "better / worse"]
    body = [
        [
            p["method"],
            p["versus"],
            p["task"].upper(),
            str(p["n"]),
            fmt(p["mean_dice_diff"]),
            f"[{fmt(p['ci95_low'])}, {fmt(p['ci95_high'])}]",
            f"{fmt(p['share_better'], 0)} % / {fmt(p['share_worse'], 0)} %",
        ]
        for p in rows
    ]
    return markdown_table(header, body)


def _plots(metrics: dict, out: Path, log) -> dict[str, str]:
    """Draw every plot; a failing plot is logged and skipped (the numbers are already saved)."""
    from sampo_engine.eval import plots

    made: dict[str, str] = {}
    jobs = [
        ("summary", lambda p: plots.plot_summary(metrics, p), "plots/summary.png"),
        ("density", lambda p: plots.plot_density(metrics, p), "plots/density.png"),
        ("per_class", lambda p: plots.plot_per_class(metrics, p), "plots/per_class.png"),
    ]
    for e in metrics["methods"]:
        jobs.append(
            (
                f"sensitivity:{e['name']}",
                lambda p, e=e: plots.plot_sensitivity(e, p),
                f"plots/sensitivity_{slug(e['name'])}.png",
            )
        )
    for key, draw, rel in jobs:
        try:
            if draw(out / rel) is not None:
                made[key] = rel
        except Exception as err:  # a plot must never cost the user the report
            log(f"could not draw {rel}: {err}")
    return made


def whole_image_table(metrics: dict) -> str | None:
    rows = []
    for e in metrics["methods"]:
        blocks = e.get("whole_image") or {}
        several = any(k.startswith("t2:") for k in blocks)
        for task, b in blocks.items():
            if several and task == "t2":
                continue  # the same numbers as its 't2:<mode>' row
            label = task.upper() if ":" not in task else f"T2 ({task.split(':', 1)[1]})"
            rows.append(
                [e["name"], label, fmt(b["dice"]), fmt(b["iou"]),
                 fmt(b.get("pq")), fmt(b.get("f1")), fmt(b.get("class_f1")),
                 fmt(b["prompted_tile_share"], 0) + " %",
                 fmt(b["target_tile_share"], 0) + " %",
                 str(b["n"]) + (f" ({b['refused']} refused)" if b.get("refused") else "")]
            )  # fmt: skip
    if not rows:
        return None
    header = [
        "Method", "Task", "Dice", "IoU", "PQ", "F1 (IoU>0.5)", "F1 (centroid)", "prompted",
        "with target", "n",
    ]  # fmt: skip
    return markdown_table(header, rows)


def whole_image_misses_table(metrics: dict) -> str | None:
    """Why the true nuclei of the whole images went unmatched at IoU 0.5 (counts summed over
    images): merged with a neighbour, misshapen, not found; and the unmatched predictions."""
    keys = ("true", "matched", "merged", "misshapen", "not_found", "spurious", "pieces")
    rows = []
    for e in metrics["methods"]:
        blocks = e.get("whole_image") or {}
        several = any(k.startswith("t2:") for k in blocks)
        for task, b in blocks.items():
            if (several and task == "t2") or not b.get("misses"):
                continue
            label = task.upper() if ":" not in task else f"T2 ({task.split(':', 1)[1]})"
            rows.append([e["name"], label, *(str(b["misses"].get(k, 0)) for k in keys)])
    if not rows:
        return None
    header = ["Method", "Task", "true nuclei", "matched", "missed: merged", "missed: misshapen",
              "missed: not found", "extra: spurious", "extra: pieces"]  # fmt: skip
    return markdown_table(header, rows)


def whole_image_class_table(metrics: dict) -> str | None:
    """Per-class nucleus F1 (centroid matching) of every T2 mode on whole images."""
    names = metrics.get("data", {}).get("class_names") or {}
    classes: list[str] = []
    for e in metrics["methods"]:
        for b in (e.get("whole_image") or {}).values():
            for c in b.get("per_class") or {}:
                if c not in classes:
                    classes.append(c)
    if not classes:
        return None
    classes.sort(key=lambda c: int(c))
    rows = []
    for e in metrics["methods"]:
        blocks = e.get("whole_image") or {}
        several = any(k.startswith("t2:") for k in blocks)
        for task, b in blocks.items():
            if "per_class" not in b or (several and task == "t2"):
                continue
            label = "T2" if ":" not in task else f"T2 ({task.split(':', 1)[1]})"
            per = b["per_class"]
            rows.append(
                [e["name"], label]
                + [
                    f"{fmt(per[c]['class_f1'])} / {fmt(per[c]['dice'])}" if c in per else "–"
                    for c in classes
                ]
            )
    header = ["Method", "Task"] + [names.get(c, f"class {c}") for c in classes]
    return markdown_table(header, rows)


def render_report(metrics: dict, plots: dict[str, str] | None = None) -> str:
    """The markdown text of the report."""
    plots = plots or {}
    data, model, proto = metrics["data"], metrics["model"], metrics["protocol"]
    queries = ", ".join(f"{n} {t.upper()}" for t, n in data["queries"].items())
    lines = [
        "# Evaluation report",
        "",
        f"- Data: {data['description']} — {data['images_evaluated']} of {data['images_total']} "
        f"image(s), {data['crops']} crop(s) of {model['image_size']} px, queries: {queries}",
        f"- Model: {model['model_type']} at {model['image_size']} px, base weights: "
        f"{model['base_checkpoint'] or 'random (no checkpoint)'}",
        f"- Slot scored: {metrics['config'].get('slot_rule', 'iou')} "
        "(iou = the IoU head's pick, the paper's; clicks = the mask agreeing best with the "
        "prompt; auto = clicks for T2, iou for T1)",
        f"- Prompts: seed {proto['seed']}, {proto['num_positive']} positive + "
        f"{proto['num_negative']} negative points per query, identical for every method "
        f"(SHA-256 `{metrics['prompts_sha256'][:16]}…`)",
        f"- Written {metrics['written']} by napari-sampo {metrics['package_version']} in "
        f"{metrics['seconds']:.0f} s. Every number is in `metrics.json`; per-query scores in "
        f"`per_query.csv`. Protocol: `docs/evaluation.md`.",
        "",
        "Scores are in percent, macro-averaged over (crop, intent) queries as in the paper's "
        f"tables. {ORACLE} = the best of SAM's three output slots (the oracle); the other columns "
        "use the slot the IoU head selects, as inference does. Rows in italics are the trivial "
        "T2 references (docs/evaluation.md): each method's T1 answer used as its T2 answer, and all "
        "nuclei perfectly segmented as every T2 answer.",
        "",
        "## Main results",
        "",
        main_table(metrics),
    ]
    if "summary" in plots:
        lines += [f"![summary]({plots['summary']})", ""]
    lines += [
        "## Pooled over pixels",
        "",
        "ΣI / ΣU over all queries of a task (large crops weigh more); class-mean = the mean of "
        "the per-class means.",
        "",
        pooled_table(metrics),
    ]
    sections = [
        (
            "Instance metrics",
            "The selected mask split into nuclei (distance-transform watershed) against the "
            "ground-truth nuclei of the intent; PQ with IoU > 0.5 matching, AJI, detection F1, "
            "averaged over queries.",
            instance_table(metrics),
            None,
        ),
        (
            "Robustness to the prompt",
            "Standard deviation of the Dice over R random 3 + 3 prompt sets of the same query, "
            "averaged over queries (lower is steadier).",
            robustness_table(metrics),
            None,
        ),
        ("Per class (T2)", "", per_class_table(metrics), plots.get("per_class")),
        (
            "Per density",
            "Dice by the number of nuclei in the crop: <20, 20–50 (20 ≤ n < 50), 50–100 "
            "(50 ≤ n ≤ 100), >100.",
            density_table(metrics),
            plots.get("density"),
        ),
        ("Per tissue", "", tissue_table(metrics), None),
        (
            "Whole images (tiled predictor)",
            "Each test image segmented whole from 3 + 3 clicks in ONE tile (the one with the most "
            "target nuclei), prompts propagated to the other tiles by feature similarity — what a "
            "user does in napari (beyond the paper, which scores crops). Dice/IoU of the "
            "whole-image mask, PQ and detection F1 of its instances; 'prompted' = share of tiles "
            "that got prompts, 'with target' = share holding a target nucleus; a query the "
            "method refuses (e.g. every click names one merged nucleus) is scored as an empty "
            "answer and counted as 'refused' beside n.",
            whole_image_table(metrics),
            None,
        ),
        (
            "Whole images: why nuclei were missed",
            "Every true nucleus not matched at IoU > 0.5 put down to one cause: *merged* (the "
            "predicted nucleus covering most of it holds another true nucleus too), *misshapen* "
            "(mostly inside predictions, none holding it alone well enough), *not found* (less "
            "than half of it inside any prediction); every unmatched prediction: *spurious* "
            "(mostly off the true nuclei) or *pieces* (a fragment, or a merge). Counts summed "
            "over the images (`sampo_engine.scoring.misses`; docs/evaluation.md).",
            whole_image_misses_table(metrics),
            None,
        ),
        (
            "Whole images: per class (T2)",
            "Nucleus F1 by centroid matching (HoVer-Net's classification F1 on the clicked class; "
            f"radius {metrics.get('config', {}).get('match_radius', 12.0):g} px) / Dice, per "
            "class and T2 mode. decoder = SAM's decoder reads the type from the clicks; "
            "exemplar = every nucleus classified from the clicked ones (docs/exemplars.md); "
            "hybrid = the mean of both per nucleus.",
            whole_image_class_table(metrics),
            None,
        ),
        (
            "Paired differences",
            "Per-query Dice of each method minus the base model on the same queries and prompts; "
            "95 % interval by the normal approximation.",
            paired_table(metrics),
            None,
        ),
    ]
    for title, text, table, image in sections:
        if not table and not image:
            continue
        lines += [f"## {title}", ""]
        if text:
            lines += [text, ""]
        if table:
            lines += [table]
        if image:
            lines += [f"![{title}]({image})", ""]
    sens = [(e, sensitivity_tables(e)) for e in metrics["methods"]]
    if any(t for _, t in sens):
        lines += [
            "## Prompt sensitivity",
            "",
            "Dice with the first p positive and n negative points of each query's own 3 + 3 "
            "prompt set (so cell 3 / 3 is the main score on this subset).",
            "",
        ]
        for e, table in sens:
            if not table:
                continue
            lines += [f"### {e['name']}", "", table]
            key = f"sensitivity:{e['name']}"
            if key in plots:
                lines += [f"![sensitivity {e['name']}]({plots[key]})", ""]
    if metrics.get("curves"):
        lines += ["## Training curves", ""]
        for name, rel in metrics["curves"].items():
            lines += [f"### {name}", "", f"![training curves of {name}]({rel})", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(metrics: dict, out: str | Path, log: Callable[[str], None] = print) -> Path:
    """Draw the plots and write ``report.md`` into ``out``; returns the report's path."""
    from sampo_engine.utils.atomic import write_text_atomic

    out = Path(out)
    plots = _plots(metrics, out, log)
    path = out / "report.md"
    write_text_atomic(path, render_report(metrics, plots))
    return path


def redraw(out: str | Path) -> Path:
    """Rebuild report.md and the plots of an evaluation folder from its metrics.json."""
    out = Path(out)
    metrics = json.loads((out / "metrics.json").read_text())
    return write_report(metrics, out)
