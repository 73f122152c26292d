"""The main job: a complete SAMPO run that works offline on a fresh machine.

0. Real tissue first (``--real-tile``, default on; :mod:`sampo_engine.real_tile`): the H&E tile
   shipped with the package (BRCA-M2C, BSD-3-Clause) is segmented by the model shipped with it
   (``nuclei-small``, no download): T1 from three clicks, then T2 by nucleus from three
   lymphocytes and three other nuclei; TIFF, GeoJSON, CSV and an overlay PNG go to
   ``OUT/real_tile``, and how well the nuclei match the experts' dots is printed. Then a short
   SAMPO fine-tune of the shipped model on the tile's left half (its T1 nuclei classed by the
   dots) and the right half's T2 answer by the decoder before and after.
1. Generates synthetic H&E-like tiles with instance and class maps (``OUT/data``).
2. Trains with SAMPO (T1 + T2): vit_b + LoRA when the official vit_b checkpoint is in the cache
   (``sampo-engine weights download vit_b``), otherwise the ``tiny`` model trained in full (it has
   no pretrained weights), holding out whole images for validation.
3. Prints the held-out T1/T2 Dice and where the adapter bundle, metrics and plot went.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


def run_demo(config: DemoConfig, progress_bar: bool = True):
    config.check()
    if config.real_tile:
        from sampo_engine.real_tile import finetune_on_real_tile, segment_real_tile

        numbers = segment_real_tile(Path(config.out), config.device)
        finetune_on_real_tile(
            Path(config.out), numbers["t1_labels"], config.device, config.threads, config.seed
        )
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
