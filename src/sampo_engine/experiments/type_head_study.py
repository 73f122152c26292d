"""Does a nucleus type head trained on expert-classed nuclei make "more like these" (exemplar T2)
pick the clicked type better on held-out images? (docs/type_head.md)

Stages (each cached in ``--out``; ``all`` runs them in order):

- ``train``: one type head per seed (``tools/train_type_head.py``; ~25 min each on one thread);
- ``score``: ``tools/exemplar_study.py`` without a head (the baseline) and with each head, on the
  same held-out images and clicks (3 click seeds; the true, the classical and nuclei-small's
  nuclei), ``--jobs`` processes side by side;
- ``report``: ``docs/type_head.md`` (+ ``docs/type_head_discussion.md`` when it exists);
- ``compare``: this study's heads against another recipe's (``--against`` its ``--out``), paired
  by training seed, on exemplar T2 with nuclei-small's nuclei and the default ``blend``: a
  markdown table on stdout (not part of ``all``).

Usage::

    python tools/type_head_study.py all --out runs/type_head_study       # ~1 h on 2 cores
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

#: the repository (its tools/ scripts are run as subprocesses); set by :func:`main`
REPO = Path.cwd()


def _run_all(commands: list[list[str]], logs: list[Path], jobs: int) -> None:
    """Run the commands, ``jobs`` at a time, one thread each; fail loudly on the first error."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    pending = list(zip(commands, logs))
    running: list[tuple[subprocess.Popen, Path]] = []
    while pending or running:
        while pending and len(running) < jobs:
            cmd, log = pending.pop(0)
            print("$ " + " ".join(cmd), flush=True)
            fh = open(log, "w")
            running.append(
                (subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env), log)
            )
        time.sleep(2)
        for proc, log in list(running):
            if proc.poll() is not None:
                running.remove((proc, log))
                if proc.returncode:
                    raise SystemExit(f"failed ({proc.returncode}): see {log}")
                print(f"done: {log}", flush=True)


def stage_train(args) -> None:
    out = Path(args.out)
    cmds, logs = [], []
    for seed in args.seeds:
        if (out / f"type_head_seed{seed}.safetensors").is_file():
            print(f"head of seed {seed} exists: kept")
            continue
        cmd = [sys.executable, str(REPO / "tools" / "train_type_head.py"), "--out", str(out),
               "--seed", str(seed), "--threads", "1", "--epochs", str(args.epochs)]  # fmt: skip
        if args.max_images:
            cmd += ["--max-images", str(args.max_images)]
        cmds.append(cmd)
        logs.append(out / f"train_seed{seed}.log")
    _run_all(cmds, logs, args.jobs)


def _score_cmd(args, tag: str, head: str = "") -> list[str]:
    cmd = [sys.executable, str(REPO / "tools" / "exemplar_study.py"), "--out", str(Path(args.out) / "rows"),
           "--tag", tag, "--sources", *args.sources, "--model", args.model,
           "--max-point-images", str(args.max_point_images), "--seeds", *map(str, args.click_seeds)]  # fmt: skip
    if args.datasets:
        cmd += ["--datasets", *args.datasets]
    if head:
        cmd += ["--type-head", head]
    return cmd


