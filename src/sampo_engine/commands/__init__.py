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
