"""The instance study (docs/instances.md): how whole-image nuclei are cut out of the model's
foreground probability — a grid of split settings, chosen on training images, reported on the
held-out whole images (:mod:`~sampo_engine.experiments.instance_split_sweep` computes,
:mod:`~sampo_engine.experiments.instance_study_report` writes the page).

Stages: ``maps`` (the cached probabilities, ``<out>/maps/<split>/<dataset>/<image>.npz``),
``sweep`` (``<out>/rows.csv``), ``report`` (the page).
"""

from __future__ import annotations

from pathlib import Path

from sampo_engine.experiments.instance_split_sweep import (
    grid,
    probability_maps,
    read_rows,
    sweep,
    write_rows,
)

#: the instance-labelled datasets of the real-data split, and how many training images of each
#: choose the setting (PanNuke's are 256 px patches: more of them)
DATASETS = {"consep_train": 6, "monuseg_train": 4, "gbm40": 6, "pannuke_breast_2class": 24}


def build_parser(repo: Path):
    import argparse

    parser = argparse.ArgumentParser(
        description="How whole-image nuclei are cut out of the model's foreground probability "
        "(docs/instances.md): a grid of split settings, chosen on training images, reported on "
        "the held-out whole images."
    )
    parser.add_argument("stage", choices=("maps", "sweep", "report", "all"))
    parser.add_argument("--out", default=str(repo / "runs" / "instance_study"))
    parser.add_argument(
        "--split-dir",
        default=str(repo / "runs" / "study"),
        help="the real-data study's output folder with data/train|test/<dataset> (make it with "
        "`python tools/real_data_study.py split`)",
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument(
        "--train-images",
        type=int,
        default=0,
        help="training images per dataset that choose the setting (0 = the study's numbers)",
    )
    parser.add_argument("--model", default="nuclei-small")
    parser.add_argument("--checkpoint", default="", help="base weights (default: the model's)")
    parser.add_argument("--adapter", default="", help="an adapter bundle on the model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation clicks")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6])
    parser.add_argument("--sigmas", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    parser.add_argument("--min-distances", type=int, nargs="+", default=[3, 5, 8, 12])
    parser.add_argument("--min-sizes", type=int, nargs="+", default=[16, 32, 48])
    parser.add_argument(
        "--scales",
        type=float,
        nargs="+",
        default=[1.0, 1.5],
        help="resample each image by these factors before the model sees it (nuclei span more "
        "of its logit cells); the probability is brought back to the image's size",
    )
    parser.add_argument("--docs", default=str(repo / "docs"))
    parser.add_argument("--page", default="instances.md", help="file name of the page in --docs")
    return parser


def _folders(args) -> dict[tuple[str, str], tuple[Path, int | None]]:
    """(split, dataset) -> (image folder, how many of its images)."""
    split_dir = Path(args.split_dir) / "data"
    out = {}
    for ds in args.datasets:
        train_n = args.train_images or DATASETS.get(ds, 4)
        out[("train", ds)] = (split_dir / "train" / ds, train_n)
        out[("test", ds)] = (split_dir / "test" / ds, None)
    return out


def _map_folder(out: Path, scale: float, split: str, ds: str) -> Path:
    """Where the maps of one (scale, split, dataset) are cached."""
    return out / ("maps" if scale == 1.0 else f"maps_x{scale:g}") / split / ds


def stage_maps(args) -> None:
    import sys

    from tqdm import tqdm

    from sampo_engine.models.loading import load_model

    folders = _folders(args)
    for folder, _ in folders.values():
        if not folder.is_dir():
            sys.exit(f"no image folder {folder}: run `python tools/real_data_study.py split` first")
    model = load_model(
        args.model, args.checkpoint or None, args.adapter or None, device=args.device
    )
    for scale in args.scales:
        for (split, ds), (folder, limit) in folders.items():
            with tqdm(desc=f"×{scale:g} {split}/{ds}", unit="image", leave=False) as bar:
                probability_maps(
                    model, folder, _map_folder(Path(args.out), scale, split, ds), args.seed,
                    limit, args.device, progress=lambda name: bar.update(1), scale=scale,
                )  # fmt: skip


def _cached_maps(args) -> dict[tuple[str, str, float], list[Path]]:
    maps = {}
    for scale in args.scales:
        for split, ds in _folders(args):
            folder = _map_folder(Path(args.out), scale, split, ds)
            paths = sorted(folder.glob("*.npz")) if folder.is_dir() else []
            if paths:
                maps[(split, ds, scale)] = paths
    return maps


def main(argv=None, repo: Path | None = None) -> None:
    import sys
    import time

    from tqdm import tqdm

    repo = Path.cwd() if repo is None else Path(repo)
    args = build_parser(repo).parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    todo = ["maps", "sweep", "report"] if args.stage == "all" else [args.stage]
    start = time.perf_counter()
    if "maps" in todo:
        stage_maps(args)
    if "sweep" in todo:
        maps = _cached_maps(args)
        if not maps:
            sys.exit(f"no probability maps under {out}/maps: run the maps stage first")
        settings = grid(
            args.thresholds, args.sigmas, args.min_distances, args.min_sizes, args.scales,
            model=args.model,
        )  # fmt: skip
        with tqdm(total=sum(map(len, maps.values())), desc="sweep", unit="image") as bar:
            rows = sweep(maps, settings, progress=lambda: bar.update(1))
        write_rows(rows, out / "rows.csv")
    if "report" in todo:
        from sampo_engine.experiments.instance_study_report import report

        if not (out / "rows.csv").exists():
            sys.exit(f"no {out}/rows.csv: run the sweep stage first")
        report(args, read_rows(out / "rows.csv"))
    print(f"done in {time.perf_counter() - start:.0f} s")
