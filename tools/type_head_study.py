"""Does a nucleus type head trained on expert-classed nuclei make "more like these" (exemplar T2)
pick the clicked type better on held-out images? (docs/type_head.md)

    python tools/type_head_study.py all --out runs/type_head

The stages and their options: ``sampo_engine.experiments.type_head_study`` (``--help``).
"""

from pathlib import Path

from sampo_engine.experiments.type_head_study import main

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    raise SystemExit(main(repo=REPO))
