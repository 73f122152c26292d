"""The nucleus type head: a small convolutional network that looks at a patch around one nucleus
and says what kind of nucleus it is, in the vocabulary of every class-labelled set it was trained
on — the "per-nucleus class / embedding head trained on the point sets" of docs/type_head.md.

Why: exemplar T2 (docs/exemplars.md) fits a classifier on 3 + 3 clicked nuclei. With hand-made
descriptors (size, shape, stain) and the segmentation encoder's features that classifier picks the
clicked type at 53–59 % precision on the point sets: those features were never asked to tell
types apart. The type head was: trained on 40,000 nuclei with an expert's class (BRCA-M2C,
CRCHistoPhenotypes, CoNSeP, PanNuke), it gives each nucleus

- ``embedding``: (E,) features in which nuclei of one type lie together, and
- one probability vector per training vocabulary (``heads``: dataset → class names), e.g.
  ``brca_m2c_points``: lymphocyte / tumor / stromal.

Exemplar T2 adds the log-probabilities as descriptor columns; the few-shot classifier then
learns from the clicks which of them mean "the clicked type" — clicks on a type the head never
saw still work through the other descriptors.

Input: (B, 3, P, P) RGB patches scaled to [-0.5, 0.5], P = :data:`PATCH` px at
:data:`TYPE_UM_PER_PX` µm/px (20×; the point sets' own scale, 40× images are halved), centred on
the nucleus. Architecture: three stages of two 3 × 3 convolutions (widths w, 2w, 4w; batch norm,
ReLU; 2 × 2 max pooling between), global average pooling, a linear layer to E, one linear layer
per vocabulary. ~0.1 M parameters at w = 16.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from sampo_engine.errors import DataError
from sampo_engine.models.small_nets import conv_block, read_half, save_half

#: pixel size of the patches the head reads (µm/px; 20×)
TYPE_UM_PER_PX = 0.5
#: patch side in px at that scale (20 µm: the nucleus and its immediate neighbours)
PATCH = 40
#: the header "kind" of a type head file
KIND = "sampo-type-head"
#: the vocabulary every training set maps into (docs/type_head.md): the general nucleus types
#: that the sets' own classes share (BRCA-M2C lymphocyte, CRCHistoPhenotypes and CoNSeP
#: inflammatory → inflammatory; tumour, epithelial, PanNuke neoplastic → epithelial; stromal,
#: fibroblast, spindle-shaped → stromal; CRCHistoPhenotypes' others, CoNSeP's other → other)
GENERAL = "general"
GENERAL_TYPES = ("inflammatory", "epithelial", "stromal", "other")


class NucleusTypeNet(nn.Module):
    """(B, 3, P, P) patches → ((B, E) embedding, {vocabulary: (B, K) logits}).

    Args:
        heads: vocabulary name → its class names (at least one vocabulary, ≥ 2 classes each).
        width: channels of the first stage (then 2×, 4×).
        embed: embedding size E.
    """

    def __init__(self, heads: dict[str, tuple[str, ...]], width: int = 16, embed: int = 32):
        super().__init__()
        if not heads or any(len(names) < 2 for names in heads.values()):
            raise DataError("a type head needs at least one vocabulary of two or more classes")
        self.heads = {str(k): tuple(str(n) for n in v) for k, v in heads.items()}
        self.width, self.embed = int(width), int(embed)
        w = self.width
        self.features = nn.Sequential(
            conv_block(3, w),
            nn.MaxPool2d(2),
            conv_block(w, 2 * w),
            nn.MaxPool2d(2),
            conv_block(2 * w, 4 * w),
        )
        self.project = nn.Linear(4 * w, self.embed)
        self.classify = nn.ModuleDict(
            {_key(name): nn.Linear(self.embed, len(names)) for name, names in self.heads.items()}
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h = self.features(x).mean(dim=(2, 3))
        emb = self.project(h)
        act = torch.relu(emb)
        return emb, {name: self.classify[_key(name)](act) for name in self.heads}

    def column_names(self) -> tuple[str, ...]:
        """Names of the log-probability columns :func:`type_columns` returns, in order."""
        return tuple(f"type_{d}_{c}" for d, names in self.heads.items() for c in names)


def _key(name: str) -> str:
    """A ModuleDict key for a vocabulary name (no dots)."""
    return name.replace(".", "_")


def patch_tensor(patches: np.ndarray) -> torch.Tensor:
    """(N, P, P, 3) uint8 patches → (N, 3, P, P) float32 in [-0.5, 0.5]."""
    x = torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 3, 1, 2).float()
    return x / 255.0 - 0.5


def rescale_rgb(rgb: np.ndarray, factor: float) -> np.ndarray:
    """(H, W, 3) uint8 image resampled by ``factor`` (bilinear, anti-aliased when shrinking)."""
    if abs(factor - 1.0) < 1e-6:
        return rgb
    from skimage.transform import rescale

    out = rescale(
        rgb, factor, order=1, channel_axis=2, anti_aliasing=factor < 1, preserve_range=True
    )
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def nucleus_patches(
    rgb: np.ndarray, centroids: np.ndarray, um_per_px: float, patch: int = PATCH
) -> np.ndarray:
    """(N, P, P, 3) uint8 patches of ``rgb`` centred on each nucleus, at :data:`TYPE_UM_PER_PX`.

    Args:
        rgb: (H, W, 3) uint8 image whose pixels are ``um_per_px`` µm wide.
        centroids: (N, 2) float (row, col) pixel positions in ``rgb`` (pixel centres at integers).
        um_per_px: the image's pixel size; the image is resampled by ``um_per_px / 0.5`` first.
        patch: side P of the patches (px at 0.5 µm/px). Borders are mirrored.
    """
    if um_per_px <= 0:
        raise DataError(f"um_per_px must be > 0, got {um_per_px}")
    centroids = np.asarray(centroids, np.float64).reshape(-1, 2)
    factor = um_per_px / TYPE_UM_PER_PX
    small = rescale_rgb(np.asarray(rgb), factor)
    # pixel centre i of the image lies at (i + 0.5) * factor - 0.5 in the resampled one
    centre = np.round((centroids + 0.5) * factor - 0.5).astype(np.int64)
    centre[:, 0] = np.clip(centre[:, 0], 0, small.shape[0] - 1)
    centre[:, 1] = np.clip(centre[:, 1], 0, small.shape[1] - 1)
    half = patch // 2
    padded = np.pad(small, ((half, half), (half, half), (0, 0)), mode="reflect")
    offsets = np.arange(patch) - half
    rows = centre[:, :1] + half + offsets[None]  # (N, P)
    cols = centre[:, 1:] + half + offsets[None]
    return padded[rows[:, :, None], cols[:, None, :]]


@torch.no_grad()
def type_columns(
    net: NucleusTypeNet,
    rgb: np.ndarray,
    centroids: np.ndarray,
    um_per_px: float,
    batch: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """What the head says of each nucleus of an image.

    Args:
        rgb: (H, W, 3) uint8; centroids (N, 2) (row, col) in it; um_per_px its pixel size.

    Returns:
        (N, K) float32 log-probabilities, one block per vocabulary (names:
        :meth:`NucleusTypeNet.column_names`), and the (N, E) float32 embeddings.
    """
    net.eval()
    patches = nucleus_patches(rgb, centroids, um_per_px)
    device = next(net.parameters()).device
    logps, embs = [], []
    for start in range(0, len(patches), batch):
        x = patch_tensor(patches[start : start + batch]).to(device)
        emb, logits = net(x)
        logps.append(torch.cat([torch.log_softmax(v, 1) for v in logits.values()], 1).cpu())
        embs.append(emb.cpu())
    k = len(net.column_names())
    if not logps:
        return np.zeros((0, k), np.float32), np.zeros((0, net.embed), np.float32)
    return torch.cat(logps).numpy(), torch.cat(embs).numpy()


def save_type_head(net: NucleusTypeNet, path: str | Path, metadata: dict | None = None) -> None:
    """Write the head (fp16 safetensors) atomically, its vocabularies and sizes in the header."""
    import json

    meta = {
        "kind": KIND,
        "width": str(net.width),
        "embed": str(net.embed),
        "heads": json.dumps(net.heads),
        "patch": str(PATCH),
        "um_per_px": str(TYPE_UM_PER_PX),
    }
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    save_half(net, path, meta)


def load_type_head(path: str | Path, device: str = "cpu") -> NucleusTypeNet:
    """The head stored at ``path`` by :func:`save_type_head`; a file that is not one, is damaged
    or does not fit the layers is refused before any weight is used."""
    import json

    meta, state = read_half(path, KIND, "nucleus type head")
    if int(meta.get("patch", PATCH)) != PATCH or float(meta.get("um_per_px", 0.5)) != 0.5:
        raise DataError(f"{path} was made for other patches than this version reads; re-create it")
    try:
        heads = {k: tuple(v) for k, v in json.loads(meta["heads"]).items()}
        net = NucleusTypeNet(heads, int(meta.get("width", 16)), int(meta.get("embed", 32)))
        net.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise DataError(f"{path} does not match the type head's layers: {exc}") from exc
    return net.to(device).eval()


#: the packaged type head and the card that vouches for it (``type_head`` entry)
SHIPPED_FILE = "nuclei_small_type_head.safetensors"
CARD = "nuclei_small.json"


def shipped_type_head(device: str = "cpu") -> NucleusTypeNet | None:
    """The type head packaged with napari-sampo, or None when the package ships none (its card,
    ``nuclei_small.json``, has no ``type_head`` entry). It reads pixels only, so it serves every
    segmentation model. The file is checked against the SHA-256 in the card before use.

    Raises:
        DataError: declared but missing, or not matching its card (damaged or replaced).
    """
    from sampo_engine.models.availability import shipped_weights_dir
    from sampo_engine.models.small_nets import read_card, verified_entry

    folder = shipped_weights_dir()
    card_path = folder / CARD
    try:
        declared = bool(read_card(card_path).get("type_head"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read the model card {card_path} ({err})") from None
    if not declared:
        return None
    path = folder / SHIPPED_FILE
    verified_entry(path, card_path, "type_head", "type head", "--type-head off")
    return load_type_head(path, device)


def resolve_type_head(setting: str, device: str = "cpu") -> tuple[NucleusTypeNet | None, list[str]]:
    """The type head a predictor uses (``PredictConfig.type_head``) and what the user should know.

    ``auto``: the packaged head, or none (a damaged one → none, with a message naming it);
    ``off``: none; otherwise a file path, loaded or refused (:class:`DataError`).
    """
    if setting == "off":
        return None, []
    if setting == "auto":
        try:
            return shipped_type_head(device), []
        except DataError as err:
            return None, [f"type head unusable, nuclei told apart without it: {err}"]
    return load_type_head(setting, device), []
