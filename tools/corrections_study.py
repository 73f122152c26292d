"""Does learning from a pathologist's corrections help? A controlled study on generated tiles.

The command line of :mod:`sampo_engine.experiments.corrections_study` (the study, its options
and its table are described there; results in docs/corrections.md)::

    python tools/corrections_study.py --seeds 0 1 2 --out runs/corrections_study
"""

from __future__ import annotations

import sys

from sampo_engine.experiments.corrections_study import main

if __name__ == "__main__":
    sys.exit(main())
