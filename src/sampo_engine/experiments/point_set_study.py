"""Do the point-labelled sets help T2? A LoRA of the shipped model on them, measured.

BRCA-M2C and CRCHistoPhenotypes give one dot and a class per nucleus, no outlines. Their
*training* images become T2 training data by pairing each dot with the nucleus the shipped
model's own T1 answer puts around it (``sampo_engine.data.pseudo``; the images resampled ×2 to
the model's 40×). Three arms, each a LoRA of ``nuclei-small`` trained on T2 queries with the same
steps and seeds:

- ``points``: the pseudo-labelled point-set training images;
- ``control``: the class-labelled images the base already saw (CoNSeP and PanNuke-2 training
  images of ``python tools/real_data_study.py split``) — as much fine-tuning, no new data;
- the base itself (no fine-tune).

Each is scored by ``tools/exemplar_study.py`` on the held-out *validation* images of both point
sets and the held-out CoNSeP images (3 click seeds; T2 by the decoder, by nucleus, hybrid).

    python tools/point_set_study.py labels --out runs/point_sets
    python tools/point_set_study.py train --out runs/point_sets --seeds 0 1 2
    python tools/point_set_study.py score --out runs/point_sets --seeds 0 1 2
    python tools/point_set_study.py report --out runs/point_sets --seeds 0 1 2

Every stage skips what its folder already holds (resumable). The scoring runs the repository's
``tools/exemplar_study.py``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

#: the repository (its tools/exemplar_study.py scores); set by :func:`main`
REPO = Path.cwd()
POINT_SETS = ("brca_m2c_points", "crchisto_points")
ARMS = ("points", "control")


def stage_labels(args) -> None:
    """Pseudo-labelled folders ``OUT/data/<set>``: the training images ×2 with the T1 nuclei of
    ``nuclei-small`` (3 clicks: the dots nearest the centre) that hold a dot, classed by it."""
    from skimage.io import imread
    from skimage.transform import rescale
    from tqdm import tqdm

    from sampo_engine.data.folder import write_folder
    from sampo_engine.data.points import read_class_points
    from sampo_engine.data.pseudo import pseudo_labels_from_points
    from sampo_engine.data.sample import NucleiSample
    from sampo_engine.predict.predictor import PredictConfig, TilePredictor

    predictor = TilePredictor(PredictConfig(model="nuclei-small", device="cpu"))
    for dataset in POINT_SETS:
        target = Path(args.out) / "data" / dataset
        if (target / "meta.json").is_file():
            print(f"{target} exists: kept")
            continue
        folder = Path(args.shared) / dataset
        meta = json.loads((folder / "meta.json").read_text())
        names = [m["id"] for m in meta["images"] if m.get("split") == "train"]
        names = names[: args.max_images] if args.max_images else names
        samples, kept, dots_used, dots = [], 0, 0, 0
        for name in tqdm(names, desc=dataset, file=sys.stdout):
            image = imread(folder / f"{name}_image.png")[..., :3]
            big = rescale(image, 2, order=1, channel_axis=2, preserve_range=True)
            big = np.clip(np.round(big), 0, 255).astype(np.uint8)
            xy, cls = read_class_points(folder / f"{name}_points.csv")
            xy = xy * 2 + 0.5  # pixel centres of the resampled grid
            keep = cls > 0
            xy, cls = xy[keep], cls[keep]
            if len(xy) < 3:
                continue
            centre = np.array(big.shape[1::-1], np.float64) / 2
            first = np.argsort(((xy - centre) ** 2).sum(1))[:3]
            predictor.set_image(big)
            t1 = predictor.predict(xy[first], np.ones(3, np.int64), task="t1")
            pseudo = pseudo_labels_from_points(t1.labels, xy, cls)
            if pseudo.kept == 0:
                continue
            samples.append(NucleiSample(big, pseudo.inst, pseudo.cls, f"{dataset}_{name}"))
            kept, dots_used, dots = kept + pseudo.kept, dots_used + pseudo.dots_used, dots + len(xy)
        classes = {0: "background", **{int(k): v for k, v in meta["classes"].items()}}
        write_folder(samples, target, class_names=classes,
                     description=f"{dataset} training images ×2, nuclei-small T1 nuclei classed "
                                 f"by the dots inside them (tools/point_set_study.py)")  # fmt: skip
        print(f"{dataset}: {len(samples)} images, {kept} nuclei, {dots_used} of {dots} dots used")


def _adapter(args, arm: str, seed: int) -> Path:
    return Path(args.out) / "adapters" / f"{arm}_s{seed}"


def stage_train(args) -> None:
    """One LoRA of nuclei-small per arm and seed (T2 queries; same steps, batch, lr)."""
    from sampo_engine.train.config import TrainConfig
    from sampo_engine.train.trainer import Trainer
    from sampo_engine.utils.threads import configure_threads

    configure_threads(args.threads)
    study = Path(args.study) / "data" / "train"
    data = {
        "points": ",".join(str(Path(args.out) / "data" / d) for d in POINT_SETS),
        "control": f"{study / 'consep_train'},{study / 'pannuke_breast_2class'}",
    }
    for seed in args.seeds:
        for arm in args.arms:
            out = _adapter(args, arm, seed)
            if (out / "sampo_bundle.json").is_file() and '"complete": true' in (
                out / "sampo_bundle.json"
            ).read_text():
                print(f"{out} exists: kept")
                continue
            start = time.perf_counter()
            config = TrainConfig(
                data=data[arm], out=str(out), model="nuclei-small", task="t2",
                max_steps=args.steps, epochs=1000, batch_size=8, lr=1e-3, warmup_steps=10,
                val_fraction=0.0, eval_crops=0, seed=seed, device="cpu", threads=args.threads,
                overwrite=True, name=f"point-set study {arm} seed {seed}",
            )  # fmt: skip
            Trainer(config, log=lambda *a, **k: None).run()
            print(f"{arm} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)


def stage_score(args) -> None:
    """``tools/exemplar_study.py`` for the base and every adapter (rows_<tag>.csv)."""
    runs = [("base", "")] + [
        (f"{arm}_s{seed}", str(_adapter(args, arm, seed)))
        for seed in args.seeds
        for arm in args.arms
    ]
    scores = Path(args.out) / "scores"
    for tag, adapter in runs:
        if (scores / f"summary_{tag}.md").is_file():
            print(f"{tag}: scored already")
            continue
        command = [sys.executable, str(REPO / "tools" / "exemplar_study.py"), "--out", str(scores),
                   "--shared", args.shared, "--sources", "model", "--model", "nuclei-small",
                   "--tag", tag]  # fmt: skip
        if adapter:
            command += ["--adapter", adapter]
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        print(f"{tag}: {time.perf_counter() - start:.0f} s", flush=True)


def _means(path: Path) -> dict:
    """{(dataset, rule, metric): [mean over images and classes, per click seed]}."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = {}
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        metrics = ("f1", "dice") if dataset == "consep" else ("precision", "coverage")
        for rule in dict.fromkeys(r["rule"] for r in rows):
            for metric in metrics:
                per_seed = []
                for seed in sorted({int(r["seed"]) for r in rows}):
                    per_class = {}
                    for r in rows:
                        if (r["dataset"], r["rule"], int(r["seed"])) == (dataset, rule, seed) and \
                                r[metric] not in ("", "nan"):  # fmt: skip
                            per_class.setdefault(r["class"], []).append(float(r[metric]))
                    if per_class:
                        per_seed.append(np.mean([np.mean(v) for v in per_class.values()]))
                out[(dataset, rule, metric)] = per_seed
    return out


