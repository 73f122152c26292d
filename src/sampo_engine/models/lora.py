"""LoRA adapters on SAM with peft, and the frozen reference model for DPO.

Adapters go on the Linear layers of the image-encoder blocks (``attn.qkv``, ``attn.proj``,
``mlp.lin1``, ``mlp.lin2``) and of the mask decoder (two-way transformer attention projections and
MLPs, hypernetwork MLPs, IoU head). The patterns are explicit regular expressions: the bare name
``proj`` would also match the patch-embedding Conv2d ``image_encoder.patch_embed.proj``.

Everything outside the adapters is frozen and LoRA's B matrices start at zero, so the network with
its adapters disabled (peft ``disable_adapter()``) *is* the initial model: the DPO reference costs
no second copy in memory. ``--full`` training (for models without pretrained weights) trains every
parameter instead and keeps a frozen copy of the starting weights as the reference.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn

ENCODER_TARGETS = r"image_encoder\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.lin[12])"
DECODER_TARGETS = (
    r"mask_decoder\.("
    r"transformer\.layers\.\d+\.(self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"
    r"\.(q_proj|k_proj|v_proj|out_proj)"
    r"|transformer\.layers\.\d+\.mlp\.lin[12]"
    r"|transformer\.final_attn_token_to_image\.(q_proj|k_proj|v_proj|out_proj)"
    r"|output_hypernetworks_mlps\.\d+\.layers\.\d+"
    r"|iou_prediction_head\.layers\.\d+)"
)
LORA_TARGETS = f"({ENCODER_TARGETS}|{DECODER_TARGETS})"


def lora_target_names(sam: nn.Module) -> list[str]:
    """Names of the modules LoRA wraps (all of them ``nn.Linear``)."""
    import re

    pattern = re.compile(LORA_TARGETS)
    return [
        name
        for name, module in sam.named_modules()
        if pattern.fullmatch(name) and isinstance(module, nn.Linear)
    ]


class AdaptedSam:
    """A SAM being trained, with a way to run its DPO reference.

    Attributes:
        sam: the ``segment_anything`` ``Sam`` module whose layers carry the adapters (in place);
            call the forward helpers of :mod:`sampo_engine.models.forward` on it.
        mode: 'lora' (adapters only), 'full' (every weight trains) or 'frozen' (inference only).
        peft_model: the peft wrapper in 'lora' mode (for saving, loading, disabling), else None.
    """

    def __init__(self, sam: nn.Module, mode: str, peft_model=None, reference_copy=None):
        self.sam = sam
        self.mode = mode
        self.peft_model = peft_model
        self._reference_copy = reference_copy
        self._reference_lowp: nn.Module | None = None

    @contextlib.contextmanager
    def reference(self, dtype: torch.dtype | None = None) -> Iterator[nn.Module]:
        """Yield the reference network (the initial model) to run under ``no_grad``.

        With ``dtype`` (e.g. ``torch.bfloat16``) it yields a cached copy of the reference
        weights in that precision: the reference is frozen, so the copy stays exact (up to the
        rounding) for the whole run, and the per-step cost of casting weights disappears. It is
        built on first use (vit_b: 180 MB in bf16).
        """
        if dtype is not None and dtype != torch.float32:
            yield self._low_precision_reference(dtype)
            return
        if self.mode == "lora":
            with self.peft_model.disable_adapter():
                yield self.sam
        elif self.mode == "full":
            yield self._reference_copy
        else:
            yield self.sam

    def _low_precision_reference(self, dtype: torch.dtype) -> nn.Module:
        current = self._reference_lowp
        if current is None or next(current.parameters()).dtype != dtype:
            if self.mode == "lora":
                base = copy.deepcopy(self.sam)
                _strip_lora(base)
            else:
                base = copy.deepcopy(self._reference_copy if self.mode == "full" else self.sam)
            base = base.to(dtype=dtype, device=self.sam.pixel_mean.device).eval()
            for p in base.parameters():
                p.requires_grad_(False)
            # keep the pixel normalisation in float32 (inputs are normalised before the cast)
            base.pixel_mean = base.pixel_mean.float()
            base.pixel_std = base.pixel_std.float()
            self._reference_lowp = current = base
        return current

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.sam.parameters() if p.requires_grad]

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def train(self, mode: bool = True) -> AdaptedSam:
        self.sam.train(mode)
        return self

    def eval(self) -> AdaptedSam:
        return self.train(False)

    def to(self, device) -> AdaptedSam:
        self.sam.to(device)
        if self._reference_copy is not None:
            self._reference_copy.to(device)
        if self._reference_lowp is not None:
            self._reference_lowp.to(device)
        return self


def _strip_lora(module: nn.Module) -> None:
    """Replace every peft LoRA layer inside ``module`` by its base layer, in place."""
    from peft.tuners.lora import LoraLayer

    for name, child in list(module.named_children()):
        if isinstance(child, LoraLayer):
            setattr(module, name, child.get_base_layer())
        else:
            _strip_lora(child)


def _lora_config(rank: int, alpha: float | None, dropout: float):
    from peft import LoraConfig

    return LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else rank,
        lora_dropout=dropout,
        target_modules=LORA_TARGETS,
        bias="none",
        init_lora_weights=True,  # B = 0: the adapted model starts as the base model
    )


def add_lora(
    sam: nn.Module, rank: int = 64, alpha: float | None = None, dropout: float = 0.0
) -> AdaptedSam:
    """Wrap the target Linear layers of ``sam`` with rank-``rank`` LoRA; freeze everything else."""
    from peft import get_peft_model

    for p in sam.parameters():
        p.requires_grad_(False)
    peft_model = get_peft_model(sam, _lora_config(rank, alpha, dropout))
    inner = peft_model.base_model.model
    return AdaptedSam(inner, "lora", peft_model=peft_model)


def full_finetune(sam: nn.Module) -> AdaptedSam:
    """Train every parameter; the reference is a frozen copy of the starting weights."""
    reference = copy.deepcopy(sam).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    for p in sam.parameters():
        p.requires_grad_(True)
    return AdaptedSam(sam, "full", reference_copy=reference)


def frozen(sam: nn.Module) -> AdaptedSam:
    for p in sam.parameters():
        p.requires_grad_(False)
    return AdaptedSam(sam.eval(), "frozen")


def lora_state_dict(adapted: AdaptedSam) -> dict[str, torch.Tensor]:
    """The adapter weights only (peft naming), on the CPU."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(adapted.peft_model)
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def load_lora_state_dict(adapted: AdaptedSam, state: dict[str, torch.Tensor]) -> None:
    """Load adapter weights saved by :func:`lora_state_dict`; every key must be used."""
    from peft import set_peft_model_state_dict

    from sampo_engine.errors import CheckpointError

    result = set_peft_model_state_dict(adapted.peft_model, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise CheckpointError(
            f"the adapter holds {len(unexpected)} weights this model has no place for "
            f"(e.g. {unexpected[0]}); it was trained for another base model or rank"
        )


# ------------------------------------------------------------------ the adapter on disk
def trainable_state(adapted: AdaptedSam) -> dict[str, torch.Tensor]:
    """What a run trains, on the CPU: the LoRA weights (peft naming), or every weight of a
    fully fine-tuned model."""
    if adapted.mode == "lora":
        return lora_state_dict(adapted)
    return {k: v.detach().cpu() for k, v in adapted.sam.state_dict().items()}


def load_trainable_state(adapted: AdaptedSam, state: dict[str, torch.Tensor]) -> None:
    """Put a :func:`trainable_state` back (resuming a run)."""
    if adapted.mode == "lora":
        load_lora_state_dict(adapted, state)
    else:
        adapted.sam.load_state_dict(state)


def save_lora_weights(adapted: AdaptedSam, folder) -> None:
    """Write the LoRA weights (safetensors) and peft's adapter config into ``folder``, each
    atomically (a reader never sees half a file)."""
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    from sampo_engine.models.bundle import LORA_CONFIG_FILE, LORA_WEIGHTS_FILE
    from sampo_engine.utils.atomic import atomic_path, write_text_atomic

    folder = Path(folder)
    with atomic_path(folder / LORA_WEIGHTS_FILE) as tmp:
        save_file(lora_state_dict(adapted), str(tmp), metadata={"format": "pt"})
    peft_config = adapted.peft_model.peft_config["default"].to_dict()
    write_text_atomic(folder / LORA_CONFIG_FILE, json.dumps(peft_config, indent=2, default=str))


def load_lora_weights(adapted: AdaptedSam, weights_file) -> None:
    """Load the LoRA weights written by :func:`save_lora_weights` into ``adapted``'s LoRA
    layers (every key must find its place)."""
    from safetensors.torch import load_file

    load_lora_state_dict(adapted, load_file(str(weights_file)))
