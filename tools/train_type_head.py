"""Train the nucleus type head (docs/type_head.md) on the training images of every class-labelled
set, and measure it on the held-out ones.

    python tools/train_type_head.py --out runs/type_head --seed 0          # ~12 min, 1 thread

Options and what it writes: ``sampo_engine.experiments.type_head_training`` (``--help``).
"""

from pathlib import Path

from sampo_engine.experiments.type_head_training import main

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    raise SystemExit(main(repo=REPO))
