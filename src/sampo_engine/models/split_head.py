"""The nucleus split head: a small full-resolution convolutional network that reads the image
and the segmentation model's foreground probability and draws, for every pixel, how far it
lies inside its nucleus — the map the whole-tile predictor cuts touching nuclei apart with
(:func:`~sampo_engine.predict.instances.split_by_distance`).

Why: SAM's decoder gives logits at 1/4 of its input, so on whole images touching nuclei share
logit cells and their masks merge or take the wrong shape (docs/instances.md: CoNSeP nuclei
are found — centroid F1 68 — but most overlap their true nucleus at IoU < 0.5). The split head is
the high-resolution path of HQ-SAM's kind reduced to its job: it sees the pixels (the pale gap
between two nuclei) at full resolution and the model's answer (which nuclei the clicks asked
for), and answers with

- channel 0: a refined foreground logit (the nucleus mask at full resolution), and
- channel 1: the normalised distance to the nucleus border — 0 at the border and outside,
  1 at the centre of every nucleus, whatever its size (the target of HoVer-Net's and
  StarDist's kind that a watershed splits best).

Architecture: a U-Net of ``depth`` levels below the full resolution (the shipped head: 2, widths
``width``, 2·``width``, 4·``width``; 3 × 3 convolutions, batch norm, ReLU; ~0.1 M parameters at
width 16, receptive field ≈ 60 px at the image's resolution; depth 3 adds 8·``width`` at 1/8:
0.49 M parameters, ≈ 130 px, measured no better in docs/split_head.md). Inputs are
(B, 4, H, W): RGB scaled to [-0.5, 0.5] and the probability in [0, 1] (``inputs="image"``: RGB
only, (B, 3, H, W)); H and W any size (padded to a multiple of 2^depth inside).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sampo_engine.errors import DataError
from sampo_engine.models.small_nets import conv_block, read_half, save_half

#: what a head reads: the image and the model's probability (R, G, B, p), or the image alone
#: (R, G, B; the ablation that says whether the model's answer matters)
INPUTS = {"image+prob": 4, "image": 3}
#: output channels: foreground logit, normalised distance logit
OUT_CHANNELS = 2
#: levels below the full resolution a head may have
DEPTHS = (2, 3)


class SplitHead(nn.Module):
    """(B, C, H, W) image (+ probability) → (B, 2, H, W) logits (foreground, distance);
    C = 4 for ``inputs="image+prob"``, 3 for ``"image"``. ``depth`` levels below the full
    resolution (2: the shipped head; 3 reaches twice as far, ≈ 130 px)."""

    def __init__(self, width: int = 16, inputs: str = "image+prob", depth: int = 2):
        super().__init__()
        if width < 4:
            raise DataError(f"split head width must be at least 4, got {width}")
        if inputs not in INPUTS:
            raise DataError(f"split head inputs must be one of {', '.join(INPUTS)}, not {inputs!r}")
        if depth not in DEPTHS:
            raise DataError(f"split head depth must be one of {DEPTHS}, got {depth}")
        self.width, self.inputs, self.depth = int(width), inputs, int(depth)
        w = self.width
        # enc0 … enc{depth-1}, mid, dec{depth-1} … dec0: the names of the 2-level head's files
        cin = INPUTS[inputs]
        for level in range(depth):
            setattr(self, f"enc{level}", conv_block(cin, w * 2**level))
            cin = w * 2**level
        self.mid = conv_block(cin, w * 2**depth)
        for level in reversed(range(depth)):
            setattr(
                self, f"dec{level}", conv_block(w * 2 ** (level + 1) + w * 2**level, w * 2**level)
            )
        self.out = nn.Conv2d(w, OUT_CHANNELS, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        step = 2**self.depth
        ph, pw = (-h) % step, (-w) % step
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        skips = []
        for level in range(self.depth):
            x = getattr(self, f"enc{level}")(x if level == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = self.mid(F.max_pool2d(x, 2))
        for level in reversed(range(self.depth)):
            up = F.interpolate(x, scale_factor=2.0)
            x = getattr(self, f"dec{level}")(torch.cat([up, skips[level]], 1))
        return self.out(x)[..., :h, :w]


def head_input(rgb: np.ndarray, prob: np.ndarray, inputs: str = "image+prob") -> torch.Tensor:
    """(1, C, H, W) float32 input of one image: ``rgb`` (H, W, 3) uint8 indexed [row, col]
    and ``prob`` (H, W) float in [0, 1] on the same pixels (left out for ``inputs="image"``)."""
    rgb = np.asarray(rgb)
    prob = np.asarray(prob, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[:2] != prob.shape:
        raise DataError(
            f"the split head needs an (H, W, 3) image and an (H, W) probability of the same "
            f"size, got {rgb.shape} and {prob.shape}"
        )
    x = np.empty((INPUTS[inputs], *prob.shape), dtype=np.float32)
    x[:3] = np.moveaxis(rgb, 2, 0).astype(np.float32) / 255.0 - 0.5
    if inputs == "image+prob":
        x[3] = np.clip(prob, 0.0, 1.0)
    return torch.from_numpy(x)[None]


#: windows of this side (px) are run one at a time on large images, with HALO px of context
#: (for a head of depth 2; ``halo(head)`` grows with the depth, as the receptive field does)
WINDOW = 512
HALO = 32


def halo(head: SplitHead) -> int:
    """Context (px) each window gets on every side: the head's reach (32 at depth 2)."""
    return HALO * 2 ** (head.depth - 2)


