"""Real-data study (docs/results.md): SAMPO vs a supervised-only twin on real H&E nuclei.

The command line of :mod:`sampo_engine.experiments.real_data.study` (stages and options are
described there), run from this checkout: the default ``--shared`` is ``../shared/data``, the
default ``--out`` ``runs/study``, the default ``--docs`` ``docs/``::

    python tools/real_data_study.py all --shared ../shared/data --out runs/study
    python tools/real_data_study.py report --out runs/study      # rewrite docs/results.md only
"""

from __future__ import annotations

from pathlib import Path

from sampo_engine.experiments.real_data.study import main

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    main(repo=REPO)
