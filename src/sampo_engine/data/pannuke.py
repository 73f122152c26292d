"""Reader for PanNuke (Gamper et al. 2019/2020) in its official numpy layout.

Official layout under a root folder::

    Fold 1/images/fold1/images.npy   (N, 256, 256, 3) float64 0..255 (or uint8) RGB
    Fold 1/images/fold1/types.npy    (N,) tissue names, e.g. "Breast"
    Fold 1/masks/fold1/masks.npy     (N, 256, 256, 6): channels 0-4 are per-class instance maps
                                     (Neoplastic, Inflammatory, Connective, Dead, Epithelial),
                                     channel 5 is background
    Fold 2/..., Fold 3/...

Tolerated variants: fold folders named ``Fold 1``, ``fold1``, ``fold_1`` ...; the three files
anywhere up to three levels inside a fold folder; or a root that is itself one flat fold folder
holding ``images.npy`` and ``masks.npy``. ``types.npy`` is optional (tissue is then None).
Arrays are opened with ``np.load(mmap_mode="r")``: a sample is read from disk when indexed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from functools import lru_cache, partial
from pathlib import Path

import numpy as np

from sampo_engine.data.sample import NucleiDataset, NucleiSample
from sampo_engine.errors import DataError
from sampo_engine.utils.imageio import to_rgb_uint8

CLASS_NAMES: dict[int, str] = {
    1: "Neoplastic",
    2: "Inflammatory",
    3: "Connective",
    4: "Dead",
    5: "Epithelial",
}
REQUIRED_FILES = ("images.npy", "masks.npy")
_FOLD_RE = re.compile(r"^fold[\s_-]*(\d+)$", re.IGNORECASE)
_LAYOUT_HELP = (
    "PanNuke's layout is <root>/Fold 1/images/fold1/images.npy, .../images/fold1/types.npy and "
    "<root>/Fold 1/masks/fold1/masks.npy (or one folder holding images.npy and masks.npy)."
)


def find_npy(folder: Path, name: str, max_depth: int = 3) -> Path | None:
    """The shallowest file called ``name`` at most ``max_depth`` levels below ``folder``."""
    for depth in range(max_depth + 1):
        found = sorted(p for p in folder.glob("*/" * depth + name) if p.is_file())
        if found:
            return found[0]
    return None


def find_folds(root: str | os.PathLike) -> dict[int, Path]:
    """Fold number -> fold folder under ``root`` (``Fold 1``, ``fold2`` ...).

    A root without fold sub-folders that holds ``images.npy`` (directly or up to three levels
    down, e.g. a ``Fold 3`` folder itself) is one fold, numbered from its own name (``fold3`` ->
    3) or 1. Returns {} when nothing PanNuke-like is found.
    """
    root = Path(root)
    if not root.is_dir():
        return {}
    folds = {}
    for child in sorted(root.iterdir()):
        match = _FOLD_RE.match(child.name)
        if child.is_dir() and match and find_npy(child, "images.npy") is not None:
            folds.setdefault(int(match[1]), child)
    if not folds and find_npy(root, "images.npy") is not None:
        match = _FOLD_RE.match(root.name)
        folds[int(match[1]) if match else 1] = root
    return folds


@lru_cache(maxsize=16)
def _open_npy(path: str) -> np.ndarray:
    """Memory-map a .npy file once per process (cheap to reopen in DataLoader workers)."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise DataError(
            f"Cannot read {path}: {exc}. It stores Python objects (pickle), which this reader "
            "does not load for safety; re-save it as a plain array (e.g. np.save with a string "
            "or numeric dtype)."
        ) from None
    except OSError as exc:
        raise DataError(f"Cannot read {path}: {exc}. Re-download or re-copy the file.") from None


def _load_types(path: Path, n: int) -> list[str | None]:
    types = _open_npy(str(path))
    if types.shape[:1] != (n,):
        raise DataError(
            f"{path} lists {types.shape[0] if types.ndim else 0} tissue types but images.npy "
            f"holds {n} images. Use the types.npy of the same fold."
        )
    return [str(t) for t in np.asarray(types).reshape(n, -1)[:, 0]]


