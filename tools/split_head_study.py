"""Does a learned split head cut whole-image nuclei better than the watershed of the model's
probability? Trained on the training images, reported on held-out whole images
(docs/split_head.md).

    python tools/split_head_study.py all --out runs/split_head

The stages and their options: ``sampo_engine.experiments.split_head_study`` (``--help``).
"""

from pathlib import Path

from sampo_engine.experiments.split_head_study import main

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    main(repo=REPO)
