"""``sampo-engine train``: fine-tune SAM with SAMPO on a folder of annotated images."""

from __future__ import annotations

import argparse

from sampo_engine._config import add_dataclass_arguments, dataclass_from_args
from sampo_engine.train.config import TrainConfig

EPILOG = """\
Data layout (the folder format): <id>_image.png|tif|jpg, <id>_inst.tif (uint16 instances,
0 = background), optional <id>_class.tif (uint8 class per pixel) and meta.json with class names.
PanNuke, CoNSeP and MoNuSeg layouts are detected too (--format auto).

Examples:
  sampo-engine train --data consep_train --task both --model vit_b --out runs/consep
  sampo-engine train --data tiles --model tiny --full --epochs 3 --out runs/tiny   # no weights needed
  sampo-engine train --data tiles --out runs/consep --resume                      # after a crash
"""


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "train",
        help="fine-tune SAM with SAMPO (LoRA + preference mining + DPO)",
        description="Fine-tune SAM with SAMPO: LoRA adapters, online prompt-centric preference "
        "mining, hybrid DPO + pixel loss. Writes an adapter bundle to --out.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataclass_arguments(parser, TrainConfig)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run(args) -> int:
    from sampo_engine.train.run import run_training

    config = dataclass_from_args(TrainConfig, args)
    run_training(config, progress_bar=not args.quiet)
    return 0
