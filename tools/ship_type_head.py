"""Package a type head trained by ``tools/train_type_head.py`` as ``nuclei-small``'s
(docs/type_head.md, docs/model.md).

Copies ``<folder>/type_head_seed<S>.safetensors`` into ``src/sampo_engine/models/weights/`` as
``nuclei_small_type_head.safetensors`` and records in the model's card (``nuclei_small.json``,
key ``type_head``): its SHA-256 (checked at every load), the vocabularies it knows, what it was
trained on (with the licences), its held-out accuracy and the recipe.

Usage::

    python tools/ship_type_head.py --folder runs/type_head --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from sampo_engine.models.type_head import SHIPPED_FILE as FILE  # noqa: E402

LICENCES = {
    "brca_m2c_points": "BRCA-M2C (Abousamra et al., ICCV 2021), BSD-3-Clause",
    "crchisto_points": "CRCHistoPhenotypes (Sirinukunwattana et al., IEEE TMI 2016), research use only",
    "consep": "CoNSeP (Graham et al., MedIA 2019), research use",
    "pannuke_2": "PanNuke breast, 2 classes (Gamper et al.), CC BY-NC-SA 4.0",
    # every set's nuclei, each class mapped to a general type: each keeps its own set's terms
    "general": "the four sets above, each nucleus under its own set's terms",
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", default=str(REPO / "runs" / "type_head"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--weights", default=str(REPO / "src" / "sampo_engine" / "models" / "weights")
    )
    args = parser.parse_args(argv)

    from sampo_engine.models.small_nets import read_card, ship_file, write_card
    from sampo_engine.models.type_head import PATCH, TYPE_UM_PER_PX, load_type_head

    folder = Path(args.folder)
    head_file = folder / f"type_head_seed{args.seed}.safetensors"
    net = load_type_head(head_file)  # refuses a file that is not a type head
    log = json.loads(head_file.with_suffix(".json").read_text())
    weights = Path(args.weights)
    shipped = ship_file(head_file, weights, FILE)
    card_path = weights / "nuclei_small.json"
    card = read_card(card_path)
    card["type_head"] = {
        **shipped,
        "width": net.width,
        "embed": net.embed,
        "patch_px": PATCH,
        "um_per_px": TYPE_UM_PER_PX,
        "vocabularies": {k: list(v) for k, v in net.heads.items()},
        "trained_on": {
            k: {"nuclei": sum(v.values()), "licence": LICENCES.get(k, "?")}
            for k, v in log.get("train_counts", {}).items()
        },  # fmt: skip
        "steps": log.get("steps"),
        "seconds": round(float(log.get("seconds", 0))),
        "recipe": f"{log.get('recipe', '?')}; python tools/ship_type_head.py --folder "
        f"{args.folder} --seed {args.seed}",
        "held_out_accuracy": {
            k: {c: round(100 * x, 1) for c, x in v.items()}
            for k, v in log.get("held_out_accuracy", {}).items()
        },
        "measured_in": "docs/type_head.md",
    }
    # the point sets join the model's training data and its licence statement
    data = card.setdefault("training_data", {})
    data.setdefault(
        "brca_m2c_points",
        "BRCA-M2C (Abousamra et al., ICCV 2021), breast, 20x; "
        "BSD-3-Clause; type head only (dots and classes)",
    )
    data.setdefault(
        "crchisto_points",
        "CRCHistoPhenotypes (Sirinukunwattana et al., IEEE TMI "
        "2016), colorectal, 20x; research use only; type head only (dots and classes)",
    )
    note = (
        " The type head was also trained on CRCHistoPhenotypes (research use only) and "
        "BRCA-M2C (BSD-3-Clause)."
    )
    if "CRCHistoPhenotypes" not in card.get("licence", ""):
        card["licence"] = card.get("licence", "") + note
    write_card(card_path, card)
    dst = weights / FILE
    print(f"wrote {dst} ({dst.stat().st_size} bytes) and its entry in {card_path.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
