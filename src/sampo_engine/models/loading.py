"""Load a model for inference or evaluation: base SAM (+ optional adapter bundle), frozen.

Checkpoint resolution: an explicit path; else the cached official checkpoint
(``sampo-engine weights download``); else, for ``tiny`` only, random weights. An adapter bundle
brings its own base model type and input size and is checked against what is asked.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from sampo_engine.errors import CheckpointError
from sampo_engine.models.registry import get_spec


@functools.lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime: float) -> str:
    from sampo_engine.models.build import sha256_of

    return sha256_of(path)


def checkpoint_sha256(path: str | os.PathLike | None) -> str | None:
    if not path:
        return None
    st = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime)


def resolve_checkpoint(
    model_type: str, checkpoint: str | os.PathLike | None, allow_random: bool = False
) -> Path | None:
    """The checkpoint file to load for ``model_type`` (None = random weights)."""
    if checkpoint:
        return Path(checkpoint)
    spec = get_spec(model_type)
    if spec.shipped_weights:
        from sampo_engine.models.availability import shipped_weights_dir

        path = shipped_weights_dir() / spec.shipped_weights
        if not path.is_file():
            raise CheckpointError(
                f"the weights packaged with {model_type} ({path}) are missing from this install; "
                f"reinstall napari-sampo, or pass --checkpoint FILE"
            )
        return path
    if not spec.pretrained or allow_random:
        return None
    try:
        from sampo_engine.models.checkpoints import checkpoint_path, find_checkpoint
    except ImportError:  # pragma: no cover - weights module always ships
        found, expected = None, None
    else:
        found, expected = find_checkpoint(model_type), checkpoint_path(model_type)
    if found is None:
        raise CheckpointError(
            f"no {model_type} checkpoint found (looked for {expected}); run "
            f"`sampo-engine weights download {model_type}` or pass --checkpoint FILE"
        )
    return Path(found)


def load_model(
    model_type: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    adapter: str | os.PathLike | None = None,
    image_size: int | None = None,
    device=None,
    allow_random: bool = False,
):
    """A frozen :class:`~sampo_engine.models.lora.AdaptedSam` ready for inference.

    With ``adapter`` (a bundle folder) the model type and input size default to the bundle's;
    asking for different ones is refused with the reason.
    """
    from sampo_engine.models.build import DEFAULT_IMAGE_SIZE, build_sam
    from sampo_engine.models.bundle import check_compatible, read_bundle
    from sampo_engine.models.lora import add_lora, frozen, load_lora_weights

    info = read_bundle(adapter) if adapter else None
    if info is not None:
        model_type = model_type or info.model_type
        check_compatible(info, model_type, image_size)
        image_size = info.image_size
    if model_type is None:
        raise CheckpointError("no model type given; pass --model (e.g. vit_b) or --adapter BUNDLE")
    image_size = image_size or DEFAULT_IMAGE_SIZE
    if info is not None and info.kind == "full":
        sam = build_sam(model_type, info.weights_file, image_size)
        adapted = frozen(sam)
    else:
        if (
            info is not None
            and not checkpoint
            and info.base_checkpoint
            and Path(info.base_checkpoint).is_file()
        ):
            checkpoint = info.base_checkpoint
        ckpt = resolve_checkpoint(model_type, checkpoint, allow_random=allow_random)
        sam = build_sam(model_type, ckpt, image_size)
        if info is not None:
            check_compatible(info, model_type, image_size, checkpoint_sha256(ckpt))
            adapted = add_lora(sam, rank=int(info.rank or 1))
            load_lora_weights(adapted, info.weights_file)
            for p in adapted.sam.parameters():
                p.requires_grad_(False)
            adapted.mode = "lora"
        else:
            adapted = frozen(sam)
    adapted.eval()
    adapted.info = info
    adapted.model_type = model_type
    adapted.image_size = image_size
    if device is not None:
        adapted.to(device)
    return adapted
