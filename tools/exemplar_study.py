"""Few-shot T2 by nucleus (docs/exemplars.md, docs/type_head.md): how well 3 + 3 clicks pick a
cell type on held-out whole images, per nucleus source and classifier.

    python tools/exemplar_study.py --out runs/exemplar_study                       # floor + gt
    python tools/exemplar_study.py --out runs/exemplar_study --sources model --model nuclei-small

Options and outputs: ``sampo_engine.experiments.exemplar_study`` (``--help``).
"""

from pathlib import Path

from sampo_engine.experiments.exemplar_study import main

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    raise SystemExit(main(repo=REPO))
