"""One module per ``sampo-engine`` subcommand.

Each module defines ``add_parser(subparsers)`` (cheap: no torch import) and ``run(args) -> int``
(imports what it needs). ``sampo_engine.cli`` wires them together.
"""

COMMAND_MODULES = {
    "train": "sampo_engine.commands.train",
    "eval": "sampo_engine.commands.evaluate",
    "predict": "sampo_engine.commands.predict",
    "weights": "sampo_engine.commands.weights",
    "demo": "sampo_engine.commands.demo",
    "experiments": "sampo_engine.commands.experiments",
}


def add_threads_argument(parser) -> None:
    """``--threads`` for the commands whose configs do not carry it (eval, predict, experiments)."""
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for torch (0 = auto: the cores this process may use minus those other "
        "processes keep busy, or OMP_NUM_THREADS when set) (default: 0)",
    )
