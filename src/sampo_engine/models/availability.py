"""Which models can run here, now: shipped, downloaded, to download, random, or missing a base.

The napari docks list every model of the registry (:data:`~sampo_engine.models.registry.SPECS`)
with its state and pick :func:`default_model` — a model that works on this machine as it is — so
that nothing that cannot work (an official checkpoint that was never downloaded, offline) is ever
a default. States:

``shipped``
    the spec names weights packaged with napari-sampo (``spec.shipped_weights``, a file name under
    ``sampo_engine/models/weights/``) and the file is installed. Usable.
``cached``
    an official Segment Anything checkpoint (:data:`sampo_engine.models.checkpoints.CHECKPOINTS`) that is in
    the per-user cache, complete. Usable.
``not downloaded``
    an official checkpoint that is not in the cache. Not usable until downloaded
    (:func:`sampo_engine.models.checkpoints.download_checkpoint`).
``random weights``
    no weights exist for the architecture (``tiny``, ``small``): it runs from a random
    initialisation — demos and tests, or a model to train from scratch (every weight:
    :func:`~sampo_engine.models.registry.must_train_in_full`). Usable.
``needs a base``
    the spec promises weights that are not here (packaged weights missing from this install, or a
    pretrained architecture without a download); it needs a base checkpoint file. Not usable.

Imports only the standard library (the registry and the checkpoint table are plain data), so a
GUI can call it when it builds its forms.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

from sampo_engine.models.registry import SPECS

SHIPPED = "shipped"
CACHED = "cached"
NOT_DOWNLOADED = "not downloaded"
RANDOM = "random weights"
NEEDS_BASE = "needs a base"
STATES = (SHIPPED, CACHED, NOT_DOWNLOADED, RANDOM, NEEDS_BASE)

#: Official checkpoints in order of preference for the default (smallest and fastest first).
OFFICIAL_PREFERENCE = ("vit_b", "vit_l", "vit_h")
#: The last-resort default: runs anywhere, from random weights.
FALLBACK = "tiny"


@dataclass(frozen=True)
class ModelState:
    """One registry model on this machine.

    Attributes:
        name: the registry name (``vit_b``, ``tiny``, ...).
        state: one of :data:`STATES`.
        usable: True when it can be built here now without any download or extra file.
        label: short text for a combo box, e.g. ``"vit_b — not downloaded (375 MB)"``.
        size: bytes of its weights file (official or shipped), None for random weights.
        detail: a longer explanation (for a tooltip).
        path: the weights file when present (the cached official checkpoint or the shipped file).
        downloadable: True when :func:`sampo_engine.models.checkpoints.download_checkpoint` can fetch it.
    """

    name: str
    state: str
    usable: bool
    label: str
    size: int | None = None
    detail: str = ""
    path: Path | None = None
    downloadable: bool = False


def format_size(size: int | None) -> str:
    """``375 MB``, ``1.2 GB`` (decimal units, as ``sampo-engine weights list``)."""
    if size is None:
        return ""
    if size >= 1e9:
        return f"{size / 1e9:.1f} GB"
    if size >= 1e6:
        return f"{size / 1e6:.0f} MB"
    return f"{max(1, round(size / 1e3))} kB"


def shipped_weights_dir() -> Path:
    """The folder of the weights packaged with the engine (``sampo_engine/models/weights``)."""
    return Path(str(importlib.resources.files("sampo_engine.models") / "weights"))


def shipped_weights_name(name: str) -> str:
    """The file name of ``name``'s packaged weights ("" when the spec declares none)."""
    spec = SPECS.get(name)
    return str(getattr(spec, "shipped_weights", "") or "") if spec is not None else ""


def shipped_weights_path(name: str) -> Path | None:
    """The installed packaged weights file of ``name``, or None (none declared, or missing)."""
    filename = shipped_weights_name(name)
    if not filename:
        return None
    path = shipped_weights_dir() / filename
    try:
        return path if path.is_file() else None
    except OSError:
        return None


def model_state(name: str) -> ModelState:
    """The :class:`ModelState` of registry model ``name`` (KeyError for an unknown name)."""
    from sampo_engine.models.checkpoints import CHECKPOINTS, checkpoint_dir, find_checkpoint

    spec = SPECS[name]
    declared = shipped_weights_name(name)
    if declared:
        path = shipped_weights_path(name)
        if path is not None:
            size = _file_size(path)
            return ModelState(
                name,
                SHIPPED,
                True,
                f"{name} — shipped",
                size,
                f"weights packaged with napari-sampo ({path.name}, {format_size(size)})",
                path,
            )
    if name in CHECKPOINTS:
        info = CHECKPOINTS[name]
        found = find_checkpoint(name)
        if found is not None:
            return ModelState(
                name,
                CACHED,
                True,
                f"{name} — downloaded",
                info.size,
                f"official Segment Anything checkpoint {info.filename} ({format_size(info.size)})"
                f", in {found.parent}",
                found,
            )
        return ModelState(
            name,
            NOT_DOWNLOADED,
            False,
            f"{name} — not downloaded ({format_size(info.size)})",
            info.size,
            f"official Segment Anything checkpoint {info.filename} ({format_size(info.size)}); "
            f"not in {checkpoint_dir()} yet: download it once (it is then cached)",
            downloadable=True,
        )
    if declared:
        return ModelState(
            name,
            NEEDS_BASE,
            False,
            f"{name} — weights missing",
            None,
            f"its packaged weights {declared} are not in {shipped_weights_dir()}: reinstall "
            f"napari-sampo, or train it from a base checkpoint",
        )
    if not spec.pretrained:
        return ModelState(
            name,
            RANDOM,
            True,
            f"{name} — random weights",
            None,
            f"no pretrained weights exist for {name}: it starts from a random initialisation "
            f"(demos and tests; fine-tuning trains every weight)",
        )
    return ModelState(
        name,
        NEEDS_BASE,
        False,
        f"{name} — needs a base checkpoint",
        None,
        f"{name} has no download and no packaged weights: it needs a base checkpoint file",
    )


def model_states() -> list[ModelState]:
    """The state of every registry model, in registry order."""
    return [model_state(name) for name in SPECS]


def default_model(states: list[ModelState] | None = None) -> str:
    """The first usable model by preference: a shipped model, then a downloaded official vit_b,
    vit_l, vit_h, then ``tiny`` (random weights, the last resort)."""
    states = states if states is not None else model_states()
    by_name = {s.name: s for s in states}
    for s in states:
        if s.state == SHIPPED:
            return s.name
    for name in OFFICIAL_PREFERENCE:
        s = by_name.get(name)
        if s is not None and s.state == CACHED:
            return name
    for s in states:  # any other downloaded official model a test or a fork registered
        if s.state == CACHED:
            return s.name
    return FALLBACK


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None
