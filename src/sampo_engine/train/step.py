"""One SAMPO optimisation step: policy forward, reference forward, loss, diagnostics.

Kept apart from the loop so benchmarks and tests can time or drive exactly what training runs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from sampo_engine.losses import LossConfig, LossOutput, sampo_loss
from sampo_engine.models.forward import DecoderOutput, decode, encode, upsample
from sampo_engine.models.lora import AdaptedSam
from sampo_engine.utils.device import autocast


@dataclass
class StepResult:
    loss: LossOutput
    grad_ratio: float  # ‖∂(α·L_pref)/∂Z‖ / ‖∂L_sup/∂Z‖ at the mask logits Z (nan when undefined)
    logits: torch.Tensor  # (B, K, 3, S, S) policy logits (graph attached)


REFERENCE_PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matrix instructions (Intel AMX or AVX512-BF16)."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def reference_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The reference pass's precision: 'auto' = bf16 on CUDA and on CPUs with native bf16."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and (
        device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16())
    ):
        return torch.bfloat16
    return torch.float32


def reference_autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def reference_logits(
    adapted: AdaptedSam, images, points, labels, size, precision: str = "auto"
) -> torch.Tensor:
    """Logits (float32) of the reference (initial) model, under ``inference_mode``.

    The reference only supplies the constant offsets ℓ_ref of the DPO margins (no gradient flows
    through it), so bf16 costs little accuracy; where bf16 is fast it runs on a cached bf16 copy
    of the frozen reference weights (see ``AdaptedSam.reference``).
    """
    dtype = reference_dtype(images.device, precision)
    with (
        torch.inference_mode(),
        adapted.reference(dtype) as ref,
        reference_autocast(images.device, dtype),
    ):
        out = decode(ref, encode(ref, images), points, labels)
        return upsample(out.logits.float(), size)


def forward_loss(
    adapted: AdaptedSam,
    batch: dict,
    config: LossConfig,
    device,
    diagnostics: bool = True,
    policy: torch.nn.Module | None = None,
    reference_precision: str = "auto",
) -> StepResult:
    """Compute the SAMPO loss of one batch (no backward). ``batch`` comes from ``crops.collate``.

    ``policy``: under torchrun, the DDP-wrapped ``encode`` + ``decode`` of ``adapted.sam``
    (:class:`~sampo_engine.train.distributed.PolicyForward`), so ``backward`` syncs gradients.
    """
    images = batch["image"].to(device, non_blocking=True)
    target = batch["target"].to(device, non_blocking=True)
    points = batch["points"].to(device, non_blocking=True)
    labels = batch["labels"].to(device, non_blocking=True)
    size = tuple(target.shape[-2:])
    ref = None
    if config.uses_preference:
        ref = reference_logits(adapted, images, points, labels, size, reference_precision).clone()
    with autocast(device):
        if policy is not None:  # distributed: the same forward, through DDP
            out = DecoderOutput(*policy(images, points, labels))
        else:
            out = decode(adapted.sam, encode(adapted.sam, images), points, labels)
    logits = upsample(out.logits, size)
    loss = sampo_loss(logits, out.iou_pred.float(), ref, target, config)
    ratio = float("nan")
    if diagnostics and config.uses_preference and config.use_sup and loss.pairs_usable:
        (g_pref,) = torch.autograd.grad(
            config.alpha * loss.pref, logits, retain_graph=True, allow_unused=True
        )
        (g_sup,) = torch.autograd.grad(loss.sup, logits, retain_graph=True, allow_unused=True)
        if g_pref is not None and g_sup is not None:
            denom = g_sup.norm().item()
            ratio = g_pref.norm().item() / denom if denom > 0 else float("nan")
    return StepResult(loss, ratio, logits)


def step_metrics(result: StepResult) -> dict[str, float]:
    """Per-step numbers for the log: each loss term, preference accuracy, margin, usable share, IoU."""
    lo = result.loss
    margins = lo.margins
    ious = lo.ious
    return {
        "loss": float(lo.loss.detach()),
        "sup": float(lo.sup.detach()),
        "inter": float(lo.inter.detach()),
        "intra": float(lo.intra.detach()),
        "pref": float(lo.pref.detach()),
        "pref_acc": float((margins > 0).float().mean()) if margins.numel() else float("nan"),
        "margin": float(margins.mean()) if margins.numel() else float("nan"),
        "usable_pairs": lo.pairs_usable / lo.pairs_total if lo.pairs_total else float("nan"),
        "grad_ratio": result.grad_ratio,
        "iou_best": float(ious.max(2).values.mean()),
        "iou_mean": float(ious.mean()),
    }
