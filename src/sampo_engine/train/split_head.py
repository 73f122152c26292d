"""Training of the nucleus split head (:mod:`sampo_engine.models.split_head`).

Data: whole training images, each with the segmentation model's cached whole-image foreground
probability and its true nuclei (``.npz`` files with ``prob`` (H, W) and ``inst`` (H, W), as
the instance study writes them: :func:`~sampo_engine.experiments.instance_split_sweep.
probability_maps`), and the image itself. Targets per pixel: foreground (``inst > 0``) and the
normalised distance to the nucleus border (:func:`normalised_distance`).

Steps draw random ``crop`` × ``crop`` px windows (flips and quarter turns), batch ``batch_size``;
loss = BCE + soft Dice on the foreground + BCE on the distance (soft targets), AdamW, cosine
learning rate. Deterministic for a seed on one thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from sampo_engine.errors import ConfigError, DataError
from sampo_engine.models.split_head import DEPTHS, INPUTS, SplitHead, head_input
from sampo_engine.train.schedule import cosine_adamw, take_step


@dataclass(frozen=True)
class SplitHeadConfig:
    """How the split head is trained (sizes in px of the images as given)."""

    steps: int = 1500
    batch_size: int = 8
    crop: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    width: int = 16
    #: levels below the full resolution (2: the shipped head; 3: twice the reach)
    depth: int = 2
    #: what the head reads: "image+prob" (the image and the model's probability) or "image"
    inputs: str = "image+prob"
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "width"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"split head {name} must be at least 1, got {getattr(self, name)}"
                )
        if self.depth not in DEPTHS:
            raise ConfigError(f"split head depth must be one of {DEPTHS}, got {self.depth}")
        step = 2**self.depth
        if self.crop < 4 * step or self.crop % step:
            raise ConfigError(
                f"split head crop must be a multiple of {step} and ≥ {4 * step} at depth "
                f"{self.depth}, got {self.crop}"
            )
        if self.inputs not in INPUTS:
            raise ConfigError(
                f"split head inputs must be one of {', '.join(INPUTS)}, not {self.inputs!r}"
            )
        if not self.lr > 0:
            raise ConfigError(f"split head lr must be > 0, got {self.lr}")


def normalised_distance(inst: np.ndarray) -> np.ndarray:
    """(H, W) float32: for every pixel of a nucleus of the (H, W) int label map ``inst``, its
    Euclidean distance to the nucleus' border divided by the nucleus' largest such distance
    (1 at the centre, → 0 at the border); 0 on the background."""
    out = np.zeros(inst.shape, dtype=np.float32)
    for label, box in enumerate(ndi.find_objects(inst), start=1):
        if box is None:
            continue
        padded = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in box)
        mask = inst[padded] == label
        d = ndi.distance_transform_edt(mask)
        top = d.max()
        if top > 0:
            out[padded][mask] = (d[mask] / top).astype(np.float32)
    return out


@dataclass
class SplitExample:
    """One training image: (4, H, W) input and (2, H, W) targets (foreground, distance)."""

    x: torch.Tensor
    y: torch.Tensor
    name: str


def load_examples(
    pairs: Sequence[tuple[Path, Path]], inputs: str = "image+prob"
) -> list[SplitExample]:
    """Examples from (cached map ``.npz``, image file) pairs, with the input channels a head of
    ``inputs`` reads."""
    from sampo_engine.utils.imageio import read_image

    examples = []
    for npz, image in pairs:
        with np.load(npz) as data:
            prob, inst = data["prob"].astype(np.float32), data["inst"].astype(np.int32)
        rgb = read_image(image)
        if rgb.shape[:2] != prob.shape:
            raise DataError(f"{image} is {rgb.shape[:2]} px but its map {npz} is {prob.shape}")
        y = np.stack([(inst > 0).astype(np.float32), normalised_distance(inst)])
        x = head_input(rgb, prob, inputs)[0]
        examples.append(SplitExample(x, torch.from_numpy(y), npz.stem))
    return examples


def _batch(examples: Sequence[SplitExample], cfg: SplitHeadConfig, rng: np.random.Generator):
    xs, ys = [], []
    for _ in range(cfg.batch_size):
        ex = examples[int(rng.integers(len(examples)))]
        h, w = ex.x.shape[-2:]
        c = min(cfg.crop, h, w) // 2**cfg.depth * 2**cfg.depth
        r0, c0 = int(rng.integers(h - c + 1)), int(rng.integers(w - c + 1))
        x, y = ex.x[:, r0 : r0 + c, c0 : c0 + c], ex.y[:, r0 : r0 + c, c0 : c0 + c]
        k = int(rng.integers(4))
        x, y = torch.rot90(x, k, (1, 2)), torch.rot90(y, k, (1, 2))
        if rng.random() < 0.5:
            x, y = x.flip(2), y.flip(2)
        if c < cfg.crop:  # a small image: pad to the batch's size (background)
            pad = (0, cfg.crop - c, 0, cfg.crop - c)
            x, y = F.pad(x, pad), F.pad(y, pad)
        xs.append(x)
        ys.append(y)
    return torch.stack(xs), torch.stack(ys)


def split_head_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice on channel 0 (foreground), BCE on channel 1 (normalised distance)."""
    fg_logit, dist_logit = logits[:, 0], logits[:, 1]
    fg, dist = target[:, 0], target[:, 1]
    bce = F.binary_cross_entropy_with_logits(fg_logit, fg)
    p = torch.sigmoid(fg_logit)
    dice = 1 - (2 * (p * fg).sum() + 1) / (p.sum() + fg.sum() + 1)
    return bce + dice + F.binary_cross_entropy_with_logits(dist_logit, dist)


def train_split_head(
    examples: Sequence[SplitExample],
    cfg: SplitHeadConfig,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[SplitHead, dict]:
    """Train a head on ``examples``; ``progress(step, loss)`` after every step. Returns the head
    (eval mode) and a log {"losses": [...], "seconds": ...}."""
    if not examples:
        raise DataError("no training images for the split head")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    head = SplitHead(cfg.width, cfg.inputs, cfg.depth)
    if examples[0].x.shape[0] != INPUTS[cfg.inputs]:
        raise DataError(
            f"the examples have {examples[0].x.shape[0]} input channels; a head of inputs "
            f"{cfg.inputs!r} reads {INPUTS[cfg.inputs]}: load them with inputs={cfg.inputs!r}"
        )
    opt, sched = cosine_adamw(head.parameters(), cfg.lr, cfg.weight_decay, cfg.steps)
    losses = []
    start = time.perf_counter()
    head.train()
    for step in range(cfg.steps):
        x, y = _batch(examples, cfg, rng)
        losses.append(take_step(opt, sched, split_head_loss(head(x), y)))
        if progress is not None:
            progress(step + 1, losses[-1])
    head.eval()
    return head, {"losses": losses, "seconds": time.perf_counter() - start}
