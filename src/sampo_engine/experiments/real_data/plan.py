"""What the real-data study compares: its datasets, the held-out split, the fine-tuning variants
and where each run's folder lies under the study's output folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

#: dataset -> (tasks it serves, held-out images)
DATASETS = {
    "consep_train": ("t1+t2", 5),
    "monuseg_train": ("t1", 3),
    "gbm40": ("t1", 8),
    "pannuke_breast_2class": ("t1+t2", 5),
}

#: the fine-tuning variants: name -> extra train flags
VARIANTS = {
    "sampo": [],
    "lsup": ["--alpha", "0"],
    "no_inter": ["--no-inter"],
    "no_intra": ["--no-intra"],
}
LABELS = {
    "sampo": "SAMPO (L_sup + L_inter + L_intra)",
    "lsup": "LoRA, L_sup only",
    "no_inter": "SAMPO without L_inter",
    "no_intra": "SAMPO without L_intra",
}


def _link(src: Path, dst: Path) -> None:
    try:
        dst.symlink_to(src.resolve())
    except OSError:
        shutil.copy2(src, dst)


def split(shared: Path, out: Path, seed: int) -> dict:
    """Hold out whole images per dataset; write train/ and test/ folders of links."""
    path = out / "split.json"
    if path.exists():
        return json.loads(path.read_text())
    result = {"seed": seed, "datasets": {}}
    for name, (tasks, n_test) in DATASETS.items():
        src = shared / name
        meta = json.loads((src / "meta.json").read_text())
        ids = [m["id"] for m in meta["images"]]
        rng = np.random.default_rng([seed, len(ids)])
        test = sorted(rng.choice(ids, size=n_test, replace=False).tolist())
        for part, keep in (("train", [i for i in ids if i not in test]), ("test", test)):
            dst = out / "data" / part / name
            dst.mkdir(parents=True, exist_ok=True)
            sub = dict(meta, images=[m for m in meta["images"] if m["id"] in keep])
            (dst / "meta.json").write_text(json.dumps(sub, indent=1))
            for image_id in keep:
                for f in src.glob(f"{image_id}_*"):
                    if not (dst / f.name).exists():
                        _link(f, dst / f.name)
        result["datasets"][name] = {"tasks": tasks, "test": test, "n_train": len(ids) - n_test}
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return result


def train_folders(out: Path) -> str:
    """The ``--data`` of every training: the train folders of all datasets, comma-separated."""
    return ",".join(str(out / "data" / "train" / n) for n in DATASETS)


def adapter_folders(out: Path, args) -> list[Path]:
    """The adapter bundle folder of every variant × seed (seed-major)."""
    return [out / "adapters" / f"{v}_s{s}" for s in args.seeds for v in args.variants]


def complete(folder: Path) -> bool:
    """Whether ``folder`` holds a finished training run (its bundle says ``complete``)."""
    meta = folder / "sampo_bundle.json"
    return meta.exists() and bool(json.loads(meta.read_text()).get("complete"))
