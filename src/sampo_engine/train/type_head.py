"""Training of the nucleus type head (:mod:`sampo_engine.models.type_head`).

Examples: one patch per labelled nucleus, with the vocabulary (dataset) and class it carries —

- point sets (``brca_m2c_points``, ``crchisto_points``; 20×): the patch centred on each dot of a
  class (the training split's images only);
- instance sets with classes (CoNSeP, PanNuke-2; 40×): the patch centred on each nucleus'
  centroid, its class the class its pixels carry.

Every patch is cut at :data:`~sampo_engine.models.type_head.TYPE_UM_PER_PX`, so 40× images are
halved first. Each example is labelled in two vocabularies: its own set's classes, and the
general types (:data:`~sampo_engine.models.type_head.GENERAL_TYPES`) its class maps to
(``TypeSource.general``; a class without a general type — PanNuke's "non-neoplastic" mixes
several — is labelled in its own vocabulary only). Loss: the cross-entropy of each example in
every vocabulary it is labelled in, summed, averaged over the batch. Batches draw examples uniformly; each batch turns by a random quarter
turn and flip, and each patch's colour is jittered (channel gains ×0.9–1.1, offset ±0.04) so that
the head does not learn one lab's stain. AdamW, cosine learning rate. Deterministic for a seed on
one thread.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sampo_engine.errors import ConfigError, DataError
from sampo_engine.models.type_head import (
    GENERAL,
    GENERAL_TYPES,
    NucleusTypeNet,
    nucleus_patches,
    patch_tensor,
)
from sampo_engine.train.schedule import cosine_adamw, take_step


@dataclass(frozen=True)
class TypeHeadConfig:
    """How the type head is trained."""

    epochs: float = 12.0
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    width: int = 16
    embed: int = 32
    seed: int = 0

    def __post_init__(self):
        problems = []
        if not self.epochs > 0:
            problems.append(f"epochs must be > 0 (got {self.epochs})")
        if self.batch_size < 2:
            problems.append(f"batch_size must be ≥ 2 (got {self.batch_size})")
        if not self.lr > 0:
            problems.append(f"lr must be > 0 (got {self.lr})")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be ≥ 0 (got {self.weight_decay})")
        if self.width < 4 or self.embed < 2:
            problems.append(f"width ≥ 4 and embed ≥ 2 (got {self.width}, {self.embed})")
        if problems:
            raise ConfigError("type head config: " + "; ".join(problems))


@dataclass
class TypeSource:
    """One labelled dataset: ``kind`` 'points' (a point set folder: dots of the ``splits``)
    or 'instances' (a dataset folder with ``_inst.tif`` and ``_class.tif``), its pixel size, and
    the general type of each of its class ids (``general``; classes left out have none)."""

    name: str
    folder: Path
    kind: str
    um_per_px: float
    splits: tuple[str, ...] = ("train",)
    general: dict[int, str] = field(default_factory=dict)


@dataclass
class TypeExamples:
    """Patches and what they are.

    Attributes:
        patches: (N, P, P, 3) uint8 at 0.5 µm/px, centred on the nucleus.
        labels: (N, V) int class index (0-based) of each example in each vocabulary of
            ``heads`` (in its order), -1 where it is not labelled in that vocabulary.
        heads: vocabulary → class names.
        images: (N,) the image each came from (``dataset/id``).
    """

    patches: np.ndarray
    labels: np.ndarray
    heads: dict[str, tuple[str, ...]]
    images: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, dict[str, int]]:
        """Examples per vocabulary and class."""
        out = {}
        for v, (name, names) in enumerate(self.heads.items()):
            col = self.labels[:, v]
            if (col >= 0).any():
                out[name] = {c: int((col == i).sum()) for i, c in enumerate(names)}
        return out


def instance_classes(inst: np.ndarray, cls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """((N, 2) (row, col) centroids, (N,) class id) of every nucleus of an instance map whose
    pixels carry a class (the most frequent class under it; nuclei of class 0 are dropped)."""
    from sampo_engine.nuclei.descriptors import label_moments

    inst = np.asarray(inst).astype(np.int64)
    area, rows, cols, *_ = label_moments(inst)
    top = len(area)
    k = int(cls.max()) + 1 if cls.size else 1
    pairs = np.bincount(inst.ravel() * k + cls.ravel().astype(np.int64), minlength=top * k)
    votes = pairs.reshape(top, k)
    votes[:, 0] = 0
    ids = np.flatnonzero((area > 0) & (votes.sum(1) > 0))
    ids = ids[ids > 0]
    return np.stack([rows[ids], cols[ids]], 1), votes[ids].argmax(1)


def _class_names(meta: dict) -> dict[int, str]:
    return {int(k): str(v) for k, v in (meta.get("classes") or {}).items() if int(k) > 0}


def load_type_examples(
    sources: Sequence[TypeSource],
    max_images: int = 0,
    progress: Callable[[str], None] | None = None,
) -> TypeExamples:
    """Patches of every labelled nucleus of ``sources`` (``max_images`` > 0: the first so many
    images of each); ``progress(image)`` after each image."""
    import json

    import tifffile
    from skimage.io import imread

    from sampo_engine.data.points import point_set_images, read_class_points

    patches, own, general, owner, images = [], [], [], [], []
    heads: dict[str, tuple[str, ...]] = {}
    for v, src in enumerate(sources):
        folder = Path(src.folder)
        if src.kind == "points":
            ids, meta = point_set_images(folder, src.splits)
        elif src.kind == "instances":
            try:
                meta = json.loads((folder / "meta.json").read_text())
            except (OSError, ValueError) as err:
                raise DataError(f"{folder}: no readable meta.json ({err})") from None
            ids = sorted(p.name[: -len("_inst.tif")] for p in folder.glob("*_inst.tif"))
        else:
            raise ConfigError(f"type source kind must be 'points' or 'instances', not {src.kind!r}")
        names = _class_names(meta)
        if len(names) < 2:
            raise DataError(f"{folder}: meta.json names fewer than two classes")
        if src.name == GENERAL:
            raise ConfigError(f"{GENERAL!r} names the general types; call the source otherwise")
        unknown = set(src.general.values()) - set(GENERAL_TYPES)
        if unknown:
            raise ConfigError(f"general types are {', '.join(GENERAL_TYPES)}, not {unknown}")
        order = sorted(names)
        heads[src.name] = tuple(names[c] for c in order)
        index = {c: i for i, c in enumerate(order)}
        to_general = {c: GENERAL_TYPES.index(t) for c, t in src.general.items()}
        for image_id in ids[:max_images] if max_images else ids:
            rgb = imread(folder / f"{image_id}_image.png")[..., :3]
            if src.kind == "points":
                xy, cls = read_class_points(folder / f"{image_id}_points.csv")
                keep = np.isin(cls, order)
                centroids, cls = xy[keep][:, ::-1], cls[keep]
            else:
                inst = tifffile.imread(folder / f"{image_id}_inst.tif")
                cls_map = tifffile.imread(folder / f"{image_id}_class.tif")
                centroids, cls = instance_classes(inst, cls_map)
                keep = np.isin(cls, order)
                centroids, cls = centroids[keep], cls[keep]
            if len(cls):
                patches.append(nucleus_patches(rgb, centroids, src.um_per_px))
                owner.append(np.full(len(cls), v, np.int64))
                own.append(np.array([index[int(c)] for c in cls], np.int64))
                general.append(np.array([to_general.get(int(c), -1) for c in cls], np.int64))
                images += [f"{src.name}/{image_id}"] * len(cls)
            if progress is not None:
                progress(f"{src.name}/{image_id}")
    if not patches:
        raise DataError("no labelled nuclei found for the type head")
    owner, own, general = np.concatenate(owner), np.concatenate(own), np.concatenate(general)
    labels = np.full((len(own), len(heads) + 1), -1, np.int64)
    labels[np.arange(len(own)), owner] = own
    labels[:, -1] = general
    heads[GENERAL] = GENERAL_TYPES
    return TypeExamples(np.concatenate(patches), labels, heads, images)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random quarter turn and flip of the batch, and colour jitter per patch."""
    k = int(torch.randint(4, (1,), generator=gen))
    x = torch.rot90(x, k, (2, 3))
    if torch.rand(1, generator=gen).item() < 0.5:
        x = x.flip(3)
    b = x.shape[0]
    gain = 0.9 + 0.2 * torch.rand(b, 3, 1, 1, generator=gen)
    offset = 0.08 * torch.rand(b, 3, 1, 1, generator=gen) - 0.04
    return ((x + 0.5) * gain - 0.5 + offset).clamp(-0.5, 0.5)


