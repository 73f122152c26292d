"""What the small networks shipped beside the model (the split head, the type head) share: their
convolution block and their files — fp16 safetensors with a ``kind`` in the header, written
atomically, refused before use when they are not what they claim to be."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sampo_engine.errors import DataError


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """Two 3 × 3 convolutions (same padding, no bias), each with batch norm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def save_half(net: nn.Module, path: str | Path, metadata: dict[str, str]) -> None:
    """Write ``net``'s weights as fp16 safetensors atomically, ``metadata`` (str → str) in the
    header."""
    from safetensors.torch import save_file

    from sampo_engine.utils.atomic import atomic_path

    state = {k: v.detach().cpu().to(torch.float16) if v.is_floating_point() else v.cpu()
             for k, v in net.state_dict().items()}  # fmt: skip
    with atomic_path(Path(path)) as tmp:
        save_file(state, str(tmp), metadata={str(k): str(v) for k, v in metadata.items()})


def read_half(path: str | Path, kind: str, what: str) -> tuple[dict[str, str], dict]:
    """(header metadata, float32 state dict) of a file :func:`save_half` wrote for a ``kind``
    of network (``what``: its name in messages); a missing, unreadable or other file is refused
    with :class:`DataError`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DataError(f"no {what} file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise DataError(f"{path} is not a readable safetensors file ({exc}); re-create it") from exc
    if meta.get("kind") != kind:
        raise DataError(f"{path} is not a {what} (no 'kind: {kind}' in its header)")
    return meta, {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def ship_file(src: str | Path, folder: str | Path, name: str) -> dict:
    """Copy a trained network's file into the package's weights ``folder`` as ``name``
    (atomically, world-readable); returns its card fields: file, sha256, bytes."""
    import hashlib
    import shutil

    dst = Path(folder) / name
    tmp = dst.with_suffix(".tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)
    dst.chmod(0o644)
    return {
        "file": name,
        "sha256": hashlib.sha256(dst.read_bytes()).hexdigest(),
        "bytes": dst.stat().st_size,
    }


def read_card(path: str | Path) -> dict:
    """A model card (JSON)."""
    import json

    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_card(path: str | Path, card: dict) -> None:
    """Write a model card (JSON) atomically."""
    import json

    from sampo_engine.utils.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(card, indent=1) + "\n")


def verified_entry(path: Path, card_path: Path, key: str, what: str, fallback: str) -> dict:
    """The ``key`` entry of the model card at ``card_path`` for the packaged file ``path``,
    after checking the file against the SHA-256 the entry records.

    Raises:
        DataError: the card cannot be read, the file or the entry is missing, or the file does
            not match (damaged or replaced); the message names the remedy and ``fallback`` (the
            option that does without it).
    """
    from sampo_engine.models.build import sha256_of

    remedy = "reinstall napari-sampo (pip install --force-reinstall napari-sampo)"
    try:
        entry = read_card(card_path).get(key) or {}
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read the model card {card_path} ({err}); {remedy}") from None
    if not path.is_file() or not entry.get("sha256"):
        raise DataError(
            f"the {what} {path.name} is missing from {path.parent} or its card; {remedy}, or "
            f"use {fallback}"
        )
    if sha256_of(path) != entry["sha256"]:
        raise DataError(
            f"{path} does not match {card_path.name} (SHA-256 differs): the file is damaged or "
            f"was replaced; {remedy}, or use {fallback}"
        )
    return entry
