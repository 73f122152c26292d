"""Reader for CoNSeP (Graham et al., HoVer-Net, MedIA 2019) in its released layout.

Layout: a root holding ``Train/`` and ``Test/`` (any letter case), each with ``Images/*.png``
(RGBA or RGB, 1000 x 1000) and ``Labels/*.mat``; or one such split folder itself. Each .mat
holds ``inst_map`` (H, W instance ids) and ``type_map`` (H, W type ids 0..7), read with
:func:`scipy.io.loadmat`.

CoNSeP's seven types are merged into four as HoVer-Net does (:data:`MERGE_7_TO_4`): 1 other
(miscellaneous), 2 inflammatory, 3 epithelial (healthy + dysplastic/malignant), 4 spindle-shaped
(fibroblast, muscle, endothelial). ``merge_types=False`` keeps the seven.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np

from sampo_engine.data.folder import natural_key
from sampo_engine.data.sample import NucleiDataset, NucleiSample
from sampo_engine.errors import ConfigError, DataError
from sampo_engine.utils.imageio import read_image

CLASS_NAMES: dict[int, str] = {1: "other", 2: "inflammatory", 3: "epithelial", 4: "spindle-shaped"}
CLASS_NAMES_7: dict[int, str] = {
    1: "other",
    2: "inflammatory",
    3: "healthy epithelial",
    4: "dysplastic/malignant epithelial",
    5: "fibroblast",
    6: "muscle",
    7: "endothelial",
}
#: Lookup table: original type id (index) -> merged class id.
MERGE_7_TO_4 = np.array([0, 1, 2, 3, 3, 4, 4, 4], np.uint8)
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
_LAYOUT_HELP = (
    "CoNSeP's layout is <root>/Train/Images/*.png + <root>/Train/Labels/*.mat (and Test/), or "
    "one split folder with Images/ and Labels/."
)


def _child(folder: Path, name: str) -> Path | None:
    """The sub-folder of ``folder`` called ``name`` in any letter case, or None."""
    if not folder.is_dir():
        return None
    for child in sorted(folder.iterdir()):
        if child.is_dir() and child.name.lower() == name.lower():
            return child
    return None


def is_split_folder(folder: Path) -> bool:
    """True when ``folder`` holds ``Images/`` and ``Labels/`` with at least one .mat file."""
    labels = _child(folder, "Labels")
    return (
        _child(folder, "Images") is not None
        and labels is not None
        and any(p.suffix.lower() == ".mat" for p in labels.iterdir())
    )


def find_splits(root: str | os.PathLike) -> dict[str, Path]:
    """Split name ('train', 'test') -> split folder under ``root``; {} when none."""
    root = Path(root)
    splits = {}
    for name in ("train", "test"):
        child = _child(root, name)
        if child is not None and is_split_folder(child):
            splits[name] = child
    return splits


def load_mat_labels(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Read ``inst_map`` (int32) and ``type_map`` (uint8, or None when absent) from a .mat file.

    Raises:
        DataError: unreadable file, no ``inst_map``, or maps that are not 2-D of one size.
    """
    from scipy.io import loadmat

    path = Path(path)
    try:
        mat = loadmat(path)
    except Exception as exc:  # scipy raises ValueError, MatReadError, OSError ...
        raise DataError(
            f"Cannot read label file {path}: {exc}. Re-download it (CoNSeP .mat files are "
            "MATLAB v5 files)."
        ) from None
    if "inst_map" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(
            f"{path} has no 'inst_map' (it holds: {', '.join(keys) or 'nothing'}). CoNSeP "
            "label files hold 'inst_map' and 'type_map'."
        )
    inst = np.asarray(mat["inst_map"])
    types = np.asarray(mat["type_map"]) if "type_map" in mat else None
    if inst.ndim != 2 or (types is not None and types.shape != inst.shape):
        raise DataError(
            f"{path}: inst_map {inst.shape} and type_map "
            f"{None if types is None else types.shape} must be 2-D maps of one size."
        )
    inst = np.rint(inst).astype(np.int32) if inst.dtype.kind == "f" else inst.astype(np.int32)
    if types is not None:
        types = np.rint(types).astype(np.int64) if types.dtype.kind == "f" else types
        if types.min(initial=0) < 0 or types.max(initial=0) > 7:
            raise DataError(
                f"{path}: type_map holds ids outside 0..7 ({types.min()}..{types.max()}); "
                "this is not a CoNSeP label file."
            )
        types = types.astype(np.uint8)
    return inst, types


