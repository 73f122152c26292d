"""The SAM architectures we build: the three official ones and a ``tiny`` one for tests/CPU demos.

A plain registry of specs, as segment-anything's ``sam_model_registry`` is, but with the sizes as
data so the builder can make any of them at any input size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

PATCH_SIZE = 16
CHECKPOINT_IMAGE_SIZE = 1024  # the official checkpoints are trained at 1024 px


@dataclass(frozen=True)
class SamSpec:
    """Sizes of one SAM architecture.

    The image encoder is a ViT with ``encoder_depth`` blocks of width ``encoder_embed_dim``;
    blocks listed in ``global_attn_indexes`` attend globally (with relative-position tables sized
    to the token grid), the others within ``window_size`` windows. ``prompt_embed_dim`` is the
    width of the image embedding, the prompt tokens and the mask decoder.
    """

    name: str
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    prompt_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256
    pretrained: bool = True  # weights exist: an official checkpoint, or shipped ones
    #: a weights file packaged with the engine (``sampo_engine/models/weights/<name>``, fp16
    #: safetensors with a ``.json`` card beside it): no download needed
    shipped_weights: str = ""
    #: the architecture whose sizes these are, when the name is another's (e.g. a trained model)
    architecture: str = ""
    #: factor the whole-tile predictor resamples images by before this model sees them
    #: (``PredictConfig.resample`` 0 = this); 1.5 for ``nuclei-small`` (docs/instances.md)
    resample: float = 1.0
    #: a split head packaged beside ``shipped_weights`` (``sampo_engine/models/weights/<name>``,
    #: its SHA-256 and settings in the model's card): the whole-tile predictor cuts touching
    #: nuclei apart with it (docs/split_head.md); "" = the watershed of the probability
    split_head: str = ""


SPECS: dict[str, SamSpec] = {
    "vit_b": SamSpec("vit_b", 768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamSpec("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamSpec("vit_h", 1280, 32, 16, (7, 15, 23, 31)),
    # A few hundred thousand parameters, random init: tests and CPU demos (train it with --full).
    "tiny": SamSpec(
        "tiny",
        encoder_embed_dim=64,
        encoder_depth=4,
        encoder_num_heads=2,
        global_attn_indexes=(1, 3),
        window_size=7,
        prompt_embed_dim=64,
        decoder_depth=2,
        decoder_mlp_dim=128,
        decoder_num_heads=2,
        iou_head_hidden_dim=64,
        pretrained=False,
    ),
    # ~6.2 M parameters: the stand-in for a pretrained SAM that can be trained from scratch on a
    # CPU in under an hour (docs/results.md); no official weights, build it with --full first.
    "small": SamSpec(
        "small",
        encoder_embed_dim=256,
        encoder_depth=6,
        encoder_num_heads=8,
        global_attn_indexes=(2, 5),
        window_size=7,
        prompt_embed_dim=128,
        decoder_depth=2,
        decoder_mlp_dim=1024,
        decoder_num_heads=4,
        iou_head_hidden_dim=128,
        pretrained=False,
    ),
}
# ``small`` trained on real H&E nuclei, T1 and T2 from the first step, shipped inside the package
# (docs/model.md): the model that works offline, without any download.
SPECS["nuclei-small"] = replace(
    SPECS["small"],
    name="nuclei-small",
    pretrained=True,
    shipped_weights="nuclei_small.safetensors",
    architecture="small",
    resample=1.5,
    split_head="nuclei_small_split_head.safetensors",
)

MODEL_TYPES = tuple(SPECS)


def architecture_of(model_type: str) -> str:
    """The architecture ``model_type`` builds (its own name, or the one it was trained as)."""
    spec = SPECS.get(model_type)
    return (spec.architecture or spec.name) if spec is not None else model_type


def get_spec(model_type: str) -> SamSpec:
    from sampo_engine.errors import ConfigError

    try:
        return SPECS[model_type]
    except KeyError:
        raise ConfigError(
            f"unknown model type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}"
        ) from None


def must_train_in_full(name: str) -> bool:
    """True when fine-tuning ``name`` must train every weight (``TrainConfig.full``): the
    architecture has no pretrained weights (``tiny``, ``small``), so LoRA on its random weights
    would learn little. False for the models with weights (the official ``vit_*`` checkpoints, the
    shipped ``nuclei-small``: LoRA on them) and for names that are not in the registry."""
    spec = SPECS.get(name)
    if spec is None:
        return False
    has_weights = getattr(spec, "pretrained", True) or bool(getattr(spec, "shipped_weights", ""))
    return not has_weights
