"""The differentiable, batched SAM forward used for training, evaluation and prediction.

``Sam.forward`` runs under ``no_grad`` and decodes one image at a time. Here the image encoder
runs once per image, and the prompt encoder + mask decoder run for all K prompt sets of all B
images in ONE call: SAM's stock decoder repeats one image embedding per prompt row, so
:func:`decode` arranges the B·K rows itself.

Coordinates: points are (x, y) = (column, row) in pixels of the model input frame (S × S), as
SAM expects; napari gives (row, col) — flip before calling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DecoderOutput:
    """Masks for B images × K prompt sets × 3 multimask slots.

    logits: (B, K, 3, S/4, S/4) low-resolution mask logits (upsample with :func:`upsample`).
    iou_pred: (B, K, 3) the IoU head's predicted quality of each slot.
    """

    logits: torch.Tensor
    iou_pred: torch.Tensor


def normalize_images(sam: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) RGB in 0..255 (any float/uint8 dtype) -> normalised float input."""
    images = images.to(sam.pixel_mean.device, torch.float32)
    return (images - sam.pixel_mean) / sam.pixel_std


def encode(sam: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Image embeddings (B, C, S/16, S/16) of (B, 3, S, S) RGB 0..255 images."""
    return sam.image_encoder(normalize_images(sam, images))


def decode(
    sam: nn.Module,
    embeddings: torch.Tensor,
    points: torch.Tensor,
    labels: torch.Tensor,
) -> DecoderOutput:
    """Decode K prompt sets for each of B image embeddings in one batched call.

    Args:
        embeddings: (B, C, h, w) from :func:`encode`.
        points: (B, K, P, 2) float, (x, y) in input pixels.
        labels: (B, K, P) int, 1 positive, 0 negative, -1 padding (ignored point).
    """
    b, k, p, _ = points.shape
    prompt_encoder, decoder = sam.prompt_encoder, sam.mask_decoder
    sparse, dense = prompt_encoder(
        points=(points.reshape(b * k, p, 2), labels.reshape(b * k, p)), boxes=None, masks=None
    )
    image_pe = prompt_encoder.get_dense_pe()  # (1, C, h, w)

    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(b * k, -1, -1)
    tokens = torch.cat((output_tokens, sparse.to(output_tokens.dtype)), dim=1)

    src = torch.repeat_interleave(embeddings, k, dim=0) + dense
    pos_src = image_pe.expand(b * k, -1, -1, -1)
    n, c, h, w = src.shape
    hs, src = decoder.transformer(src, pos_src, tokens)
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1 : 1 + decoder.num_mask_tokens, :]

    src = src.transpose(1, 2).reshape(n, c, h, w)
    upscaled = decoder.output_upscaling(src)
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)],
        dim=1,
    )
    _, cu, hu, wu = upscaled.shape
    masks = (hyper_in @ upscaled.reshape(n, cu, hu * wu)).reshape(n, -1, hu, wu)
    iou_pred = decoder.iou_prediction_head(iou_token_out)
    # slot 0 is SAM's single-mask output; slots 1..3 are the multimask outputs we use
    return DecoderOutput(
        logits=masks[:, 1:].reshape(b, k, 3, hu, wu),
        iou_pred=iou_pred[:, 1:].reshape(b, k, 3),
    )


def upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize (..., h, w) logits to (..., *size)."""
    lead = logits.shape[:-2]
    out = F.interpolate(
        logits.reshape(-1, 1, *logits.shape[-2:]).float(),
        size=size,
        mode="bilinear",
        align_corners=False,
    )
    return out.reshape(*lead, *size)


def select_by_iou_head(
    logits: torch.Tensor, iou_pred: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick, per prompt set, the slot the IoU head rates best (what inference shows the user).

    logits (B, K, 3, H, W), iou_pred (B, K, 3) -> (B, K, H, W) logits, (B, K) slot indices.
    """
    slot = iou_pred.argmax(dim=-1)
    index = slot[..., None, None, None].expand(-1, -1, 1, *logits.shape[-2:])
    return logits.gather(2, index).squeeze(2), slot
