"""The second SAMPO study (docs/sampo_study.md): SAMPO where it can matter — a class-aware base,
little labelled data.

From the shipped class-aware model (``nuclei-small``: trained on T1 and T2 from its first step),
LoRA fine-tunes on the class-labelled training images (CoNSeP, PanNuke-2) with four objectives —
SAMPO; L_sup only (``--alpha 0``); SAMPO without L_inter; SAMPO without L_intra — at 100 % and at
10 % of the images (``--fraction``), 3 seeds each. Runs with the same seed and fraction are
paired: the same images, crops, mined prompts and initial LoRA weights; they differ only in the
loss. Everything is scored on held-out whole images that no model saw
(the real-data study's split, ``runs/study/split.json``):

1. ``train``  — the 4 × 2 × 3 adapters (``sampo-engine train``, one subprocess each).
2. ``eval``   — per held-out dataset one ``sampo-engine eval`` (T1 and T2, slot rule ``auto``,
   robustness std, whole images with per-class nucleus F1 for the T2 decoder) scoring the base
   and every adapter on identical prompts.
3. ``probe``  — held-out preference accuracy, reward margin and usable pairs per task
   (:mod:`sampo_engine.scoring.preference`) of the base and every adapter.
4. ``report`` — ``docs/sampo_study.md``: the tables, the paired differences, the verdict.

Usage::

    python tools/sampo_study.py all --out runs/sampo_study          # ~2 h on 2 CPU cores
    python tools/sampo_study.py report --out runs/sampo_study       # the page only

Each stage skips what is done, so an interrupted study resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from sampo_engine.experiments.real_data.plan import LABELS, VARIANTS, complete
from sampo_engine.experiments.real_data.stages import in_parallel, record_time, run

#: the held-out datasets with classes, whose train folders the adapters learn from
DATASETS = ("consep_train", "pannuke_breast_2class")
FRACTIONS = (1.0, 0.1)

#: SAMPO with one of the numbers the paper leaves open changed (β = 2, λ = 1, K = 4 otherwise)
SWEEP = {
    "beta0.5": ["--beta", "0.5"],
    "beta8": ["--beta", "8"],
    "lam0.25": ["--lam", "0.25"],
    "lam4": ["--lam", "4"],
    "k2": ["--num-prompt-sets", "2"],
    "k8": ["--num-prompt-sets", "8"],
}
OBJECTIVES = {**VARIANTS, **SWEEP}
SWEEP_LABELS = {
    "beta0.5": "SAMPO, β = 0.5",
    "beta8": "SAMPO, β = 8",
    "lam0.25": "SAMPO, λ = 0.25",
    "lam4": "SAMPO, λ = 4",
    "k2": "SAMPO, K = 2 prompt sets",
    "k8": "SAMPO, K = 8 prompt sets",
}


@dataclass(frozen=True)
class Run:
    """One adapter: objective ``variant``, share ``fraction`` of the training images, ``seed``."""

    variant: str
    fraction: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.variant}_f{round(self.fraction * 100)}_s{self.seed}"


def plan(args) -> list[Run]:
    """Every run, seed-major (a finished seed holds both fractions), paired runs side by side."""
    return [
        Run(v, f, s) for s in args.seeds for f in args.fractions for v in args.variants
    ]  # fmt: skip


def train_command(run_: Run, args) -> list[str]:
    data = ",".join(str(Path(args.split_dir) / "data" / "train" / d) for d in args.datasets)
    cmd = [
        sys.executable, "-m", "sampo_engine.cli", "train",
        "--data", data, "--out", str(Path(args.out) / "adapters" / run_.name),
        "--model", args.model, "--task", "both", "--fraction", str(run_.fraction),
        "--lora-rank", str(args.rank), "--epochs", "100", "--max-steps", str(args.steps),
        "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--warmup-steps", "10",
        "--val-fraction", "0", "--seed", str(run_.seed), "--device", args.device,
        "--name", run_.name, *OBJECTIVES[run_.variant],
    ]  # fmt: skip
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    return cmd


def stage_train(args) -> None:
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    jobs = []
    for r in plan(args):
        folder = out / "adapters" / r.name
        if complete(folder):
            continue
        cmd = train_command(r, args) + (["--overwrite"] if folder.exists() else [])

        def job(cmd=cmd, name=r.name):
            seconds = run(cmd, out / "logs" / f"train_{name}.log", threads=_threads(args))
            record_time(out, f"train/{name}", seconds, cmd)

        jobs.append(job)
    in_parallel(jobs, args.jobs)


def _threads(args) -> int:
    return 1 if args.jobs > 1 else 0


def adapters(args) -> list[Path]:
    return [Path(args.out) / "adapters" / r.name for r in plan(args)]


def stage_eval(args) -> None:
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    ready = [a for a in adapters(args) if complete(a)]
    jobs = []
    for name in args.datasets:
        dst = out / "eval" / name
        if (dst / "metrics.json").exists():
            continue
        cmd = [
            sys.executable, "-m", "sampo_engine.cli", "eval",
            "--data", str(Path(args.split_dir) / "data" / "test" / name), "--out", str(dst),
            "--overwrite", "--model", args.model, "--task", "both", "--slot-rule", "auto",
            "--seed", "0", "--device", args.device, "--sensitivity-queries", "0",
            "--robustness-repeats", "5", "--robustness-queries", str(args.robustness_queries),
            "--workers", "1",
        ]  # fmt: skip
        if args.whole_images:
            cmd += ["--whole-images", "--t2-modes", "decoder"]
        if args.checkpoint:
            cmd += ["--checkpoint", args.checkpoint]
        for a in ready:
            cmd += ["--adapter", str(a)]

        def job(cmd=cmd, key=f"eval/{name}"):
            seconds = run(cmd, out / "logs" / f"{key.replace('/', '_')}.log", _threads(args))
            record_time(out, key, seconds, cmd)

        jobs.append(job)
    in_parallel(jobs, args.jobs)


def stage_probe(args) -> None:
    """The preference numbers of the base and of every finished adapter (in this process)."""
    import torch

    from sampo_engine.data.pool import open_datasets
    from sampo_engine.models.loading import load_model
    from sampo_engine.scoring.preference import probe_preferences

    out = Path(args.out)
    path = out / "preference.json"
    found = json.loads(path.read_text()) if path.exists() else {}
    torch.set_num_threads(max(1, args.probe_threads))
    folders = ",".join(str(Path(args.split_dir) / "data" / "test" / d) for d in args.datasets)
    data = open_datasets(folders)
    models = [("base", None)] + [(a.name, a) for a in adapters(args) if complete(a)]
    for name, folder in models:
        if name in found:
            continue
        model = load_model(
            None if folder else args.model,
            checkpoint=args.checkpoint or None,
            adapter=folder,
            device=args.device if args.device != "auto" else "cpu",
        )
        found[name] = probe_preferences(
            model, data, range(len(data)), task="both", image_size=model.image_size,
            crops=args.probe_crops, batch_size=4, seed=0, device=next(model.sam.parameters()).device,
        )  # fmt: skip
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(found, indent=1))
        tmp.replace(path)
        print(f"probe {name}: " + json.dumps(found[name]["t2"]["inter"]), flush=True)


def build_parser(repo: Path) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("train", "eval", "probe", "report", "all"))
    parser.add_argument("--out", default=str(repo / "runs" / "sampo_study"))
    parser.add_argument(
        "--split-dir",
        default=str(repo / "runs" / "study"),
        help="the real-data study's output folder: split.json and data/train|test/<dataset> "
        "(make it with `python tools/real_data_study.py split`)",
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--model", default="nuclei-small")
    parser.add_argument("--checkpoint", default="", help="base weights (default: the model's)")
    parser.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=list(OBJECTIVES),
        help="objectives: the four of the study, or SAMPO with β, λ or K changed (the sweep)",
    )
    parser.add_argument("--steps", type=int, default=120, help="optimiser steps per adapter")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--robustness-queries", type=int, default=60)
    parser.add_argument(
        "--whole-images",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also score whole images (per-class nucleus F1 of the decoder's T2)",
    )
    parser.add_argument("--probe-crops", type=int, default=48, help="held-out crops per task")
    parser.add_argument("--probe-threads", type=int, default=1)
    parser.add_argument("--docs", default=str(repo / "docs"))
    parser.add_argument("--page", default="sampo_study.md", help="file name of the page in --docs")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at once (1 thread each)")
    return parser


def main(argv=None, repo: Path | None = None) -> None:
    repo = Path.cwd() if repo is None else Path(repo)
    args = build_parser(repo).parse_args(argv)
    split = Path(args.split_dir) / "split.json"
    if not split.exists():
        sys.exit(f"no held-out split at {split}: run `python tools/real_data_study.py split`")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    todo = ["train", "eval", "probe", "report"] if args.stage == "all" else [args.stage]
    if "train" in todo:
        stage_train(args)
    if "eval" in todo:
        stage_eval(args)
    if "probe" in todo:
        stage_probe(args)
    if "report" in todo:
        from sampo_engine.experiments.sampo_study_report import report

        report(args, labels={**LABELS, **SWEEP_LABELS})
