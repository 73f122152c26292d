"""The adapter folder: where the plugin looks for trained adapters and saves new ones.

``$SAMPO_ADAPTER_DIR`` when set, else ``cache_root() / "adapters"`` (``cache_root()`` is
``$SAMPO_CACHE_DIR`` or the platform's user cache folder + ``sampo``). Every sub-folder holding a
``sampo_bundle.json`` is one adapter (see :mod:`sampo_engine.models.bundle`). No Qt here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sampo_engine.models.bundle import BundleInfo, is_bundle, read_bundle

ADAPTER_DIR_ENV = "SAMPO_ADAPTER_DIR"


def score_text(metrics: dict | None, short: bool = False) -> str:
    """The held-out score of a bundle's (or a run's) final metrics: ``held-out T1 Dice 0.850,
    T2 Dice 0.422`` (``short``: ``T1 Dice 0.85, T2 Dice 0.42``); "" when nothing was held out."""
    metrics = metrics or {}
    parts = []
    for key, name in (("t1_dice", "T1"), ("t2_dice", "T2")):
        value = metrics.get(key)
        if isinstance(value, int | float) and value == value:  # not None, not NaN
            parts.append(f"{name} Dice {value:.2f}" if short else f"{name} Dice {value:.3f}")
    if not parts:
        return ""
    return ", ".join(parts) if short else "held-out " + ", ".join(parts)


def adapter_dir() -> Path:
    """The folder adapters are listed from and saved to (not created here)."""
    explicit = os.environ.get(ADAPTER_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    from sampo_engine.models.checkpoints import cache_root

    return cache_root() / "adapters"


def list_adapters(folder: str | os.PathLike | None = None) -> list[BundleInfo]:
    """Readable adapter bundles directly inside ``folder`` (default :func:`adapter_dir`), by name.

    Folders that are not bundles, and bundles that cannot be read (weights missing, written by a
    newer version), are skipped silently: a half-written training run must not break the list.
    """
    root = Path(folder) if folder is not None else adapter_dir()
    if not root.is_dir():
        return []
    found = []
    for child in sorted(root.iterdir()):
        if child.is_dir() and is_bundle(child):
            try:
                found.append(read_bundle(child))
            except Exception:  # noqa: BLE001 - an unreadable bundle is just not offered
                continue
    return sorted(found, key=lambda info: (info.name.lower(), str(info.path)))


def safe_folder_name(name: str) -> str:
    """A folder name made from an adapter's display name: letters, digits, ``-``, ``_``, ``.``."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip()).strip("._")
    return cleaned or "adapter"


def new_adapter_path(name: str, folder: str | os.PathLike | None = None) -> tuple[Path, str]:
    """A folder for a new adapter called ``name`` that does not exist yet, and its final name.

    Never overwrites: when ``name`` (or its folder) is taken, ``-2``, ``-3`` ... is appended to
    both, so the adapter list stays unambiguous.
    """
    root = Path(folder) if folder is not None else adapter_dir()
    taken = {info.name for info in list_adapters(root)}
    base_name = name.strip() or "adapter"
    candidate, k = base_name, 1
    while True:
        path = root / safe_folder_name(candidate)
        if candidate not in taken and not path.exists():
            return path, candidate
        k += 1
        candidate = f"{base_name}-{k}"
