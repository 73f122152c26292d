"""``sampo-engine demo``: the offline main job (synthetic data -> SAMPO training -> held-out Dice)."""

from __future__ import annotations

from sampo_engine._config import add_dataclass_arguments, dataclass_from_args
from sampo_engine.demo import DemoConfig


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "demo",
        help="offline end-to-end run: synthetic tiles, SAMPO training, held-out T1/T2 Dice",
        description=(
            "Generate synthetic H&E-like tiles, train with SAMPO (tiny in full, or vit_b + LoRA "
            "when its checkpoint is cached) and print held-out T1/T2 Dice."
        ),
    )
    add_dataclass_arguments(parser, DemoConfig)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run(args) -> int:
    from sampo_engine.demo import run_demo

    run_demo(dataclass_from_args(DemoConfig, args), progress_bar=not args.quiet)
    return 0
