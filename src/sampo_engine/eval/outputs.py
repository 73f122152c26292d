"""The evaluation folder: its marker, preparing it, ``per_query.csv`` and the copied curves.

An evaluation writes into ``--out``: ``sampo_eval.json`` (the marker: started, then complete),
``metrics.json``, ``report.md``, ``per_query.csv``, ``plots/`` and ``curves/``. A folder is only
ever replaced when its marker says it is an evaluation (and ``--overwrite`` is given).
"""

from __future__ import annotations

import csv
import io
import shutil
import time
from pathlib import Path

from sampo_engine.errors import ConfigError
from sampo_engine.eval.aggregate import density_bin

EVAL_MARKER = "sampo_eval.json"
METRICS_FILE = "metrics.json"


def slug(name: str) -> str:
    """A file-name-safe form of a method name (letters, digits, ``-_.``; 'method' if empty)."""
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return keep.strip("_") or "method"


def prepare_eval_dir(out: str | Path, overwrite: bool) -> Path:
    """A new or empty folder, or a previous evaluation with ``overwrite``; never a user's folder."""
    from sampo_engine.utils.atomic import write_json_atomic

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a folder for the evaluation report")
    if out.is_dir() and any(out.iterdir()):
        if not (out / EVAL_MARKER).is_file():
            raise ConfigError(
                f"--out {out} is a non-empty folder that is not a SAMPO evaluation; nothing was "
                f"written — choose a new or empty folder"
            )
        if not overwrite:
            raise ConfigError(
                f"--out {out} already holds a SAMPO evaluation; pass --overwrite to replace it"
            )
        for name in (EVAL_MARKER, METRICS_FILE, "report.md", "per_query.csv"):
            (out / name).unlink(missing_ok=True)
        for sub in ("plots", "curves"):
            shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        out / EVAL_MARKER, {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "complete": False}
    )
    return out


def per_query_csv(plan, methods: list[dict], records: list[dict]) -> str:
    """The text of ``per_query.csv``: one row per reported query of ``plan`` (an
    :class:`~sampo_engine.eval.plan.EvalPlan`), its crop origin (row, col) and, per method
    entry of ``methods``, the scores of its record in ``records`` (same order)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    head = ["query", "sample", "row", "col", "task", "class_id", "tissue", "nuclei", "density"]
    for m in methods:
        head += [f"{m['name']}:{k}" for k in ("dice", "iou", "oracle_dice", "oracle_iou", "slot")]
        if m["kind"] != "trivial":
            head += [f"{m['name']}:pq", f"{m['name']}:t1_as_t2_dice"]
    writer.writerow(head)
    for i in plan.reported:
        q = plan.queries[i]
        row = [q.name, q.sample_name, q.origin[0], q.origin[1], q.intent.task]
        row += [q.intent.class_id if q.intent.task == "t2" else "", q.tissue or ""]
        row += [q.num_nuclei, density_bin(q.num_nuclei)]
        for m, recs in zip(methods, records):
            r = recs.get(i, {})
            for k in ("dice", "iou", "oracle_dice", "oracle_iou"):
                row.append(f"{r[k]:.6f}" if k in r else "")
            row.append(r.get("slot", ""))
            if m["kind"] != "trivial":
                pq = r.get("instances", {}).get("pq")
                row.append("" if pq is None or pq != pq else f"{pq:.6f}")
                t = r.get("t1_as_t2")
                row.append(f"{t['dice']:.6f}" if t else "")
        writer.writerow(row)
    return buf.getvalue()


def copy_curves(methods: list, out: Path) -> dict[str, str]:
    """Copy each adapter's ``loss_curve.png`` into ``out/curves``; {method name: relative path}."""
    from sampo_engine.utils.atomic import atomic_path

    curves = {}
    for m in methods:
        src = Path(m.adapter) / "loss_curve.png" if m.adapter else None
        if src is None or not src.is_file():
            continue
        dest = out / "curves" / f"{slug(m.name)}_loss_curve.png"
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
        curves[m.name] = str(dest.relative_to(out))
    return curves
