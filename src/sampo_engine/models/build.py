"""Build a SAM model of any registered architecture at any input size (a multiple of 16).

The official checkpoints are trained at 1024 px. At another input size ``S`` the image encoder's
absolute position embedding (``pos_embed``, shape (1, 64, 64, C)) is resized bicubically to
(1, S/16, S/16, C) and the relative-position tables of the global-attention blocks
(``rel_pos_h``/``rel_pos_w``, shape (2·64−1, head_dim)) linearly to (2·S/16−1, head_dim);
windowed blocks keep theirs. The prompt encoder is built for the S/16 token grid, so its low-res
masks are S/4 px a side.
"""

from __future__ import annotations

import hashlib
import os
import re
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from sampo_engine.errors import CheckpointError, ConfigError
from sampo_engine.models.registry import PATCH_SIZE, SamSpec, architecture_of, get_spec

DEFAULT_IMAGE_SIZE = 224


def check_image_size(image_size: int) -> None:
    if image_size <= 0 or image_size % PATCH_SIZE:
        raise ConfigError(
            f"input size {image_size} is not a positive multiple of {PATCH_SIZE}; "
            f"use e.g. 224 (the paper's), 256 or 1024"
        )


def build_architecture(spec: SamSpec, image_size: int = DEFAULT_IMAGE_SIZE) -> Sam:
    """A randomly initialised SAM of ``spec`` for ``image_size`` px square inputs."""
    check_image_size(image_size)
    grid = image_size // PATCH_SIZE
    encoder = ImageEncoderViT(
        depth=spec.encoder_depth,
        embed_dim=spec.encoder_embed_dim,
        img_size=image_size,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=spec.encoder_num_heads,
        patch_size=PATCH_SIZE,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=spec.global_attn_indexes,
        window_size=spec.window_size,
        out_chans=spec.prompt_embed_dim,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=spec.prompt_embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(image_size, image_size),
        mask_in_chans=16,
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=spec.decoder_depth,
            embedding_dim=spec.prompt_embed_dim,
            mlp_dim=spec.decoder_mlp_dim,
            num_heads=spec.decoder_num_heads,
        ),
        transformer_dim=spec.prompt_embed_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=spec.iou_head_hidden_dim,
    )
    sam = Sam(
        image_encoder=encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=decoder,
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    sam.eval()
    return sam


_GLOBAL_REL_POS = re.compile(r"image_encoder\.blocks\.(\d+)\.attn\.rel_pos_[hw]$")


def adapt_state_dict(state: dict, spec: SamSpec, image_size: int) -> dict:
    """Resize the size-dependent tensors of a SAM state dict to ``image_size``.

    Works from any source size (1024 for official checkpoints, or whatever a saved base model
    was trained at), read off the ``pos_embed`` shape (1, G, G, C).
    """
    grid = image_size // PATCH_SIZE
    state = dict(state)
    pos = state.get("image_encoder.pos_embed")
    if pos is None or pos.ndim != 4:
        raise CheckpointError("the checkpoint has no image_encoder.pos_embed of shape (1, G, G, C)")
    if pos.shape[1] != grid:
        resized = F.interpolate(
            pos.permute(0, 3, 1, 2).float(), size=(grid, grid), mode="bicubic", align_corners=False
        )
        state["image_encoder.pos_embed"] = resized.permute(0, 2, 3, 1).to(pos.dtype)
    for key in list(state):
        match = _GLOBAL_REL_POS.match(key)
        if not match or int(match.group(1)) not in spec.global_attn_indexes:
            continue
        table = state[key]  # (2G' - 1, head_dim)
        length = 2 * grid - 1
        if table.shape[0] != length:
            resized = F.interpolate(
                table.float().T.unsqueeze(0), size=length, mode="linear", align_corners=False
            )
            state[key] = resized[0].T.to(table.dtype)
    return state


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_checkpoint_state(path: str | os.PathLike) -> dict:
    """Read a SAM state dict (official ``.pth``, one saved by ``train --full``, or shipped
    ``.safetensors``) safely; half-precision weights come back as float32."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist; run `sampo-engine weights download MODEL` "
            f"or pass the path of a downloaded SAM checkpoint"
        )
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle error, not a torch file ...
        raise CheckpointError(
            f"cannot read checkpoint {path} ({type(err).__name__}: {err}); the file is corrupt "
            f"or truncated — download it again (`sampo-engine weights download MODEL`)"
        ) from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no SAM state dict (a mapping of names to tensors)")
    return state


def _load_safetensors(path: Path) -> dict:
    """A safetensors state dict, verified against the SHA-256 of its ``.json`` card when it has
    one (a shipped model): a damaged or swapped file is refused before any weight is used."""
    import json

    from safetensors.torch import load_file

    card = path.with_suffix(".json")
    if card.is_file():
        try:
            expected = json.loads(card.read_text(encoding="utf-8")).get("sha256")
        except (OSError, ValueError) as err:
            raise CheckpointError(f"cannot read the model card {card}: {err}") from None
        if expected and sha256_of(path) != expected:
            raise CheckpointError(
                f"{path} does not match its model card (SHA-256 differs): the file is damaged "
                f"or was replaced; reinstall napari-sampo (pip install --force-reinstall "
                f"napari-sampo) to restore it"
            )
    try:
        state = load_file(str(path))
    except Exception as err:  # a truncated header, not a safetensors file ...
        raise CheckpointError(
            f"cannot read weights {path} ({type(err).__name__}: {err}); the file is corrupt"
        ) from None
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def infer_model_type(state: dict) -> str | None:
    """Guess the architecture from a state dict's encoder width and depth."""
    from sampo_engine.models.registry import SPECS

    pos = state.get("image_encoder.pos_embed")
    if pos is None:
        return None
    depth = 1 + max(
        (int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))),
        default=-1,
    )
    for name, spec in SPECS.items():
        if spec.encoder_embed_dim == pos.shape[-1] and spec.encoder_depth == depth:
            return name
    return None


def build_sam(
    model_type: str,
    checkpoint: str | os.PathLike | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
) -> Sam:
    """Build SAM ``model_type`` ('tiny', 'vit_b', 'vit_l', 'vit_h') for ``image_size`` px input.

    With ``checkpoint`` the weights are loaded strictly (after resizing the position tables);
    a checkpoint of another architecture or a damaged file raises :class:`CheckpointError`
    naming the file and what was expected. Without it the weights are random.
    """
    spec = get_spec(model_type)
    check_image_size(image_size)
    sam = build_architecture(spec, image_size)
    if checkpoint is None:
        return sam
    state = load_checkpoint_state(checkpoint)
    found = infer_model_type(state)
    if found is not None and architecture_of(found) == architecture_of(model_type):
        found = model_type  # the same sizes: a trained model of this architecture
    if found != model_type:
        raise CheckpointError(
            f"{checkpoint} holds a {found or 'non-SAM'} checkpoint, but model type "
            f"{model_type!r} was asked for; pass --model {found}"
            if found
            else f"{checkpoint} is not a SAM {model_type} checkpoint (no matching image encoder)"
        )
    state = adapt_state_dict(state, spec, image_size)
    try:
        sam.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{checkpoint} does not match SAM {model_type} at {image_size} px: {err}"
        ) from None
    sam.eval()
    return sam


def save_base_checkpoint(sam: Sam, path: str | os.PathLike) -> None:
    """Save every weight of ``sam`` as a plain state dict (loadable by :func:`build_sam`), atomically."""
    from sampo_engine.utils.atomic import atomic_path

    state = {k: v.detach().cpu().contiguous() for k, v in sam.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