def type_head_loss(logits: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each example in every vocabulary it is labelled in (``labels`` (B, V),
    -1 = not labelled there), summed per example, averaged over the batch."""
    total = logits[next(iter(logits))].new_zeros(())
    for v, out in enumerate(logits.values()):
        sel = labels[:, v] >= 0
        if sel.any():
            total = total + F.cross_entropy(out[sel], labels[sel, v], reduction="sum")
    return total / max(len(labels), 1)


def train_type_head(
    examples: TypeExamples,
    cfg: TypeHeadConfig,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[NucleusTypeNet, dict]:
    """Train a head on ``examples``; ``progress(step, steps, loss)`` after every step. Returns
    the head (eval mode) and a log {"losses": [...], "seconds": ..., "steps": ...}."""
    n = len(examples)
    if n < cfg.batch_size:
        raise DataError(f"{n} labelled nuclei are fewer than one batch ({cfg.batch_size})")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    net = NucleusTypeNet(examples.heads, cfg.width, cfg.embed)
    steps = max(1, int(math.ceil(cfg.epochs * n / cfg.batch_size)))
    opt, sched = cosine_adamw(net.parameters(), cfg.lr, cfg.weight_decay, steps)
    labels = torch.from_numpy(examples.labels)
    losses = []
    start = time.perf_counter()
    net.train()
    order = torch.randperm(n, generator=gen)
    pos = 0
    for step in range(steps):
        if pos + cfg.batch_size > n:
            order, pos = torch.randperm(n, generator=gen), 0
        pick = order[pos : pos + cfg.batch_size]
        pos += cfg.batch_size
        x = _augment(patch_tensor(examples.patches[pick.numpy()]), gen)
        emb, logits = net(x)
        losses.append(take_step(opt, sched, type_head_loss(logits, labels[pick])))
        if progress is not None:
            progress(step + 1, steps, losses[-1])
    net.eval()
    return net, {"losses": losses, "seconds": time.perf_counter() - start, "steps": steps}


@torch.no_grad()
def type_accuracy(net: NucleusTypeNet, examples: TypeExamples) -> dict[str, dict[str, float]]:
    """Per vocabulary: the share of its examples whose most likely class (in its own
    vocabulary) is right, overall and per class (recall), and the balanced accuracy."""
    net.eval()
    if set(examples.heads) - set(net.heads):
        raise DataError(f"the head knows {sorted(net.heads)}, not {sorted(examples.heads)}")
    pred = {name: [] for name in examples.heads}
    for start in range(0, len(examples), 1024):
        _, logits = net(patch_tensor(examples.patches[start : start + 1024]))
        for name in examples.heads:
            pred[name].append(logits[name].argmax(1).numpy())
    out = {}
    for v, (name, names) in enumerate(examples.heads.items()):
        truth = examples.labels[:, v]
        sel = truth >= 0
        if not sel.any():
            continue
        right = np.concatenate(pred[name])[sel] == truth[sel]
        recall = {c: float(right[truth[sel] == i].mean())
                  for i, c in enumerate(names) if (truth[sel] == i).any()}  # fmt: skip
        out[name] = {"accuracy": float(right.mean()),
                     "balanced": float(np.mean(list(recall.values()))), **recall}  # fmt: skip
    return out