#: flip averaging (``flips=True``): the input flipped along rows, columns and both
FLIPS = ((), (2,), (3,), (2, 3))


def _forward(head: SplitHead, x: torch.Tensor, flips: bool) -> torch.Tensor:
    """sigmoid(head(x)), (1, 2, h, w); with ``flips`` the mean over :data:`FLIPS` (each output
    flipped back)."""
    if not flips:
        return torch.sigmoid(head(x))
    outs = [torch.sigmoid(head(torch.flip(x, f) if f else x)) for f in FLIPS]
    return torch.stack([torch.flip(o, f) if f else o for o, f in zip(outs, FLIPS)]).mean(0)


@torch.no_grad()
def predict_split_maps(
    head: SplitHead, rgb: np.ndarray, prob: np.ndarray, device: str = "cpu", flips: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The head's (H, W) float32 foreground probability and (H, W) float32 normalised distance
    of one image (``rgb`` (H, W, 3) uint8, ``prob`` (H, W) in [0, 1], [row, col]).

    Images larger than ``WINDOW`` px are run in windows with ``HALO`` px of overlap on each
    side (the receptive field's reach), each window's input built on its own, so memory stays
    bounded on whole tiles. ``flips``: average the head over the image and its three flips
    (4× the time; measured in docs/split_head.md, not the predictor's default)."""
    head.eval()
    rgb, prob = np.asarray(rgb), np.asarray(prob)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[:2] != prob.shape:
        raise DataError(
            f"the split head needs an (H, W, 3) image and an (H, W) probability of the same "
            f"size, got {rgb.shape} and {prob.shape}"
        )
    h, w = prob.shape
    reach = halo(head)
    fg = np.empty((h, w), dtype=np.float32)
    dist = np.empty((h, w), dtype=np.float32)
    for r in range(0, h, WINDOW):
        for c in range(0, w, WINDOW):
            r0, c0 = max(0, r - reach), max(0, c - reach)
            r1, c1 = min(h, r + WINDOW + reach), min(w, c + WINDOW + reach)
            x = head_input(rgb[r0:r1, c0:c1], prob[r0:r1, c0:c1], head.inputs)  # one window
            out = _forward(head, x.to(device), flips).cpu().numpy()[0]
            rr, cc = (
                slice(r - r0, r - r0 + min(WINDOW, h - r)),
                slice(c - c0, c - c0 + min(WINDOW, w - c)),
            )
            fg[r : r + WINDOW, c : c + WINDOW] = out[0][rr, cc]
            dist[r : r + WINDOW, c : c + WINDOW] = out[1][rr, cc]
    return fg, dist


def save_split_head(head: SplitHead, path: str | Path, metadata: dict | None = None) -> None:
    """Write the head's weights (fp16 safetensors) atomically; ``metadata`` (str → str) is
    stored in the file's header beside the width."""
    meta = {"width": str(head.width), "inputs": head.inputs, "depth": str(head.depth),
            "kind": "sampo-split-head"}  # fmt: skip
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    save_half(head, path, meta)


def split_head_metadata(path: str | Path) -> dict[str, str]:
    """The header metadata of a head file (width, inputs, and what :func:`save_split_head` was
    given: the chosen core level, the recipe …)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_split_head(path: str | Path, device: str = "cpu") -> SplitHead:
    """The head stored at ``path`` by :func:`save_split_head`; a file that is not one (or is
    damaged) is refused before any weight is used."""
    meta, state = read_half(path, "sampo-split-head", "split head")
    head = SplitHead(
        int(meta.get("width", 16)), meta.get("inputs", "image+prob"), int(meta.get("depth", 2))
    )
    try:
        head.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(f"{path} does not match the split head's layers: {exc}") from exc
    return head.to(device).eval()


def shipped_split_head(model_type: str, device: str = "cpu") -> tuple[SplitHead, dict] | None:
    """The split head packaged for registry model ``model_type`` and its settings (the
    ``split_head`` entry of the model's card: ``core_level``, ``min_size``, ``threshold`` …),
    or None when the model declares none. The file is checked against the SHA-256 in the card
    before any weight is used.

    Raises:
        DataError: the model declares a head but the file or its card entry is missing, or the
            file does not match the card (damaged or replaced).
    """
    from sampo_engine.models.availability import shipped_weights_dir
    from sampo_engine.models.registry import SPECS
    from sampo_engine.models.small_nets import verified_entry

    spec = SPECS.get(model_type)
    if spec is None or not spec.split_head:
        return None
    folder = shipped_weights_dir()
    path = folder / spec.split_head
    card_path = (folder / spec.shipped_weights).with_suffix(".json")
    entry = verified_entry(
        path, card_path, "split_head", f"{model_type} split head", "--split-by watershed"
    )
    return load_split_head(path, device), entry