def stage_score(args) -> None:
    out = Path(args.out)
    (out / "rows").mkdir(parents=True, exist_ok=True)
    todo = [("base", "")] + [
        (f"head_s{s}", str(out / f"type_head_seed{s}.safetensors")) for s in args.seeds
    ]
    cmds, logs = [], []
    for tag, head in todo:
        if (out / "rows" / f"summary_{tag}.md").is_file():
            print(f"{tag} scored: kept")
            continue
        cmds.append(_score_cmd(args, tag, head))
        logs.append(out / f"score_{tag}.log")
    _run_all(cmds, logs, args.jobs)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def stage_report(args) -> None:
    from sampo_engine.experiments.pages import write_page
    from sampo_engine.experiments.type_head_report import (
        accuracy_table,
        comparison,
        figure,
        tables,
    )

    out = Path(args.out)
    base = _rows(out / "rows" / "rows_base.csv")
    heads = {s: _rows(out / "rows" / f"rows_head_s{s}.csv") for s in args.seeds
             if (out / "rows" / f"rows_head_s{s}.csv").is_file()}  # fmt: skip
    logs = {s: json.loads((out / f"type_head_seed{s}.json").read_text()) for s in heads
            if (out / f"type_head_seed{s}.json").is_file()}  # fmt: skip
    records = comparison(base, heads)
    docs = Path(args.docs)
    (docs / "images").mkdir(parents=True, exist_ok=True)
    figure(records, docs / "images" / "type_head.png")
    first = next(iter(logs.values()), {})
    minutes = [log.get("seconds", 0) / 60 for log in logs.values()]
    train_counts = first.get("train_counts", {})
    lines = [
        '# The nucleus type head: does knowing nucleus types help "more like these"?',
        "",
        f"Generated by `python tools/type_head_study.py all --out {args.out} --epochs "
        f"{float(first.get('config', {}).get('epochs', args.epochs)):g}` (this page: "
        f"`python tools/type_head_study.py report --out {args.out}`).",
        "",
        "A small network (`sampo_engine.models.type_head`, ~0.1 M parameters) reads a 20 µm patch "
        "around each nucleus at 20× and gives the log-probability of every class of every "
        "class-labelled training set; exemplar T2 adds these columns to each nucleus' "
        "descriptors, and the few-shot classifier fitted on the clicked nuclei learns which of "
        "them mean the clicked type (docs/exemplars.md).",
        "",
        "**Use.** It is on by default wherever T2 is answered by nucleus — napari's Segment "
        "dock, `sampo-engine predict --task t2|classes`, `TilePredictor` — with every model "
        "(it reads pixels only): `--type-head auto` (the packaged head, verified by its SHA-256), "
        "`off`, or a file made by `python tools/train_type_head.py`; `--classifier blend` "
        "(default), `types`, `logreg`. The status line (CLI: a note) says which general type "
        "the clicks point at.",
        "",
        f"**Trained** on {sum(sum(c.values()) for c in train_counts.values()):,} nuclei of the "
        "training images only: "
        + "; ".join(f"{k} {sum(v.values()):,}" for k, v in train_counts.items())
        + f" — {len(logs)} seeds, {first.get('steps', '?')} steps of batch "
        f"{first.get('config', {}).get('batch_size', '?')} "
        + (
            f"({min(minutes):.0f}–{max(minutes):.0f} min each on one CPU thread)."
            if minutes
            else "."
        )
        + " **Scored** on held-out whole images: the 5 CoNSeP test images of docs/results.md, the "
        "official validation images of BRCA-M2C and CRCHistoPhenotypes (10 each); 3 + 3 clicks, "
        f"click seeds {', '.join(map(str, args.click_seeds))}, identical with and without the head "
        "(`tools/exemplar_study.py`). Values × 100; *without*: mean ± std over the click seeds; "
        "*with*: mean ± std over the type heads' training seeds (each the mean over the same click "
        "seeds); a difference counts when every training seed agrees in sign and the mean exceeds "
        "the larger spread.",
        "",
        "## The heads' own accuracy on held-out nuclei",
        "",
        "Each held-out nucleus classified in its own set's vocabulary (the expert's dot or "
        "instance centroid as the centre; no clicks):",
        "",
        *accuracy_table(logs),
        "",
        "## Exemplar T2 with and without the type head",
        "",
        "![Exemplar T2 on nuclei-small's nuclei with and without the type head](images/type_head.png)",
        "",
        *tables(records),
        "",
    ]
    write_page(args.docs, "type_head.md", lines)


def stage_compare(args) -> None:
    from sampo_engine.experiments.type_head_report import recipe_comparison, recipe_table

    if not args.against:
        raise SystemExit("compare needs --against: the --out of the other recipe's study")

    def heads(folder: str) -> dict[int, list[dict]]:
        rows = Path(folder) / "rows"
        return {s: _rows(rows / f"rows_head_s{s}.csv") for s in args.seeds
                if (rows / f"rows_head_s{s}.csv").is_file()}  # fmt: skip

    first, second = heads(args.against), heads(args.out)
    records = recipe_comparison(first, second)
    if not records:
        raise SystemExit(
            f"no training seed of {args.seeds} is scored in both {args.against} and {args.out}: "
            f"run the score stage of each first"
        )
    print(f"seeds {records[0]['seeds']}; rule model-exemplar-blend (nuclei-small's nuclei, blend)")
    print("\n".join(recipe_table(records, Path(args.against).name, Path(args.out).name)))


def main(argv=None, repo: Path | None = None) -> int:
    global REPO
    REPO = Path.cwd() if repo is None else Path(repo)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("train", "score", "report", "all", "compare"))
    parser.add_argument("--out", default="runs/type_head_study")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--click-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--epochs", type=float, default=12.0, help="12 beat 6 on 3 seeds (docs/type_head.md)"
    )
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--model", default="nuclei-small")
    parser.add_argument("--sources", nargs="+", default=["gt", "classical", "model"])
    parser.add_argument("--datasets", nargs="+", default=[])
    parser.add_argument("--max-point-images", type=int, default=10)
    parser.add_argument("--max-images", type=int, default=0, help="training images per set (smoke)")
    parser.add_argument("--docs", default=str(REPO / "docs"), help="where the page is written")
    parser.add_argument("--against", default="", help="compare: the other recipe's --out")
    args = parser.parse_args(argv)
    if args.stage == "compare":
        stage_compare(args)
        return 0
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for stage in ("train", "score", "report"):
        if args.stage in (stage, "all"):
            {"train": stage_train, "score": stage_score, "report": stage_report}[stage](args)
    return 0
