"""Where the split-head study keeps what it makes (:mod:`~sampo_engine.experiments.split_head_study`):
the cached probability maps beside their images, the trained heads, and the score rows — read by
the study's stages and by the checks of trained heads
(:mod:`~sampo_engine.experiments.split_head_checks`). ``args`` is the study's parsed command
line (``out``, ``split_dir``, ``datasets``, ``max_images``, ``choose_images``).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

#: the head's foreground probability is cut here (its own BCE + Dice optimum)
HEAD_THRESHOLD = 0.5


def image_folder(args, split: str, ds: str) -> Path:
    """The real-data split's images of one dataset (``<split-dir>/data/<split>/<dataset>``)."""
    return Path(args.split_dir) / "data" / split / ds


def map_folder(args, split: str, ds: str) -> Path:
    """The cached probability maps of one dataset (``<out>/maps/<split>/<dataset>``)."""
    return Path(args.out) / "maps" / split / ds


def map_pairs(args, split: str, choosing: bool = False) -> list[tuple[str, Path, Path]]:
    """(dataset, cached map, image file) of every cached image of ``split`` (``choosing``: only
    the training images that choose the setting)."""
    from sampo_engine.experiments.instance_study import DATASETS as CHOOSE

    out = []
    for ds in args.datasets:
        paths = sorted(map_folder(args, split, ds).glob("*.npz"))
        if args.max_images:
            paths = paths[: args.max_images]
        if choosing:
            paths = paths[: args.choose_images or CHOOSE.get(ds, 6)]
        for npz in paths:
            out.append((ds, npz, image_folder(args, split, ds) / f"{npz.stem}_image.png"))
    return out


def scored_images(args) -> list[tuple[str, str, Path, Path]]:
    """(split, dataset, cached map, image file): the training images that choose a setting,
    then every held-out image."""
    images = [("train", *p) for p in map_pairs(args, "train", choosing=True)]
    return images + [("test", *p) for p in map_pairs(args, "test")]


def load_heads(args, arms) -> dict:
    """{(arm, seed): head} of every trained head of ``arms`` × ``--seeds`` in ``--out``; stops
    with the remedy when there is none."""
    import sys

    from sampo_engine.models.split_head import load_split_head

    paths = {(arm, s): head_path(args, arm, s) for arm in arms for s in args.seeds}
    heads = {k: load_split_head(p) for k, p in paths.items() if p.exists()}
    if not heads:
        sys.exit(f"no {'/'.join(arms)} heads under {args.out}/heads: run the train stage first")
    return heads


def head_path(args, arm: str, seed: int) -> Path:
    """The head of ``arm`` and ``seed`` in the study's ``--out``."""
    return head_file(args.out, arm, seed)


def head_file(folder: str | Path, arm: str, seed: int) -> Path:
    """The head of ``arm`` and ``seed`` in a study folder."""
    return Path(folder) / "heads" / f"{arm}_s{seed}.safetensors"


FIELDS = ("split", "dataset", "image", "arm", "seed", "core", "min_size", "dice", "pq", "dq",
          "sq", "centroid_f1", "count_ratio")  # fmt: skip


def write_rows(rows, path: Path) -> None:
    from sampo_engine.utils.atomic import write_text_atomic

    buf = io.StringIO()
    writer = csv.DictWriter(buf, FIELDS)
    writer.writeheader()
    writer.writerows({k: row[k] for k in FIELDS} for row in rows)
    write_text_atomic(path, buf.getvalue())


def read_rows(path: Path) -> list[dict]:
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            row["seed"] = int(row["seed"])
            row["core"] = float(row["core"]) if row["core"] else None
            row["min_size"] = int(row["min_size"])
            for k in FIELDS[7:]:
                row[k] = float(row[k])
            rows.append(row)
    return rows
