"""Path checks every command runs before it imports torch or peft (docs/performance.md).

Importing torch takes seconds (4 s on a quiet 2-core machine, 10–20 s on a busy one), so a
mistyped ``--data`` or ``--adapter`` used to be refused only after that wait. These checks look
at the file system alone and raise the same :class:`~sampo_engine.errors.SampoError` messages the
readers raise later (the CLI prints them and exits with status 2). They check existence and
kind only; what a file holds is still read and checked by the job itself.

This module imports nothing heavy.
"""

from __future__ import annotations

import os
from pathlib import Path

from sampo_engine.errors import CheckpointError, ConfigError, DataError

#: Device names a ``--device`` option accepts (``cuda:1`` too).
DEVICE_KINDS = ("auto", "cuda", "mps", "cpu")


def dataset_folder(path: str | os.PathLike, flag: str = "--data") -> None:
    """A dataset folder (of any supported layout) exists and is a folder."""
    if not str(path).strip():
        raise ConfigError(f"no data: pass {flag} FOLDER")
    path = Path(path)
    if not path.exists():
        raise DataError(f"Dataset folder not found: {path}. Check the path.")
    if not path.is_dir():
        raise DataError(
            f"{path} is a file; point to the dataset folder (the one that holds the images)."
        )


def dataset_folders(spec: str, flag: str = "--data") -> None:
    """Every folder of a ``--data`` value, one path or several separated by commas (pooled)."""
    parts = [p.strip() for p in str(spec).split(",")]
    if len(parts) > 1 and not all(parts):
        raise DataError(f"{flag} {spec!r} has an empty entry; separate folders with single commas")
    for part in parts:
        dataset_folder(part, flag)


def adapter_bundle(path: str | os.PathLike, flag: str = "--adapter") -> None:
    """An adapter bundle folder exists and holds its metadata file (``sampo_bundle.json``)."""
    from sampo_engine.models.bundle import BUNDLE_FILE

    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"adapter folder {path} not found; pass to {flag} the --out folder of a "
            f"`sampo-engine train` run"
        )
    if not path.is_dir() or not (path / BUNDLE_FILE).is_file():
        raise CheckpointError(
            f"{path} is not a SAMPO adapter bundle (no {BUNDLE_FILE}); pass to {flag} the --out "
            f"folder of a `sampo-engine train` run"
        )


def checkpoint_file(path: str | os.PathLike, flag: str = "--checkpoint") -> None:
    """A model checkpoint given by the user exists and is a file."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise CheckpointError(
            f"checkpoint {path} {what}; check {flag} (an official SAM .pth, or the base.pth of a "
            f"--full run)"
        )


def image_file(path: str | os.PathLike) -> None:
    """An input image exists and is a file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"Image file not found: {path}. Check the path (and its spelling).")
    if not path.is_file():
        raise DataError(f"{path} is a folder; pass an image file (PNG, JPEG or TIFF)")


def points_file(path: str | os.PathLike) -> None:
    """A points file exists and is a file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"points file {path} not found; pass --points FILE (CSV or JSON)")


def corrections_folder(path: str | os.PathLike) -> None:
    """A folder of correction records exists."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(
            f"corrections folder {path} not found; pass to --corrections the folder the plugin "
            f"saved the correction records in (it holds index.json)"
        )


def run_folder(out: str | os.PathLike, resume: bool, overwrite: bool) -> None:
    """``--out`` can take a training run (:func:`~sampo_engine.models.bundle.check_out_dir`: the
    same refusals as the run itself, without touching the folder; that module imports no
    torch)."""
    from sampo_engine.models.bundle import check_out_dir

    check_out_dir(out, resume, overwrite)


def device_name(name: str) -> None:
    """A ``--device`` value names a kind of device (whether it is present is checked later)."""
    if str(name or "auto").split(":")[0] not in DEVICE_KINDS:
        raise ConfigError(
            f"--device {name!r} is not a device; use one of {', '.join(DEVICE_KINDS)} (or cuda:N)"
        )


def threads_count(threads: int) -> None:
    if threads < 0:
        raise ConfigError(f"--threads must be ≥ 0 (0 = auto), got {threads}")