def load_consep_sample(
    image_path: str, label_path: str, name: str, merge_types: bool = True
) -> NucleiSample:
    """Read one CoNSeP image + .mat pair; types merged 7 -> 4 unless ``merge_types`` is False."""
    image = read_image(image_path)
    inst, types = load_mat_labels(label_path)
    if inst.shape != image.shape[:2]:
        raise DataError(
            f"CoNSeP image {name!r}: image is {image.shape[0]}x{image.shape[1]} but its labels "
            f"are {inst.shape[0]}x{inst.shape[1]}. Pair each image with its own .mat file."
        )
    cls = None
    if types is not None:
        cls = MERGE_7_TO_4[types] if merge_types else types
        cls = np.where(inst > 0, cls, 0).astype(np.uint8)
    return NucleiSample(image=image, inst=inst, cls=cls, name=name)


def _split_samples(folder: Path, prefix: str, merge_types: bool) -> list:
    images_dir, labels_dir = _child(folder, "Images"), _child(folder, "Labels")
    if images_dir is None or labels_dir is None:
        raise DataError(f"{folder} has no Images/ and Labels/ folders. {_LAYOUT_HELP}")
    images = {
        p.stem: p
        for p in images_dir.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    }
    labels = {p.stem: p for p in labels_dir.iterdir() if p.suffix.lower() == ".mat"}
    if not images:
        raise DataError(f"No images (.png) in {images_dir}. {_LAYOUT_HELP}")
    missing = sorted(set(images) - set(labels), key=natural_key)
    if missing:
        raise DataError(
            f"{len(missing)} CoNSeP image(s) in {images_dir} have no .mat in {labels_dir}: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}. Add the label files "
            "or remove those images."
        )
    return [
        partial(
            load_consep_sample,
            str(images[stem]),
            str(labels[stem]),
            f"{prefix}{stem}",
            merge_types,
        )
        for stem in sorted(images, key=natural_key)
    ]


def read_consep(
    root: str | os.PathLike, split: str | None = None, merge_types: bool = True
) -> NucleiDataset:
    """Open CoNSeP as a lazy dataset.

    Args:
        root: a folder with ``Train/`` and/or ``Test/``, or one split folder (``Images/`` +
            ``Labels/``).
        split: 'train' or 'test' (any case); required when ``root`` holds both, optional
            when it holds one, ignored when ``root`` is itself a split folder.
        merge_types: merge the 7 types to HoVer-Net's 4 (default) or keep 7.
    Returns:
        NucleiDataset (format 'consep') of samples named ``<split>/<stem>`` (or ``<stem>``
        for a split folder), class_names :data:`CLASS_NAMES` (or :data:`CLASS_NAMES_7`).
    Raises:
        ConfigError: ``split`` missing while both splits exist, or not 'train'/'test'.
        DataError: no CoNSeP layout, a requested split absent, images without labels.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"CoNSeP folder not found: {root}. Check the path.")
    if split is not None and split.lower() not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test' for CoNSeP, got {split!r}.")
    splits = find_splits(root)
    if splits:
        if split is None:
            if len(splits) > 1:
                raise ConfigError(
                    f"{root} holds CoNSeP splits {sorted(splits)}: choose one with "
                    "split='train' or split='test' (--split on the command line)."
                )
            split = next(iter(splits))
        if split.lower() not in splits:
            raise DataError(
                f"CoNSeP split {split!r} not found in {root}; found {sorted(splits)}. "
                "Pick an existing split."
            )
        folder, prefix = splits[split.lower()], f"{split.lower()}/"
    elif is_split_folder(root):
        folder, prefix = root, ""
    else:
        raise DataError(f"No CoNSeP layout in {root}. {_LAYOUT_HELP}")
    samples = _split_samples(folder, prefix, merge_types)
    names = dict(CLASS_NAMES if merge_types else CLASS_NAMES_7)
    return NucleiDataset(samples, names, format="consep", root=str(root))
