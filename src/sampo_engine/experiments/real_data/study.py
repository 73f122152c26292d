"""Real-data study (docs/results.md): SAMPO vs a supervised-only twin on real H&E nuclei.

Stages (each skips what is already done, so an interrupted study resumes where it stopped):

1. ``split``    — hold out whole images of every dataset in ``../shared/data`` for testing
   (seeded; the ids are written to ``<out>/split.json``); links the rest into train folders.
2. ``pretrain`` — train a small SAM-architecture base from scratch, every weight, with L_sup only
   on T1 (the stand-in for SAM's generic pretraining: it knows nuclei, not their classes).
3. ``finetune`` — from that base, LoRA variants × seeds with the same data, prompts mining,
   steps and batch: SAMPO; L_sup only (--alpha 0); SAMPO without L_inter; SAMPO without L_intra.
4. ``eval``     — per held-out dataset, one ``sampo-engine eval`` run scoring the base, every
   adapter and the classical floor on identical prompts (under both slot rules).
5. ``report``   — tables and plots into ``docs/results.md`` and ``docs/images/results_*.png``;
   the hand-written reading of the numbers, ``docs/results_discussion.md``, is appended.

Usage::

    python tools/real_data_study.py all --shared ../shared/data --out runs/study
    python tools/real_data_study.py report --out runs/study      # rewrite docs/results.md only

The data stays where it is: train folders hold symbolic links (copies where links fail).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sampo_engine.experiments.real_data.plan import VARIANTS, split
from sampo_engine.experiments.real_data.report import report
from sampo_engine.experiments.real_data.stages import evaluate, finetune, pretrain


def build_parser(repo: Path) -> argparse.ArgumentParser:
    """The study's options; ``repo`` (the repository checkout) places the default folders."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("split", "pretrain", "finetune", "eval", "report", "all"))
    parser.add_argument("--shared", default=str(repo.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(repo / "runs" / "study"))
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--pretrain-epochs", type=int, default=28)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--finetune-steps", type=int, default=600)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--docs", default=str(repo / "docs"))
    parser.add_argument(
        "--jobs", type=int, default=1, help="fine-tunes/evaluations run at once (1 thread each)"
    )
    return parser


def main(argv=None, repo: Path | None = None) -> None:
    """Run the stages ``argv`` asks for. ``repo``: the repository checkout (default: the current
    folder): the default ``--shared``/``--out``/``--docs`` lie there and the commands run in it."""
    repo = Path.cwd() if repo is None else Path(repo)
    args = build_parser(repo).parse_args(argv)
    args.repo = repo
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = ["split", "pretrain", "finetune", "eval", "report"]
    todo = stages if args.stage == "all" else [args.stage]
    if "split" in todo or not (out / "split.json").exists():
        shared = Path(args.shared)
        if not shared.is_dir():
            sys.exit(f"no data at {shared}: pass --shared FOLDER (the repo's ../shared/data)")
        info = split(shared, out, args.split_seed)
        print(json.dumps({k: v["test"] for k, v in info["datasets"].items()}, indent=1))
    if "pretrain" in todo:
        pretrain(out, args)
    if "finetune" in todo:
        finetune(out, args)
    if "eval" in todo:
        evaluate(out, args)
    if "report" in todo:
        report(out, args)
