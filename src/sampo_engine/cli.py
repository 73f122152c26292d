"""``sampo-engine``: the command-line entry point.

Parsing imports no torch or peft, so ``sampo-engine --help`` answers at once; each subcommand
imports its heavy dependencies inside its ``run``, after checking the paths it was given (a
missing data folder, adapter, image or checkpoint is refused in well under a second, not after
the seconds torch takes to import).

Before any command runs, :func:`main` asks OpenMP to let idle threads sleep
(``OMP_WAIT_POLICY=PASSIVE``, unless the user set ``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT`` or
``KMP_BLOCKTIME``). It must happen here: the OpenMP runtime reads the variable once, when torch
is imported. By default a torch thread that finishes its share of an operator spins at the
barrier; on a machine shared with other CPU-bound processes its team-mate waits in the run
queue meanwhile: beside one other job a training step of the ``tiny`` model took 6.0 s with two
spinning threads and 0.35 s with the same two threads sleeping (docs/performance.md, "Busy
machines"; :mod:`sampo_engine.utils.threads` chooses the thread count of each job).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sampo_engine._version import __version__
from sampo_engine.commands import COMMAND_MODULES
from sampo_engine.errors import SampoError
from sampo_engine.utils.threads import prefer_passive_wait


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


def _torch_threads() -> int | None:
    """torch's intra-op thread count when torch is already imported (a caller in-process)."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def main(argv: list[str] | None = None) -> int:
    prefer_passive_wait()  # before anything imports torch: see the module docstring
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    threads = _torch_threads()
    try:
        return int(args._run(args) or 0)
    except SampoError as err:
        print(f"sampo-engine {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sampo-engine {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if threads is not None:  # called in-process: leave the caller's thread count as it was
            sys.modules["torch"].set_num_threads(threads)


if __name__ == "__main__":
    raise SystemExit(main())
