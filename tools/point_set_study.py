"""Do the point-labelled sets help T2? A LoRA of the shipped model on them, measured
(docs/point_sets.md).

    python tools/point_set_study.py all --out runs/point_sets --max-images 40 --steps 150

The stages and their options: ``sampo_engine.experiments.point_set_study`` (``--help``).
"""

from pathlib import Path

from sampo_engine.experiments.point_set_study import main

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    raise SystemExit(main(repo=REPO))
