"""Which models an evaluation compares: the rows of its report.

A :class:`Method` is the base model without adapter, the classical floor, or one adapter bundle.
:func:`resolve_methods` reads the bundles, checks that they fit one base model and input size and
finds the base weights each row loads; :func:`load_method` builds the model of one row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sampo_engine.errors import CheckpointError


@dataclass
class Method:
    """One row of the report: the base model (adapter None) or an adapter bundle."""

    name: str
    kind: str  # 'base' | 'classical' | 'adapter'
    adapter: str | None = None
    info: object | None = None  # BundleInfo
    checkpoint: str | None = None  # base weights passed to load_model (None: its default)


def resolve_methods(
    config, log: Callable[[str], None]
) -> tuple[list[Method], str, int, str | None]:
    """Read the bundles, check they fit one base model and input size, find the base weights.

    ``config`` is an :class:`~sampo_engine.eval.config.EvalConfig`. Returns the methods in report
    order (base, classical floor, then the adapters), the model type, the input size in px and
    the resolved base checkpoint (None when no row needs one).
    """
    from sampo_engine.models.build import DEFAULT_IMAGE_SIZE
    from sampo_engine.models.bundle import check_compatible, read_bundle

    infos = [read_bundle(a) for a in (config.adapters or [])]
    model_type = config.model or (infos[0].model_type if infos else "vit_b")
    image_size = config.image_size or (infos[0].image_size if infos else DEFAULT_IMAGE_SIZE)
    for info in infos:
        check_compatible(info, model_type, image_size)
    resolved, sha = _base_weights(config, infos, model_type, log)
    per_adapter = _adapter_bases(config, infos, model_type, image_size, resolved, sha)
    methods = []
    if config.base:
        methods.append(
            Method(
                f"{model_type} (no adapter)", "base", checkpoint=str(resolved) if resolved else None
            )
        )
    if config.classical:
        from sampo_engine.eval.classical import NAME

        methods.append(Method(NAME, "classical"))
    taken = {m.name for m in methods}
    for adapter, info, ckpt in zip(config.adapters or [], infos, per_adapter):
        stem = info.name or Path(adapter).name
        name, k = stem, 2
        while name in taken:
            name, k = f"{stem}#{k}", k + 1
        taken.add(name)
        methods.append(Method(name, "adapter", str(adapter), info, ckpt))
    return methods, model_type, image_size, str(resolved) if resolved else None


def _base_weights(config, infos: list, model_type: str, log) -> tuple[object, str | None]:
    """The base checkpoint of the base row (``--checkpoint``, else the first LoRA bundle's own
    base that exists, else the model's default) and its SHA-256; (None, None) when no row needs
    base weights."""
    from sampo_engine.models.loading import checkpoint_sha256, resolve_checkpoint

    checkpoint = config.checkpoint or None
    if checkpoint is None:
        bases = [
            i.base_checkpoint
            for i in infos
            if i.kind == "lora" and i.base_checkpoint and Path(i.base_checkpoint).is_file()
        ]
        if bases:
            checkpoint = bases[0]
            if len(set(bases)) > 1:
                log(f"adapters were trained on different bases; the base row uses {checkpoint}")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise CheckpointError(f"checkpoint {checkpoint} not found; check --checkpoint")
    needs_base = config.base or any(i.kind == "lora" for i in infos)
    resolved = resolve_checkpoint(model_type, checkpoint) if needs_base else None
    sha = checkpoint_sha256(resolved) if resolved else None
    return resolved, sha


def _adapter_bases(
    config, infos: list, model_type: str, image_size: int, resolved, sha: str | None
) -> list[str | None]:
    """Per adapter, the base weights to pass to ``load_model`` (None: the bundle's own base, or
    no base for a full bundle); refuses a LoRA bundle whose base is missing."""
    from sampo_engine.models.bundle import check_compatible

    per_adapter: list[str | None] = []
    for adapter, info in zip(config.adapters or [], infos):
        own = info.base_checkpoint if info.kind == "lora" and info.base_checkpoint else None
        if info.kind != "lora":
            per_adapter.append(None)
        elif config.checkpoint or not own:
            check_compatible(info, model_type, image_size, sha)
            per_adapter.append(str(resolved) if resolved else None)
        elif Path(own).is_file():
            per_adapter.append(None)  # load_model takes the bundle's own base
        elif info.base_sha256 and info.base_sha256 == sha:
            per_adapter.append(str(resolved))
        else:
            raise CheckpointError(
                f"adapter {adapter} was trained on the base {own}, which is missing; pass that "
                f"base with --checkpoint FILE"
            )
    return per_adapter


def load_method(method: Method, model_type: str, image_size: int, device, seed: int):
    """The model of one row, on ``device``: the classical floor, or the base model with the
    row's adapter. The torch seed is set first, so random weights (``tiny`` without a
    checkpoint) are the same for every run with the same ``seed``."""
    from sampo_engine.utils.device import seed_everything

    seed_everything(seed)
    if method.kind == "classical":
        from sampo_engine.eval.classical import ClassicalFloor

        return ClassicalFloor()
    from sampo_engine.models.loading import load_model

    return load_model(model_type, method.checkpoint, method.adapter, image_size, device)
