"""The main job: a complete SAMPO run that works offline on a fresh machine.

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

    def check(self) -> None:
        """Refuse impossible options before anything heavy is imported."""
        from sampo_engine.commands import _checks

        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise ConfigError(f"--out {self.out} is a file; pass a folder for the demo's outputs")
        if self.images < 2:
            raise ConfigError(
                f"--images {self.images}: the demo holds whole tiles out for validation, so it "
                f"needs at least 2"
            )
        if self.epochs < 0:
            raise ConfigError(f"--epochs must be ≥ 0 (0 = the model's default), got {self.epochs}")
        _checks.device_name(self.device)
        _checks.threads_count(self.threads)


def run_demo(config: DemoConfig, progress_bar: bool = True):
    config.check()
    from sampo_engine.data.folder import write_folder
    from sampo_engine.data.synthetic import make_synthetic_dataset
    from sampo_engine.train.bundle import is_bundle
    from sampo_engine.train.config import TrainConfig
    from sampo_engine.train.run import run_training
    from sampo_engine.weights import find_checkpoint

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
