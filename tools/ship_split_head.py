"""Package a split head trained by the split-head study as ``nuclei-small``'s
(docs/split_head.md, docs/model.md).

Copies ``<study>/heads/<arm>_s<seed>.safetensors`` into ``src/sampo_engine/models/weights/`` as
``nuclei_small_split_head.safetensors`` and records in the model's card (``nuclei_small.json``,
key ``split_head``): its SHA-256 (checked at every load), the core level chosen on the training
images, the held-out numbers of the study, and the recipe.

Usage::

    python tools/ship_split_head.py --study runs/split_head --arm image+prob --seed 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

FILE = "nuclei_small_split_head.safetensors"


def _rel(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default=str(REPO / "runs" / "split_head"))
    parser.add_argument("--arm", default="image+prob")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--weights", default=str(REPO / "src" / "sampo_engine" / "models" / "weights")
    )
    args = parser.parse_args(argv)

    from sampo_engine.experiments.real_data.results import PRETTY
    from sampo_engine.experiments.split_head_report import Arm
    from sampo_engine.experiments.split_head_study import read_rows
    from sampo_engine.models.small_nets import read_card, ship_file, write_card
    from sampo_engine.models.split_head import load_split_head, split_head_metadata

    study = Path(args.study)
    head_file = study / "heads" / f"{args.arm}_s{args.seed}.safetensors"
    head = load_split_head(head_file)  # refuses a file that is not a head
    meta = split_head_metadata(head_file)
    rows = read_rows(study / "rows.csv")
    arm, base = Arm(rows, args.arm), Arm(rows, "watershed")
    core, min_size = arm.setting
    pq = arm.by_measure["pq"][args.seed]
    ws = base.by_measure["pq"][-1]
    depth = f" --depth {head.depth}" if head.depth != 2 else ""
    weights = Path(args.weights)
    shipped = ship_file(head_file, weights, FILE)
    card_path = weights / "nuclei_small.json"
    card = read_card(card_path)
    card["split_head"] = {
        **shipped,
        "inputs": head.inputs,
        "width": head.width,
        "depth": head.depth,
        "threshold": 0.5,
        "core_level": core,
        "min_size_chosen": min_size,
        "trained": {k: meta[k] for k in ("steps", "seed", "train_images", "seconds") if k in meta},
        "recipe": f"python tools/split_head_study.py all --out {_rel(study)} --steps "
        f"{meta.get('steps', '?')}{depth}; python tools/ship_split_head.py --study {_rel(study)} "
        f"--arm {args.arm} --seed {args.seed}",
        "held_out_whole_image_t1_pq": {
            PRETTY.get(d, d): round(100 * v, 1) for d, v in pq.items() if d != "macro"
        },
        "held_out_whole_image_t1_pq_watershed": {
            PRETTY.get(d, d): round(100 * v, 1) for d, v in ws.items() if d != "macro"
        },
        "chosen_in": "docs/split_head.md",
    }
    write_card(card_path, card)
    dst = weights / FILE
    print(f"wrote {dst} ({dst.stat().st_size} bytes) and its entry in {card_path.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
