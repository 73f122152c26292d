"""The main job: a complete SAMPO run that works offline on a fresh machine.

0. Real tissue first (``--real-tile``, default on): the H&E tile shipped with the package
   (BRCA-M2C, BSD-3-Clause) is segmented by the model shipped with it (``nuclei-small``, no
   download): T1 from three clicks, then T2 by nucleus from three lymphocytes and three other
   nuclei; TIFF, GeoJSON, CSV and an overlay PNG go to ``OUT/real_tile``, and how well the
   nuclei match the experts' dots is printed (:func:`segment_real_tile`).
1. Generates synthetic H&E-like tiles with instance and class maps (``OUT/data``).
2. Trains with SAMPO (T1 + T2): vit_b + LoRA when the official vit_b checkpoint is in the cache
   (``sampo-engine weights download vit_b``), otherwise the ``tiny`` model trained in full (it has
   no pretrained weights), holding out whole images for validation.
3. Prints the held-out T1/T2 Dice and where the adapter bundle, metrics and plot went.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sampo_engine._config import option
from sampo_engine.errors import ConfigError


@dataclass
class DemoConfig:
    out: str = option("runs/demo", "output folder (data, adapter bundle, metrics, plot)")
    images: int = option(40, "number of synthetic tiles to generate")
    tile_size: int = option(256, "synthetic tile size in px")
    epochs: int = option(0, "training epochs (0 = 25 for tiny, 2 for vit_b)")
    model: str = option(
        "auto",
        "auto = vit_b if its checkpoint is cached, else tiny",
        choices=("auto", "tiny", "vit_b"),
    )
    seed: int = option(0, "seed for data, training and prompts")
    device: str = option("auto", "auto = cuda, then mps, then cpu")
    threads: int = option(
        0,
        "CPU threads for torch (0 = auto: the cores this process may use minus those other "
        "processes keep busy, or OMP_NUM_THREADS when set)",
    )
    real_tile: bool = option(
        True,
        "first segment the real H&E tile shipped with the package with the shipped model "
        "(T1 and T2 from three clicks each; outputs in OUT/real_tile)",
    )

    def check(self) -> None:
        """Refuse impossible options before anything heavy is imported."""
        from sampo_engine import early_checks

        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise ConfigError(f"--out {self.out} is a file; pass a folder for the demo's outputs")
        if self.images < 2:
            raise ConfigError(
                f"--images {self.images}: the demo holds whole tiles out for validation, so it "
                f"needs at least 2"
            )
        if self.epochs < 0:
            raise ConfigError(f"--epochs must be ≥ 0 (0 = the model's default), got {self.epochs}")
        early_checks.device_name(self.device)
        early_checks.threads_count(self.threads)


def segment_real_tile(out: Path, device: str = "auto") -> dict:
    """Stage 0 of the main job (see the module docstring); returns the printed numbers.

    The tile is 20×; it is resampled by 2 to the model's 40×. Clicks: the experts' dots nearest
    the tile's centre — three of any class for T1; three lymphocytes and three others for T2.
    """
    import time

    import numpy as np
    from skimage.transform import rescale

    from sampo_engine.eval.nucleus_match import point_agreement
    from sampo_engine.models.availability import SHIPPED, default_model, model_state
    from sampo_engine.predict.export import write_prediction
    from sampo_engine.predict.predictor import PredictConfig, TilePredictor
    from sampo_engine.samples import brca_tile

    name = default_model()
    if model_state(name).state != SHIPPED:
        name = "nuclei-small"  # the real-tile stage shows the shipped model, whatever is cached
    tile = brca_tile()
    image = rescale(tile.image, 2, order=1, channel_axis=2, preserve_range=True)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    dots = tile.dots_xy * 2 + 0.5  # (x, y) on the resampled grid
    lymph = tile.dot_classes == 1
    order = np.argsort(((dots - np.array(image.shape[1::-1]) / 2) ** 2).sum(1))
    folder = out / "real_tile"
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    predictor = TilePredictor(PredictConfig(model=name, device=device))
    predictor.set_image(image)
    t1 = predictor.predict(dots[order[:3]], np.ones(3, np.int64), task="t1")
    pos = [i for i in order if lymph[i]][:3]
    neg = [i for i in order if not lymph[i]][:3]
    t2 = predictor.predict(
        dots[pos + neg], np.array([1] * 3 + [0] * 3), task="t2", class_name="lymphocyte"
    )
    seconds = time.perf_counter() - start
    rows = np.clip(np.round(dots[:, 1]).astype(int), 0, image.shape[0] - 1)
    cols = np.clip(np.round(dots[:, 0]).astype(int), 0, image.shape[1] - 1)
    inside = float((t1.labels[rows, cols] > 0).mean())
    agree = point_agreement(t2.labels, dots, tile.dot_classes, 1)
    for tag, result, class_name in (("t1", t1, None), ("t2_lymphocyte", t2, "lymphocyte")):
        paths = {
            "labels": folder / f"{tag}_labels.tif",
            "geojson": folder / f"{tag}.geojson",
            "csv": folder / f"{tag}.csv",
        }
        write_prediction(
            paths, result.labels, image=image, class_name=class_name, nucleus=result.nucleus,
            task=result.task,
        )  # fmt: skip
    _write_overlay(
        folder / "overlay.png", image, t1.labels, t2.labels, dots[order[:3]], dots[pos + neg]
    )
    numbers = {
        "model": name,
        "t1_nuclei": t1.num_nuclei,
        "dots_inside_t1": inside,
        "t2_nuclei": t2.num_nuclei,
        "t2_precision": agree["precision"],
        "t2_coverage": agree["coverage"],
        "lymphocyte_dots": agree["class_points"],
        "seconds": seconds,
    }
    print(
        f"real H&E tile (BRCA-M2C, {tile.image.shape[1]}×{tile.image.shape[0]} px at 20×, "
        f"resampled to 40×), model {name} (shipped, no download), {seconds:.1f} s:\n"
        f"  T1 from 3 clicks: {t1.num_nuclei} nuclei; {100 * inside:.0f} % of the "
        f"{len(dots)} nuclei the experts marked lie inside one\n"
        f"  T2 (3 lymphocytes + 3 others, by nucleus): {t2.num_nuclei} nuclei; of those holding "
        f"an expert dot {100 * agree['precision']:.0f} % are lymphocytes; "
        f"{100 * agree['coverage']:.0f} % of the {agree['class_points']} lymphocytes found\n"
        f"  outputs: {folder} (labels TIFF, GeoJSON, CSV; overlay.png)"
    )
    return numbers


def _write_overlay(path: Path, image, t1_labels, t2_labels, t1_clicks, t2_clicks) -> None:
    """A side-by-side PNG: T1 outlines (yellow) and T2 nuclei (red) over the tile, clicks as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    from sampo_engine.utils.atomic import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(12, 6.2), dpi=110)
    for ax, labels, clicks, title, colour in (
        (axes[0], t1_labels, t1_clicks, f"T1: {len(np.unique(t1_labels)) - 1} nuclei", (1, 0.9, 0)),
        (axes[1], t2_labels, t2_clicks, "T2 by nucleus: lymphocytes", (1, 0.1, 0.1)),
    ):
        shown = image.astype(np.float32) / 255
        inside = labels > 0
        shown[inside] = 0.55 * shown[inside] + 0.45 * np.asarray(colour, np.float32)
        shown[find_boundaries(labels, mode="thick")] = colour
        ax.imshow(shown)
        n = len(clicks)
        ax.scatter(clicks[:, 0], clicks[:, 1], s=40, c=["lime"] * min(n, 3) + ["red"] * max(n - 3, 0),
                   edgecolors="white")  # fmt: skip
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def run_demo(config: DemoConfig, progress_bar: bool = True):
    config.check()
    if config.real_tile:
        segment_real_tile(Path(config.out), config.device)
    from sampo_engine.data.folder import write_folder
    from sampo_engine.data.synthetic import make_synthetic_dataset
    from sampo_engine.models.bundle import is_bundle
    from sampo_engine.models.checkpoints import find_checkpoint
    from sampo_engine.train.config import TrainConfig
    from sampo_engine.train.run import run_training

    out = Path(config.out)
    data_dir = out / "data"
    if not (data_dir / "meta.json").is_file():
        print(f"generating {config.images} synthetic {config.tile_size} px tiles in {data_dir}")
        write_folder(
            make_synthetic_dataset(config.images, config.tile_size, seed=config.seed), data_dir
        )
    model = config.model
    if model == "auto":
        model = "vit_b" if find_checkpoint("vit_b") else "tiny"
    if model == "tiny":
        print(
            "model: tiny, trained in full (no pretrained weights; `sampo-engine weights download "
            "vit_b` to fine-tune the real SAM with LoRA instead)"
        )
        train = TrainConfig(
            data=str(data_dir),
            out=str(out / "adapter"),
            model="tiny",
            full=True,
            epochs=config.epochs or 25,
            batch_size=4,
            lr=1e-3,
            warmup_steps=50,
            seed=config.seed,
            val_fraction=0.15,
            eval_crops=48,
            device=config.device,
            threads=config.threads,
            task="both",
            name="demo-tiny",
        )
    else:
        print("model: vit_b + LoRA rank 64 on the official checkpoint")
        train = TrainConfig(
            data=str(data_dir),
            out=str(out / "adapter"),
            model="vit_b",
            epochs=config.epochs or 2,
            batch_size=2,
            seed=config.seed,
            val_fraction=0.15,
            eval_crops=48,
            device=config.device,
            threads=config.threads,
            task="both",
            name="demo-vit_b",
        )
    adapter = out / "adapter"
    train.overwrite = is_bundle(adapter) or (adapter / "sampo_run.json").exists()
    return run_training(train, progress_bar=progress_bar)
