"""The options of an evaluation (``sampo-engine eval`` and the GUI share their help text).

:class:`EvalConfig` holds every option; :meth:`EvalConfig.validate` refuses impossible settings
before anything is opened or written.
"""

from __future__ import annotations

from dataclasses import dataclass

from sampo_engine._config import DEVICES, option
from sampo_engine.errors import ConfigError
from sampo_engine.models.registry import MODEL_TYPES
from sampo_engine.predict.split import SPLITS
from sampo_engine.tasks import TASK_MIXES


@dataclass
class EvalConfig:
    # data
    data: str = option("", "test data: a folder of images, or a PanNuke/CoNSeP/MoNuSeg layout")
    data_format: str = option(
        "auto",
        "dataset layout",
        flag="--format",
        choices=("auto", "folder", "pannuke", "consep", "monuseg"),
    )
    split: str = option("", "CoNSeP only: 'train' or 'test' (needed when the folder holds both)")
    folds: list[int] | None = option(
        None, "PanNuke only: fold number(s) to evaluate on (default: every fold found)"
    )
    task: str = option(
        "both", "t1 = all nuclei, t2 = nuclei of the prompted class, both", choices=TASK_MIXES
    )
    fraction: float = option(1.0, "seeded fraction of the test images to evaluate (for speed)")
    max_queries: int = option(
        0, "evaluate at most this many queries (whole crops kept, seeded choice); 0 = all"
    )
    out: str = option("", "output folder: metrics.json, report.md, per_query.csv, plots/")
    overwrite: bool = option(False, "replace an existing evaluation in --out")
    # models
    model: str = option(
        "",
        f"SAM architecture: {', '.join(MODEL_TYPES)} (default: the adapters' base model, else vit_b)",
    )
    checkpoint: str = option(
        "",
        "base weights (default: the base the adapters were trained on, else the cached official checkpoint; random for tiny)",
    )
    image_size: int = option(0, "model input size in px (0 = the adapters' size, else 224)")
    adapters: list[str] | None = option(
        None,
        "adapter bundle folder(s) to evaluate (repeatable); each becomes a row named after its bundle",
        flag="--adapter",
    )
    base: bool = option(True, "evaluate the base model without adapter too (--no-base skips it)")
    # protocol
    seed: int = option(0, "seed of the evaluation prompts and subsets (same seed, same prompts)")
    num_positive: int = option(3, "positive points per evaluation prompt set (1–3)")
    num_negative: int = option(3, "negative points per evaluation prompt set (0–3)")
    sensitivity_queries: int = option(
        200, "queries per task scored on the positives 1–3 × negatives 0–3 grid; 0 = skip"
    )
    robustness_repeats: int = option(
        5, "R: random 3 + 3 prompt sets per query for robustness (std of Dice); 0 = skip"
    )
    robustness_queries: int = option(
        200, "queries per task scored R times for robustness (a seeded subset)"
    )
    instances: bool = option(
        True, "instance metrics (PQ, AJI, detection F1) of the selected masks split into nuclei"
    )
    slot_rule: str = option(
        "iou",
        "which of SAM's 3 masks is scored: iou = the IoU head's pick (the paper's protocol); "
        "clicks = the one agreeing best with the prompt's points; auto = clicks for T2, iou for T1 "
        "(what the predictor does by default). The oracle columns are unaffected",
        choices=("iou", "clicks", "auto"),
    )
    classical: bool = option(
        False,
        "also score the classical floor (hematoxylin threshold + watershed; T2 keeps the "
        "nuclei that look like the positively clicked ones) on the same prompts",
    )
    whole_images: bool = option(
        False,
        "also segment every test image whole with the tiled predictor from 3 + 3 clicks in one "
        "tile (prompt propagation) and report whole-image Dice/IoU/PQ",
    )
    t2_modes: str = option(
        "decoder,exemplar,hybrid",
        "with --whole-images: the T2 modes scored side by side on the same clicks, comma-"
        "separated (decoder = SAM's decoder reads the type; exemplar = every nucleus classified "
        "from the clicked ones; hybrid = both; see docs/exemplars.md)",
    )
    split_by: str = option(
        "auto",
        "with --whole-images: how touching nuclei are cut apart (auto = the model's learned "
        "split head where it ships one, else the watershed; head+flips = the head averaged "
        "over the image and its three flips; watershed = always the watershed; "
        "docs/split_head.md)",
        choices=SPLITS,
    )
    type_head: str = option(
        "auto",
        "with --whole-images: the nucleus type head that T2 by nucleus reads (auto = the "
        "packaged one, also for the classical floor's nuclei; off = none; or a .safetensors "
        "file; docs/type_head.md)",
    )
    match_radius: float = option(
        12.0,
        "with --whole-images: centroid distance (px) within which a predicted nucleus matches a "
        "true one for the per-class F1 (12 px = 3 µm at 40×, HoVer-Net's; use 6 at 20×)",
    )
    # compute
    batch_size: int = option(
        8, "queries per model call (the intents of one crop share its encoding)"
    )
    workers: int = option(
        0, "threads scoring the outputs (watershed split, instance matching); 0 = up to 8 CPUs"
    )
    device: str = option("auto", "auto = cuda, then mps, then cpu", choices=DEVICES)

    def validate(self) -> None:
        if not self.data:
            raise ConfigError("no test data: pass --data FOLDER")
        if self.model and self.model not in MODEL_TYPES:
            raise ConfigError(
                f"--model must be one of {', '.join(MODEL_TYPES)}, not {self.model!r}"
            )
        if not self.out:
            raise ConfigError("no output folder: pass --out FOLDER for the report")
        if self.task not in TASK_MIXES:
            raise ConfigError(f"--task must be one of {', '.join(TASK_MIXES)}, not {self.task!r}")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"--fraction must be in (0, 1], got {self.fraction}")
        if self.max_queries < 0:
            raise ConfigError("--max-queries must be ≥ 0 (0 = every query)")
        if self.image_size and (self.image_size % 16 or self.image_size < 0):
            raise ConfigError(
                f"--image-size {self.image_size} is not a positive multiple of 16; use e.g. 224"
            )
        if not 1 <= self.num_positive <= 3 or not 0 <= self.num_negative <= 3:
            raise ConfigError("prompts have 1–3 positive and 0–3 negative points")
        if min(self.sensitivity_queries, self.robustness_repeats, self.robustness_queries) < 0:
            raise ConfigError("--sensitivity-queries and --robustness-* must be ≥ 0")
        if self.batch_size < 1:
            raise ConfigError("--batch-size must be ≥ 1")
        if self.workers < 0:
            raise ConfigError("--workers must be ≥ 0 (0 = choose from the CPU count)")
        modes = [m.strip() for m in self.t2_modes.split(",") if m.strip()]
        from sampo_engine.predict.nucleus_classes import T2_MODES

        bad = [m for m in modes if m not in T2_MODES]
        if bad or not modes:
            raise ConfigError(
                f"--t2-modes {self.t2_modes!r}: use a comma-separated list of decoder, "
                f"exemplar, hybrid"
            )
        if self.match_radius <= 0:
            raise ConfigError(f"--match-radius must be > 0 px, got {self.match_radius}")
        if self.type_head not in ("auto", "off") and not self.type_head.endswith(".safetensors"):
            raise ConfigError(
                f"--type-head must be auto, off or a type head .safetensors file, not "
                f"{self.type_head!r}"
            )
        if self.split_by not in SPLITS:
            raise ConfigError(
                f"--split-by must be one of {', '.join(SPLITS)}, not {self.split_by!r}"
            )
        if not self.base and not self.adapters and not self.classical:
            raise ConfigError(
                "nothing to evaluate: --no-base without any --adapter (or --classical)"
            )
