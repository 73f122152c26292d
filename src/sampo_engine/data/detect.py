"""Recognise a dataset's on-disk layout and open it with the matching reader.

Supported layouts (see each reader's module docstring):

- ``folder``  — this project's format: ``<id>_image.png`` + ``<id>_inst.tif`` [+ ``_class.tif``,
  ``meta.json``] (:mod:`sampo_engine.data.folder`);
- ``pannuke`` — ``Fold 1/images/fold1/images.npy`` + ``masks.npy`` (:mod:`.pannuke`);
- ``consep``  — ``Train/Images/*.png`` + ``Train/Labels/*.mat`` (:mod:`.consep`);
- ``monuseg`` — ``*.tif`` + ``*.xml`` (Aperio) (:mod:`.monuseg`).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from sampo_engine.data import consep, folder, monuseg, pannuke
from sampo_engine.data.sample import NucleiDataset
from sampo_engine.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

FORMATS = ("folder", "pannuke", "consep", "monuseg")
DISPLAY_NAMES = {
    "folder": "folder",
    "pannuke": "PanNuke",
    "consep": "CoNSeP",
    "monuseg": "MoNuSeg",
    "synthetic": "synthetic",
    "pooled": "pooled",
}
_INST_RE = re.compile(r".+_inst\.tiff?$", re.IGNORECASE)


def _evidence(path: Path) -> dict[str, str]:
    """Format -> what was found for it in ``path`` (only formats with evidence)."""
    found = {}
    n_inst = sum(1 for p in path.iterdir() if p.is_file() and _INST_RE.match(p.name))
    if n_inst:
        found["folder"] = f"{n_inst} <id>_inst.tif file(s)"
    folds = {
        k: f
        for k, f in pannuke.find_folds(path).items()
        if pannuke.find_npy(f, "masks.npy") is not None
    }
    if folds:
        found["pannuke"] = f"PanNuke fold(s) {sorted(folds)} with images.npy and masks.npy"
    splits = consep.find_splits(path)
    if splits:
        found["consep"] = f"CoNSeP split(s) {sorted(splits)} with Images/ and Labels/*.mat"
    elif consep.is_split_folder(path):
        found["consep"] = "Images/ and Labels/*.mat"
    images, xmls = monuseg.find_pairs(path)
    paired = set(images) & set(xmls)
    if paired:
        found["monuseg"] = f"{len(paired)} image(s) with an .xml annotation of the same name"
    return found


def _supported() -> str:
    return (
        "Supported layouts: folder (<id>_image.png + <id>_inst.tif [+ <id>_class.tif, "
        "meta.json]), PanNuke (Fold 1/images/fold1/images.npy + Fold 1/masks/fold1/masks.npy), "
        "CoNSeP (Train|Test/Images/*.png + Labels/*.mat), MoNuSeg (*.tif + *.xml, or "
        "'Tissue Images/' + 'Annotations/')."
    )


def detect_format(path: str | os.PathLike) -> str:
    """Name the layout of the dataset folder ``path``: one of :data:`FORMATS`.

    Raises:
        DataError: ``path`` is missing or not a folder, matches no layout (the message lists a
            few of its entries), or matches more than one (it says what was found for each).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"Dataset folder not found: {path}. Check the path.")
    if not path.is_dir():
        raise DataError(
            f"{path} is a file; point to the dataset folder (the one that holds the images)."
        )
    found = _evidence(path)
    if len(found) == 1:
        return next(iter(found))
    if found:
        what = "; ".join(f"{DISPLAY_NAMES[k]}: {v}" for k, v in found.items())
        raise DataError(
            f"{path} mixes dataset layouts ({what}). Point to a folder holding one dataset, or "
            f"pass the format explicitly (one of {', '.join(FORMATS)})."
        )
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    listing = ", ".join(entries[:8]) + (
        f" ... ({len(entries)} entries)" if len(entries) > 8 else ""
    )
    raise DataError(
        f"No known dataset layout in {path} (it holds: {listing or 'nothing'}). {_supported()}"
    )


def open_dataset(
    path: str | os.PathLike,
    format: str = "auto",
    split: str | None = None,
    folds=None,
) -> NucleiDataset:
    """Open a dataset folder of any supported layout as a lazy :class:`NucleiDataset`.

    Args:
        path: the dataset folder.
        format: 'auto' (detect with :func:`detect_format`) or one of :data:`FORMATS`.
        split: CoNSeP only: 'train' or 'test' (required when the folder holds both).
        folds: PanNuke only: fold numbers to read; None reads every fold found.
    Returns:
        The dataset; ``.format`` names the layout read and ``.root`` the folder. What was
        opened is logged at INFO level as :func:`describe` puts it.
    Raises:
        ConfigError: an unknown ``format``, or ``split``/``folds`` given for a layout without
            them.
        DataError: see :func:`detect_format` and the readers.
    """
    fmt = (format or "auto").lower()
    if fmt not in ("auto", *FORMATS):
        raise ConfigError(f"Unknown dataset format {format!r}; use 'auto' or one of {FORMATS}.")
    if fmt == "auto":
        fmt = detect_format(path)
    if split is not None and fmt != "consep":
        raise ConfigError(
            f"split={split!r} applies to CoNSeP only, but {path} is a {DISPLAY_NAMES[fmt]} "
            "dataset. Drop the split option."
        )
    if folds is not None and fmt != "pannuke":
        raise ConfigError(
            f"folds={folds!r} apply to PanNuke only, but {path} is a {DISPLAY_NAMES[fmt]} "
            "dataset. Drop the folds option."
        )
    if fmt == "folder":
        dataset = folder.read_folder(path)
    elif fmt == "pannuke":
        if isinstance(folds, int):
            folds = (folds,)
        dataset = pannuke.read_pannuke(path, folds=folds)
    elif fmt == "consep":
        dataset = consep.read_consep(path, split=split)
    else:
        dataset = monuseg.read_monuseg(path)
    logger.info(describe(dataset))
    return dataset


def describe(dataset: NucleiDataset) -> str:
    """One line such as ``CoNSeP layout at /data/consep: 14 images, 4 classes``."""
    name = DISPLAY_NAMES.get(dataset.format, dataset.format)
    n = len(dataset)
    k = len(dataset.class_names)
    images = f"{n} image{'s' if n != 1 else ''}"
    classes = f"{k} class{'es' if k != 1 else ''}" if k else "no classes"
    where = f"{name} layout at {dataset.root}" if dataset.root else f"{name} data"
    return f"{where}: {images}, {classes}"
