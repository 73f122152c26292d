"""``sampo-engine train``: fine-tune SAM with SAMPO on a folder of annotated images."""

from __future__ import annotations

import argparse
import os

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


def check(config: TrainConfig) -> None:
    """Refuse a run whose options or paths are wrong before torch is imported (seconds saved
    on every typo): the options (:meth:`TrainConfig.validate`), the data folders, the base
    checkpoint (given, or the cached official one a pretrained model needs), the adapter to
    continue from, the corrections folder, and whether --out can take the run."""
    from sampo_engine import early_checks
    from sampo_engine.models.loading import resolve_checkpoint

    config.validate()
    early_checks.dataset_folders(config.data)
    if config.checkpoint:
        early_checks.checkpoint_file(config.checkpoint)
    if config.init_adapter:
        early_checks.adapter_bundle(config.init_adapter, "--init-adapter")
    else:
        resolve_checkpoint(config.model, config.checkpoint or None)  # official weights cached?
    if config.corrections:
        early_checks.corrections_folder(config.corrections)
    if os.environ.get("RANK", "0") == "0":  # distributed: rank 0 alone prepares --out
        early_checks.run_folder(config.out, config.resume, config.overwrite)


def run(args) -> int:
    config = dataclass_from_args(TrainConfig, args)
    check(config)  # before torch: a wrong path is refused at once

    from sampo_engine.train.run import run_training

    run_training(config, progress_bar=not args.quiet)
    return 0
