"""``sampo-engine``: the command-line entry point.

Parsing imports no torch or peft, so ``sampo-engine --help`` answers at once; each subcommand
imports its heavy dependencies inside its ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sampo_engine._version import __version__
from sampo_engine.commands import COMMAND_MODULES
from sampo_engine.errors import SampoError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sampo-engine",
        description=(
            "Fine-tune Segment Anything for nuclei with SAMPO (LoRA + online prompt-centric "
            "preference mining + hybrid DPO/pixel loss), evaluate it with the paper's protocol, "
            "and predict on tiles of any size."
        ),
    )
    parser.add_argument("--version", action="version", version=f"sampo-engine {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES.values():
        module = importlib.import_module(module_name)
        command_parser = module.add_parser(sub)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except SampoError as err:
        print(f"sampo-engine {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sampo-engine {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
