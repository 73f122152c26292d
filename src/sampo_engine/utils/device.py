"""Device choice: 'auto' means CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import contextlib

import torch

from sampo_engine.errors import ConfigError


def available_devices() -> list[str]:
    """The device names this machine can run on, best first ('cpu' always last)."""
    names = []
    if torch.cuda.is_available():
        names.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names + ["cpu"]


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> the best available; an explicit but unavailable device is refused clearly."""
    available = available_devices()
    if name in ("auto", "", None):
        return torch.device(available[0])
    kind = name.split(":")[0]
    if kind not in available:
        raise ConfigError(
            f"device {name!r} is not available on this machine (available: {', '.join(available)}); "
            f"use --device auto"
        )
    return torch.device(name)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (where it is fast and safe); a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
