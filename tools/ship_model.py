"""Package a trained base as the engine's shipped model (``nuclei-small``; docs/model.md).

Reads a base checkpoint written by ``sampo-engine train --full`` (``base.pth``), checks that it
builds, and writes into ``src/sampo_engine/models/weights/``:

- ``<file>.safetensors`` — every weight in float16 (half the size; loaded back as float32);
- ``<file>.json`` — its card: SHA-256 of the weights (checked at every load), architecture,
  input size, expected magnification, classes seen in training, training data with licences,
  the recipe command and held-out numbers (from ``--card-extra``, a JSON file).

Usage::

    python tools/ship_model.py --base runs/base_both/base/base.pth \\
        --card-extra runs/base_both/card_extra.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

FILE = "nuclei_small"
#: what every card says, whatever the run (the data and their terms)
TRAINING_DATA = {
    "consep_train": "CoNSeP (Graham et al., HoVer-Net, MedIA 2019), colorectal, 40x; no licence "
    "stated in the copy used; upstream release by the Warwick TIA Centre for research",
    "monuseg_train": "MoNuSeg (Kumar et al., IEEE TMI 2017/2020), 7 organs, 40x; commonly listed "
    "as CC BY-NC-SA 4.0",
    "gbm40": "GBM40 (Kong/Zhang et al., ISBI 2016/2017), glioblastoma; no licence stated "
    "(research companion data)",
    "pannuke_breast_2class": "PanNuke breast (Gamper et al. 2019/2020); CC BY-NC-SA 4.0",
}
LICENCE = (
    "Trained on data under non-commercial or unstated research terms (PanNuke: CC BY-NC-SA 4.0; "
    "MoNuSeg: commonly CC BY-NC-SA 4.0; CoNSeP and GBM40: no licence stated, research "
    "releases): the weights are for research and non-commercial use only; cite the datasets "
    "(docs/model.md)."
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="base.pth written by train --full")
    parser.add_argument("--card-extra", default="", help="JSON merged into the card")
    parser.add_argument("--out", default=str(REPO / "src" / "sampo_engine" / "models" / "weights"))
    args = parser.parse_args(argv)

    import torch
    from safetensors.torch import save_file

    from sampo_engine.models.build import build_sam, load_checkpoint_state

    state = load_checkpoint_state(args.base)
    build_sam("small", args.base, 224)  # it must build as the architecture it ships as
    half = {k: v.detach().to(torch.float16).contiguous() for k, v in state.items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{FILE}.safetensors"
    tmp = weights.with_suffix(".tmp")
    save_file(half, str(tmp), metadata={"architecture": "small", "format": "sampo-shipped"})
    tmp.replace(weights)
    weights.chmod(0o644)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    card = {
        "name": "nuclei-small",
        "architecture": "small",
        "input_size": 224,
        "um_per_px": 0.25,
        "magnification": "40x (about 0.25 um/px); resample 20x images by 2 before use",
        "training_data": TRAINING_DATA,
        "licence": LICENCE,
        "sha256": digest,
        "bytes": weights.stat().st_size,
    }
    if args.card_extra:
        card.update(json.loads(Path(args.card_extra).read_text()))
    card_path = out / f"{FILE}.json"
    old = json.loads(card_path.read_text()) if card_path.is_file() else {}
    if "type_head" in old:  # it reads the pixels only: it stays valid for a new base
        card["type_head"] = old["type_head"]
        for key in ("brca_m2c_points", "crchisto_points"):
            if key in old.get("training_data", {}):
                card["training_data"] = {**card["training_data"], key: old["training_data"][key]}
        if "CRCHistoPhenotypes" in old.get("licence", ""):
            card["licence"] = old["licence"]
    if "split_head" in old:  # it read the old base's probabilities: ship a new one
        print(
            "the split head's card entry is dropped (it was trained on the old base's "
            "probabilities): run tools/ship_split_head.py for the new base"
        )
    tmp = card_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(card, indent=1) + "\n")
    tmp.replace(card_path)
    print(f"{weights} ({weights.stat().st_size / 1e6:.1f} MB), card {card_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