def stage_report(args) -> None:
    """A markdown table: base vs each arm (mean over training seeds ± their std), × 100."""
    scores = Path(args.out) / "scores"
    base = _means(scores / "rows_base.csv")
    arms = {arm: [_means(scores / f"rows_{arm}_s{s}.csv") for s in args.seeds] for arm in ARMS}
    names = {"brca_m2c_points": "BRCA-M2C", "crchisto_points": "CRCHistoPhenotypes",
             "consep": "CoNSeP"}  # fmt: skip
    rules = {"model-exemplar": "by nucleus", "model-decoder": "decoder", "model-hybrid": "hybrid"}
    lines = [
        "| data | T2 by | measure | base | + LoRA on the point sets | + LoRA, control |"
        " points − control, per seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for (dataset, rule, metric), values in base.items():
        if rule not in rules:
            continue
        cells = [f"{100 * np.mean(values):.1f}"]
        per_arm = {}
        for arm in ARMS:
            seed_means = [np.mean(m[(dataset, rule, metric)]) for m in arms[arm]]
            per_arm[arm] = seed_means
            cells.append(f"{100 * np.mean(seed_means):.1f} ± {100 * np.std(seed_means):.1f}")
        diff = [100 * (p - c) for p, c in zip(per_arm["points"], per_arm["control"])]
        cells.append(" / ".join(f"{d:+.1f}" for d in diff))
        lines.append(f"| {names.get(dataset, dataset)} | {rules[rule]} | {metric} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    text = "\n".join(lines)
    (Path(args.out) / "report.md").write_text(text + "\n")
    print(text)


def main(argv=None, repo: Path | None = None) -> int:
    global REPO
    REPO = Path(repo) if repo is not None else REPO
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("labels", "train", "score", "report", "all"))
    parser.add_argument("--out", default="runs/point_sets")
    parser.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--study", default="runs/study", help="tools/real_data_study.py split")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=150, help="LoRA steps of batch 8 per run")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS),
                        help="train / score only these arms (e.g. two processes side by side)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-images", type=int, default=0, help="per point set (0 = all)")
    args = parser.parse_args(argv)
    stages = ("labels", "train", "score", "report") if args.stage == "all" else (args.stage,)
    for stage in stages:
        {"labels": stage_labels, "train": stage_train, "score": stage_score,
         "report": stage_report}[stage](args)  # fmt: skip
    return 0
