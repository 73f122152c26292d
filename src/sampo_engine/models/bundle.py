"""The adapter bundle: one folder holding what a trained SAMPO model is.

Layout of ``OUT/``::

    sampo_bundle.json          metadata (below); its presence marks a usable bundle
    adapter_model.safetensors  LoRA weights (peft naming)           — LoRA runs
    adapter_config.json        peft's LoraConfig                    — LoRA runs
    base.pth                   every weight, a plain SAM state dict — --full runs
    checkpoint.pt              optimiser/scheduler/RNG state for --resume
    metrics.jsonl              one JSON line per optimiser step
    epochs.jsonl               one JSON line per epoch (validation Dice ...)
    loss_curve.png             the training curves

Metadata: format version, kind ('lora' | 'full'), base model type, base checkpoint path and
SHA-256, input size, LoRA rank, tasks, class names, the training config, final metrics, epochs
done, package version. Every file is written atomically (temp + rename); the metadata last.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from sampo_engine._version import __version__
from sampo_engine.errors import CheckpointError, ConfigError
from sampo_engine.utils.atomic import write_json_atomic

BUNDLE_FILE = "sampo_bundle.json"
RUN_MARKER = "sampo_run.json"
LORA_WEIGHTS_FILE = "adapter_model.safetensors"  # peft's names, so peft can read them too
LORA_CONFIG_FILE = "adapter_config.json"
BASE_WEIGHTS_FILE = "base.pth"
FORMAT_VERSION = 1


@dataclass
class BundleInfo:
    path: Path
    kind: str
    model_type: str
    image_size: int
    rank: int | None = None
    base_checkpoint: str | None = None
    base_sha256: str | None = None
    task: str = "both"
    class_names: dict[int, str] = field(default_factory=dict)
    name: str = ""
    metrics: dict = field(default_factory=dict)
    epochs_done: int = 0
    complete: bool = False
    config: dict = field(default_factory=dict)
    version: str = __version__

    def to_json(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "model_type": self.model_type,
            "image_size": self.image_size,
            "rank": self.rank,
            "base_checkpoint": self.base_checkpoint,
            "base_sha256": self.base_sha256,
            "task": self.task,
            "class_names": {str(k): v for k, v in self.class_names.items()},
            "name": self.name,
            "metrics": self.metrics,
            "epochs_done": self.epochs_done,
            "complete": self.complete,
            "config": self.config,
            "package_version": self.version,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    @property
    def weights_file(self) -> Path:
        return self.path / (BASE_WEIGHTS_FILE if self.kind == "full" else LORA_WEIGHTS_FILE)


def is_bundle(path: str | os.PathLike) -> bool:
    return (Path(path) / BUNDLE_FILE).is_file()


def read_bundle(path: str | os.PathLike) -> BundleInfo:
    """Read a bundle's metadata; a folder that is not a bundle raises a clear error."""
    path = Path(path)
    meta_file = path / BUNDLE_FILE
    if not meta_file.is_file():
        raise CheckpointError(
            f"{path} is not a SAMPO adapter bundle (no {BUNDLE_FILE}); pass the --out folder of "
            f"a `sampo-engine train` run"
        )
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {meta_file}: {err}") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer napari-sampo ({meta.get('package_version')}); upgrade"
        )
    info = BundleInfo(
        path=path,
        kind=meta["kind"],
        model_type=meta["model_type"],
        image_size=int(meta["image_size"]),
        rank=meta.get("rank"),
        base_checkpoint=meta.get("base_checkpoint"),
        base_sha256=meta.get("base_sha256"),
        task=meta.get("task", "both"),
        class_names={int(k): v for k, v in meta.get("class_names", {}).items()},
        name=meta.get("name") or path.name,
        metrics=meta.get("metrics", {}),
        epochs_done=meta.get("epochs_done", 0),
        complete=meta.get("complete", False),
        config=meta.get("config", {}),
        version=meta.get("package_version", "?"),
    )
    if not info.weights_file.is_file():
        raise CheckpointError(f"bundle {path} lacks its weights file {info.weights_file.name}")
    return info


def write_bundle_metadata(info: BundleInfo) -> None:
    write_json_atomic(info.path / BUNDLE_FILE, info.to_json())


def check_compatible(
    info: BundleInfo, model_type: str, image_size: int | None = None, base_sha256: str | None = None
) -> None:
    """Refuse an adapter built for another base model, input size or base checkpoint."""
    problems = []
    if info.model_type != model_type:
        problems.append(f"it was trained on {info.model_type}, not {model_type}")
    if image_size is not None and info.image_size != image_size:
        problems.append(f"its input size is {info.image_size} px, not {image_size} px")
    if base_sha256 and info.base_sha256 and info.kind == "lora" and info.base_sha256 != base_sha256:
        problems.append(
            f"its base checkpoint had SHA-256 {info.base_sha256[:12]}…, this one {base_sha256[:12]}…"
        )
    if problems:
        raise CheckpointError(
            f"adapter {info.path} does not fit this model: "
            + "; ".join(problems)
            + ". Use the matching --model/--image-size/--checkpoint, or another adapter."
        )


def check_out_dir(out: str | os.PathLike, resume: bool, overwrite: bool) -> None:
    """The refusals of :func:`prepare_out_dir`, made without touching the folder (the CLI calls
    this before it imports torch).

    New or empty: fine. A finished bundle or an interrupted run: needs ``--resume`` (continue) or
    ``--overwrite`` (start again). Any other non-empty folder: refused.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a folder for the adapter bundle")
    if resume:
        if not (out / "checkpoint.pt").is_file():
            raise ConfigError(f"nothing to resume in {out} (no checkpoint.pt); drop --resume")
        return
    if out.is_dir() and any(out.iterdir()):
        if not ((out / BUNDLE_FILE).exists() or (out / RUN_MARKER).exists()):
            raise ConfigError(
                f"--out {out} is a non-empty folder that is not a SAMPO bundle; nothing was "
                f"written — choose a new or empty folder"
            )
        if not overwrite:
            raise ConfigError(
                f"--out {out} already holds a SAMPO run; pass --resume to continue it or "
                f"--overwrite to replace it"
            )


def prepare_out_dir(out: str | os.PathLike, resume: bool, overwrite: bool) -> Path:
    """Make ``out`` ready for a run without ever clobbering a user's folder
    (:func:`check_out_dir` decides; an overwritten run's files are removed, nothing else)."""
    check_out_dir(out, resume, overwrite)
    out = Path(out)
    if resume:
        return out
    if out.is_dir() and any(out.iterdir()):
        for name in (
            BUNDLE_FILE,
            RUN_MARKER,
            LORA_WEIGHTS_FILE,
            LORA_CONFIG_FILE,
            BASE_WEIGHTS_FILE,
            "checkpoint.pt",
            "metrics.jsonl",
            "epochs.jsonl",
            "loss_curve.png",
        ):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / RUN_MARKER, {"started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return out
