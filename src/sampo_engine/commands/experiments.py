"""``sampo-engine experiments``: the paper's experiment grid (Tables 1–4) in one command."""

from __future__ import annotations

import argparse

from sampo_engine._config import add_dataclass_arguments, dataclass_from_args
from sampo_engine.commands import add_threads_argument

EPILOG = """\
Trains every configuration of the grid (data fractions; ablations of L_inter, L_intra, L_sup;
α; LoRA rank; each for every seed), evaluates all runs and the base model on the same held-out
queries with identical prompts, and writes OUT/experiments.md + experiments.json (the paper's
tables) beside OUT/runs/<run>/ (adapter bundles) and OUT/eval/ (the full evaluation report).

Examples:
  sampo-engine experiments --preset smoke --out exp/smoke                 # CPU, 1–2 minutes
  sampo-engine experiments --preset paper --train-data pannuke --train-folds 1 \\
      --test-data pannuke --test-folds 3 --dataset-name PanNuke --out exp/pannuke
  sampo-engine experiments --preset paper --train-data consep --train-split train \\
      --test-data consep --test-split test --dataset-name CoNSeP --out exp/consep
  sampo-engine experiments --gather exp/pannuke exp/consep --out exp/paper  # one report
  sampo-engine experiments --preset paper ... --dry-run   # the runs as sampo-engine commands
An interrupted grid continues with --resume. See docs/evaluation.md.
"""


def add_parser(subparsers):
    from sampo_engine.experiments.grid_config import ExperimentsConfig

    parser = subparsers.add_parser(
        "experiments",
        help="run the paper's experiment grid (fractions, ablations, α, rank) and gather tables",
        description="Train and evaluate the paper's experiment grid and gather one report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataclass_arguments(parser, ExperimentsConfig)
    parser.add_argument(
        "--gather",
        nargs="+",
        metavar="DIR",
        default=None,
        help="instead of running: merge the reports of finished grids (one per dataset) into --out",
    )
    add_threads_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def check(config, threads: int = 0) -> None:
    """Refuse a grid whose options or paths are wrong before torch is imported: the options
    (``ExperimentsConfig.validate``), the train and test data folders, the base checkpoint."""
    from sampo_engine import early_checks

    config.validate()
    if config.train_data:
        early_checks.dataset_folder(config.train_data, "--train-data")
    if config.test_data:
        early_checks.dataset_folder(config.test_data, "--test-data")
    if config.checkpoint:
        early_checks.checkpoint_file(config.checkpoint)
    early_checks.threads_count(threads)


def run(args) -> int:
    from sampo_engine.errors import ConfigError
    from sampo_engine.experiments.grid import ExperimentsConfig, gather, run_experiments

    if args.gather:
        if not args.out:
            raise ConfigError("pass --out FOLDER for the gathered report")
        print(f"report: {gather(args.gather, args.out)}")
        return 0
    config = dataclass_from_args(ExperimentsConfig, args)
    check(config, args.threads)  # before torch: a wrong path is refused at once
    if args.quiet:
        log = print
    else:
        from tqdm.auto import tqdm

        log = tqdm.write
    if config.dry_run:
        result = run_experiments(config, log=log, quiet=args.quiet)
    else:
        from sampo_engine.utils.threads import job_threads

        with job_threads(args.threads):  # an explicit --threads holds for every run of the grid
            result = run_experiments(config, log=log, quiet=args.quiet)
    if not config.dry_run:
        print(f"report:  {result.out / 'experiments.md'}")
        print(f"tables:  {result.out / 'experiments.json'}")
        print(f"details: {result.out / 'eval' / 'report.md'}")
    return 0
