"""The second SAMPO study: from the shipped class-aware model, SAMPO and its ablations at 100 % and
10 % of the class-labelled images, 3 seeds, on held-out whole images (docs/sampo_study.md).

    python tools/sampo_study.py all --out runs/sampo_study
    python tools/sampo_study.py report --out runs/sampo_study

The stages and their options: ``sampo_engine.experiments.sampo_study`` (``--help``).
"""

from pathlib import Path

from sampo_engine.experiments.sampo_study import main

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    main(repo=REPO)
