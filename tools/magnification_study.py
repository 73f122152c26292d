"""Does the model-free nucleus size tell a 20× image from a 40× one? (docs/magnification.md)

    python tools/magnification_study.py --out runs/magnification_study

Options: ``sampo_engine.experiments.magnification_study`` (``--help``).
"""

from pathlib import Path

from sampo_engine.experiments.magnification_study import main

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    raise SystemExit(main(repo=REPO))
