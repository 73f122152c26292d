"""How whole-image nuclei are cut out of the model's foreground probability: a grid of split
settings chosen on training images, reported on held-out whole images (docs/instances.md).

    python tools/instance_study.py all --out runs/instance_study

The stages and their options: ``sampo_engine.experiments.instance_study`` (``--help``).
"""

from pathlib import Path

from sampo_engine.experiments.instance_study import main

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    main(repo=REPO)
