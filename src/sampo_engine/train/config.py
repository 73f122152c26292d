"""``TrainConfig``: every option of a SAMPO training run, with its help text.

The CLI (``sampo-engine train``) and the napari "Fine-tune on this layer" widget both build one of
these; :meth:`TrainConfig.validate` refuses bad combinations early with the remedy. This module
imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass

from sampo_engine._config import DEVICES, option
from sampo_engine.errors import ConfigError
from sampo_engine.models.registry import MODEL_TYPES, must_train_in_full
from sampo_engine.tasks import TASK_MIXES as TASKS


@dataclass
class TrainConfig:
    # data
    data: str = option(
        "",
        "folder of training images (<id>_image.png + <id>_inst.tif [+ <id>_class.tif]), or another supported dataset layout; several folders separated by commas are pooled",
    )
    data_format: str = option(
        "auto",
        "dataset layout",
        flag="--format",
        choices=("auto", "folder", "pannuke", "consep", "monuseg"),
    )
    task: str = option(
        "both", "t1 = all nuclei, t2 = nuclei of the clicked class, both = mix them", choices=TASKS
    )
    fraction: float = option(
        1.0, "seeded fraction of the training images to use (the paper's 0.1/0.2/0.3/1.0)"
    )
    val_fraction: float = option(0.1, "fraction of whole images held out for validation (0 = none)")
    out: str = option("", "output folder: the adapter bundle, checkpoints, metrics and plots")
    # model
    model: str = option("vit_b", "SAM architecture", choices=MODEL_TYPES)
    checkpoint: str = option(
        "",
        "base weights: an official SAM .pth, a base saved by --full, or empty to use the cached official checkpoint (random weights for tiny)",
    )
    image_size: int = option(224, "model input size in px (multiple of 16; the paper uses 224)")
    full: bool = option(
        False,
        "train every weight instead of LoRA (for models without pretrained weights, e.g. tiny); also saves base.pth",
    )
    lora_rank: int = option(64, "LoRA rank (Table 4)")
    init_adapter: str = option(
        "",
        "continue from this adapter bundle (the --out folder of an earlier run): a LoRA bundle's "
        "weights initialise the LoRA layers (same --model, --image-size and --lora-rank; its base "
        "checkpoint is used), a --full bundle's base.pth is the starting model",
    )
    # objective
    alpha: float = option(
        1.0,
        "weight α of the preference loss in L = L_sup + α·L_pref (Table 3). 1 = SAMPO, the "
        "default: in our study (docs/sampo_study.md) it made the answers less sensitive to "
        "where the clicks fall and T1 0.7 Dice better, at the same T2 Dice, but the decoder's "
        "whole-image T2 nucleus F1 2–3 points worse; 0 = pixel loss only, ~1.4× faster",
    )
    beta: float = option(
        2.0,
        "DPO temperature β (per-pixel-mean likelihoods: 1–5 keeps it the size of L_sup); > 0",
        minimum=0.01,
    )
    lam: float = option(1.0, "weight λ of L_intra in L_pref = L_inter + λ·L_intra")
    tie_margin: float = option(
        0.02, "skip pairs whose IoU gap is below this (ties carry no preference)"
    )
    no_inter: bool = option(False, "ablation: drop the inter-prompt preference term (Table 2)")
    no_intra: bool = option(False, "ablation: drop the intra-prompt preference term (Table 2)")
    no_sup: bool = option(False, "ablation: drop the supervised pixel term (Table 2)")
    literal_scoring: bool = option(
        False, "ablation: score each mask under its own logits (the paper read literally)"
    )
    num_prompt_sets: int = option(4, "K prompt sets mined per sample per step")
    reference_precision: str = option(
        "auto",
        "precision of the DPO reference pass: auto = bf16 on CUDA and on CPUs with native bf16 (AMX/AVX512-BF16), else fp32",
        choices=("auto", "fp32", "bf16"),
    )
    # optimisation
    epochs: int = option(10, "passes over the training crops")
    max_steps: int = option(0, "stop after this many optimiser steps (0 = no limit)")
    batch_size: int = option(2, "images per step (per process under torchrun)")
    lr: float = option(3e-4, "AdamW learning rate", minimum=1e-4)
    weight_decay: float = option(0.01, "AdamW weight decay")
    warmup_steps: int = option(0, "linear learning-rate warm-up steps (then cosine decay)")
    grad_clip: float = option(1.0, "clip the gradient norm to this (0 = off)")
    seed: int = option(0, "seed for data order, crops, prompts and initialisation")
    workers: int = option(0, "DataLoader worker processes")
    threads: int = option(
        0,
        "CPU threads for torch (0 = auto: the cores this process may use minus those other "
        "processes keep busy, or OMP_NUM_THREADS when set; see docs/performance.md)",
    )
    device: str = option("auto", "auto = cuda, then mps, then cpu", choices=DEVICES)
    resume: bool = option(False, "continue the run in --out from its last checkpoint")
    overwrite: bool = option(False, "replace an existing bundle in --out")
    eval_crops: int = option(24, "validation crops per task scored at the end of each epoch")
    name: str = option("", "adapter name shown in the plugin (default: the --out folder's name)")
    # the pathologist's corrections as offline preference pairs (docs/corrections.md)
    corrections: str = option(
        "",
        "folder of correction records saved by the plugin (index.json + <id>.npz): each adds a "
        "pair preferred = corrected mask, dispreferred = the model's output, plus supervision",
    )
    corrections_weight: float = option(
        1.0, "weight of the corrections' loss relative to the online mined pairs"
    )

    def validate(self) -> None:
        """Refuse impossible settings before any work starts."""
        if not self.data:
            raise ConfigError("no training data: pass --data FOLDER")
        if not self.out:
            raise ConfigError("no output folder: pass --out FOLDER for the adapter bundle")
        if self.task not in TASKS:
            raise ConfigError(f"--task must be one of {', '.join(TASKS)}, not {self.task!r}")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"--fraction must be in (0, 1], got {self.fraction}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.image_size % 16 or self.image_size <= 0:
            raise ConfigError(
                f"--image-size {self.image_size} is not a positive multiple of 16; use e.g. 224"
            )
        if self.lora_rank < 1 and not self.full:
            raise ConfigError("--lora-rank must be ≥ 1 (or train every weight with --full)")
        if self.num_prompt_sets < 2 and not (self.no_inter or self.alpha == 0):
            raise ConfigError(
                "--num-prompt-sets must be ≥ 2 for inter-prompt pairs (or pass --no-inter)"
            )
        if self.no_sup and (self.alpha == 0 or (self.no_inter and self.no_intra)):
            raise ConfigError("with --no-sup and no preference term there is nothing to train")
        self._validate_objective()
        self._validate_optimisation()
        if self.batch_size < 1 or self.epochs < 1:
            raise ConfigError("--batch-size and --epochs must be ≥ 1")
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; pick one")
        if self.threads < 0:
            raise ConfigError(f"--threads must be ≥ 0 (0 = auto), got {self.threads}")
        if self.corrections_weight < 0:
            raise ConfigError(f"--corrections-weight must be ≥ 0, got {self.corrections_weight}")
        if self.init_adapter and self.resume:
            raise ConfigError(
                "--init-adapter starts a new run from an adapter, --resume continues the run in "
                "--out: pick one"
            )
        if must_train_in_full(self.model):
            if not self.full and not self.checkpoint and not self.init_adapter:
                raise ConfigError(
                    f"{self.model} has no pretrained weights, so LoRA on its random weights "
                    "learns little: pass --full to train every weight (or --checkpoint BASE.pth "
                    "saved by a --full run)"
                )

    def _validate_objective(self) -> None:
        """The loss weights: a negative β would flip every preference and β = 0 would silently
        switch the preference term off, so both are refused with the switch that does it."""
        if not self.beta > 0:
            raise ConfigError(
                f"--beta must be > 0 (the DPO temperature; 1–5 keeps L_pref the size of L_sup), "
                f"got {self.beta}; to train without the preference term pass --alpha 0"
            )
        if not self.alpha >= 0:
            raise ConfigError(
                f"--alpha must be ≥ 0 (0 = no preference term, L_sup only), got {self.alpha}"
            )
        if not self.lam >= 0:
            raise ConfigError(
                f"--lam must be ≥ 0 (0 = no intra-prompt term, like --no-intra), got {self.lam}"
            )
        if not 0 <= self.tie_margin < 1:
            raise ConfigError(
                f"--tie-margin must be in [0, 1) (an IoU gap), got {self.tie_margin}; the "
                "default is 0.02"
            )
        if self.num_prompt_sets < 1:
            raise ConfigError(f"--num-prompt-sets must be ≥ 1, got {self.num_prompt_sets}")

    def _validate_optimisation(self) -> None:
        """The optimiser's numbers: each refused with the range that works."""
        if not self.lr > 0:
            raise ConfigError(f"--lr must be > 0 (the default is 3e-4), got {self.lr}")
        if not self.weight_decay >= 0:
            raise ConfigError(f"--weight-decay must be ≥ 0, got {self.weight_decay}")
        if not self.grad_clip >= 0:
            raise ConfigError(f"--grad-clip must be ≥ 0 (0 = off), got {self.grad_clip}")
        for name in ("warmup_steps", "max_steps", "eval_crops", "workers"):
            if getattr(self, name) < 0:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be ≥ 0, got {getattr(self, name)}")

    @property
    def adapter_name(self) -> str:
        from pathlib import Path

        return self.name or Path(self.out).name
