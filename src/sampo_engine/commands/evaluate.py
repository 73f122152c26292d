"""``sampo-engine eval``: the paper's evaluation protocol for several models on identical prompts."""

from __future__ import annotations

import argparse

from sampo_engine._config import add_dataclass_arguments, dataclass_from_args
from sampo_engine.commands import add_threads_argument

EPILOG = """\
Every method (the base model without adapter, then each --adapter) answers the same seeded
queries: crops at the model input size, one per intent (T1 = all nuclei, T2 = nuclei of one
class), 3 positive + 3 negative points each. See docs/evaluation.md for the protocol.

Writes to --out: metrics.json (every number), report.md (the paper's tables, per class, per
density, per tissue, sensitivity, robustness, instance metrics), per_query.csv, plots/*.png,
curves/*.png (the adapters' training curves).

Examples:
  sampo-engine eval --data consep --split test --adapter runs/consep --out eval/consep
  sampo-engine eval --data pannuke --folds 3 --adapter runs/lsup --adapter runs/sampo --out eval/pn
  sampo-engine eval --data tiles --model tiny --checkpoint base.pth --max-queries 200 --out eval/t
"""


def add_parser(subparsers):
    from sampo_engine.eval.config import EvalConfig

    parser = subparsers.add_parser(
        "eval",
        help="evaluate models/adapters with the paper's protocol (tables, plots, metrics.json)",
        description="Evaluate the base model and adapter bundles on identical seeded prompts: "
        "IoU/Dice (IoU-head slot and oracle), per class/tissue/density, prompt sensitivity, "
        "robustness, instance metrics (PQ, AJI, F1) and the trivial T2 rows.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataclass_arguments(parser, EvalConfig, skip=("adapters",))
    field = EvalConfig.__dataclass_fields__["adapters"]
    parser.add_argument(
        "--adapter",
        dest="adapters",
        action="extend",
        nargs="+",
        default=None,
        metavar="DIR",
        help=field.metadata["help"],
    )
    add_threads_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def check(config, threads: int = 0) -> None:
    """Refuse an evaluation whose options or paths are wrong before torch is imported: the
    options (``EvalConfig.validate``), the test data folder, every adapter bundle and the base
    checkpoint."""
    from sampo_engine import early_checks

    config.validate()
    early_checks.dataset_folder(config.data)
    for adapter in config.adapters or []:
        early_checks.adapter_bundle(adapter)
    if config.checkpoint:
        early_checks.checkpoint_file(config.checkpoint)
    early_checks.device_name(config.device)
    early_checks.threads_count(threads)


def run(args) -> int:
    from sampo_engine.eval.config import EvalConfig

    config = dataclass_from_args(EvalConfig, args)
    check(config, args.threads)  # before torch: a wrong path is refused at once

    from tqdm.auto import tqdm

    from sampo_engine.eval.protocol import run_evaluation
    from sampo_engine.eval.report import fmt
    from sampo_engine.utils.threads import configure_threads

    configure_threads(args.threads)
    bar = None

    def progress(done: int, total: int, name: str) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="eval", unit="query", disable=args.quiet)
        bar.set_postfix_str(name, refresh=False)
        bar.update(done - bar.n)

    log = tqdm.write if not args.quiet else print
    try:
        result = run_evaluation(config, progress=progress, log=log)
    finally:
        if bar is not None:
            bar.close()
    for entry in result.metrics["methods"]:
        parts = []
        for task, s in entry["summary"].items():
            parts.append(
                f"{task.upper()} IoU {fmt(s['iou'])} Dice {fmt(s['dice'])} "
                f"(oracle {fmt(s['oracle_dice'])})"
            )
        print(f"{entry['name']}: " + "; ".join(parts))
    print(f"report:  {result.out / 'report.md'}")
    print(f"metrics: {result.out / 'metrics.json'}")
    return 0