def _fold_samples(fold: int, folder: Path, label: str) -> list:
    """Lazy loaders (one per image) of one fold; checks files and shapes first."""
    paths = {name: find_npy(folder, name) for name in (*REQUIRED_FILES, "types.npy")}
    missing = [name for name in REQUIRED_FILES if paths[name] is None]
    if missing:
        raise DataError(
            f"PanNuke fold {fold} at {folder} is missing {', '.join(missing)}. {_LAYOUT_HELP}"
        )
    images = _open_npy(str(paths["images.npy"]))
    masks = _open_npy(str(paths["masks.npy"]))
    if images.ndim != 4 or images.shape[-1] not in (3, 4):
        raise DataError(
            f"{paths['images.npy']} has shape {images.shape}; PanNuke images are (N, H, W, 3). "
            "Point to the original images.npy."
        )
    if masks.ndim != 4 or masks.shape[:3] != images.shape[:3] or masks.shape[-1] not in (5, 6):
        raise DataError(
            f"{paths['masks.npy']} has shape {masks.shape} but images are {images.shape}; PanNuke "
            "masks are (N, H, W, 6) with the same N, H, W. Use the masks.npy of the same fold."
        )
    n = images.shape[0]
    tissues = _load_types(paths["types.npy"], n) if paths["types.npy"] else [None] * n
    return [
        partial(
            load_pannuke_sample,
            str(paths["images.npy"]),
            str(paths["masks.npy"]),
            i,
            f"{label}/{i:06d}",
            tissues[i],
        )
        for i in range(n)
    ]


def masks_to_labels(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Combine PanNuke's per-class instance channels into one instance map and a class map.

    Args:
        masks: (H, W, C) with C >= 5; channel k (0..4) holds instance ids of class k + 1;
            channels beyond 4 (background) are ignored. Any numeric dtype.
    Returns:
        inst (H, W) int32 with ids 1..N unique across channels (numbered channel by channel, in
        increasing original id), and cls (H, W) uint8 with class ids 1..5. Where channels
        overlap, the later channel wins.
    """
    h, w = masks.shape[:2]
    inst = np.zeros((h, w), np.int32)
    cls = np.zeros((h, w), np.uint8)
    next_id = 1
    for channel in range(min(5, masks.shape[-1])):
        ids = np.asarray(masks[..., channel])
        if np.issubdtype(ids.dtype, np.floating):
            ids = np.rint(ids)
        ids = ids.astype(np.int64)
        fg = ids > 0
        if not fg.any():
            continue
        old, new = np.unique(ids[fg], return_inverse=True)
        inst[fg] = next_id + new.astype(np.int32)
        cls[fg] = channel + 1
        next_id += old.size
    return inst, cls


def load_pannuke_sample(
    images_path: str, masks_path: str, index: int, name: str, tissue: str | None
) -> NucleiSample:
    """Read sample ``index`` of one fold's memory-mapped arrays as a NucleiSample."""
    image = to_rgb_uint8(np.asarray(_open_npy(images_path)[index]))
    inst, cls = masks_to_labels(np.asarray(_open_npy(masks_path)[index]))
    return NucleiSample(image=image, inst=inst, cls=cls, name=name, tissue=tissue)


def read_pannuke(root: str | os.PathLike, folds: Iterable[int] | None = (1,)) -> NucleiDataset:
    """Open PanNuke folds as one lazy dataset (see the module docstring for layouts).

    Args:
        root: the folder holding ``Fold 1``, ``Fold 2`` ... or one flat fold folder.
        folds: fold numbers to read, in this order; None reads every fold found. PanNuke's
            folds are its official cross-validation splits: train and evaluate on different ones.
    Returns:
        NucleiDataset (format 'pannuke', class_names :data:`CLASS_NAMES`) of samples named
        ``fold<k>/<index:06d>``, tissue from types.npy.
    Raises:
        DataError: no PanNuke layout at ``root``, a requested fold absent, files missing from a
            fold, or arrays of inconsistent shapes.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"PanNuke folder not found: {root}. Check the path.")
    found = find_folds(root)
    if not found:
        raise DataError(f"No PanNuke folds found in {root}. {_LAYOUT_HELP}")
    wanted = sorted(found) if folds is None else [int(f) for f in folds]
    absent = [f for f in wanted if f not in found]
    if absent:
        raise DataError(
            f"PanNuke fold(s) {absent} not found in {root}; found fold(s) {sorted(found)}. "
            "Pick folds that exist (or folds=None for all)."
        )
    samples = []
    for fold in wanted:
        samples.extend(_fold_samples(fold, found[fold], f"fold{fold}"))
    return NucleiDataset(samples, dict(CLASS_NAMES), format="pannuke", root=str(root))
