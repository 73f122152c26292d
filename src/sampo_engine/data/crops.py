"""Training crops: random S × S windows of annotated images, augmented, with mined prompt sets.

An epoch draws ``ceil(H·W / S²)`` crops from each usable image (so a 1000 px CoNSeP image gives
20 crops of 224 px and a 256 px PanNuke tile 2), each with flips and a rot90, an intent (T1, or
T2 of a class present in the crop) and K mined prompt sets. Images smaller than S are padded
(white image, background labels). Label maps without nuclei are skipped and counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from sampo_engine.data.sample import NucleiDataset, NucleiSample
from sampo_engine.prompts import (
    Intent,
    MiningConfig,
    _Geometry,
    available_intents,
    mine_prompt_sets,
    pack,
    target_mask,
)


def pad_to(sample: NucleiSample, size: int) -> NucleiSample:
    """Pad a sample to at least ``size`` × ``size`` (image with white, labels with 0)."""
    h, w = sample.shape
    ph, pw = max(0, size - h), max(0, size - w)
    if not ph and not pw:
        return sample
    pads = ((0, ph), (0, pw))
    return NucleiSample(
        np.pad(sample.image, (*pads, (0, 0)), constant_values=255),
        np.pad(sample.inst, pads),
        None if sample.cls is None else np.pad(sample.cls, pads),
        sample.name,
        sample.tissue,
        None if sample.debris is None else np.pad(sample.debris, pads),
    )


def crop_sample(sample: NucleiSample, top: int, left: int, size: int) -> NucleiSample:
    sl = (slice(top, top + size), slice(left, left + size))
    return NucleiSample(
        sample.image[sl],
        sample.inst[sl],
        None if sample.cls is None else sample.cls[sl],
        f"{sample.name}@{top},{left}",
        sample.tissue,
        None if sample.debris is None else sample.debris[sl],
    )


def augment(sample: NucleiSample, rng: np.random.Generator) -> NucleiSample:
    """Random horizontal/vertical flips and a rot90 applied alike to image and labels."""
    k = int(rng.integers(4))
    flip_h, flip_v = rng.random() < 0.5, rng.random() < 0.5

    def apply(a):
        if a is None:
            return None
        a = np.rot90(a, k, axes=(0, 1))
        if flip_h:
            a = a[:, ::-1]
        if flip_v:
            a = a[::-1]
        return np.ascontiguousarray(a)

    return NucleiSample(
        apply(sample.image), apply(sample.inst), apply(sample.cls), sample.name, sample.tissue
    )


@dataclass
class TrainItem:
    """One training example: image (3, S, S) uint8, target (S, S) bool, points (K, P, 2) (x, y),
    labels (K, P) with -1 padding, and the intent as (task index 0 = T1 / 1 = T2, class id)."""

    image: torch.Tensor
    target: torch.Tensor
    points: torch.Tensor
    labels: torch.Tensor
    intent: torch.Tensor


def collate(items: list[TrainItem]) -> dict[str, torch.Tensor]:
    return {
        "image": torch.stack([i.image for i in items]),
        "target": torch.stack([i.target for i in items]),
        "points": torch.stack([i.points for i in items]),
        "labels": torch.stack([i.labels for i in items]),
        "intent": torch.stack([i.intent for i in items]),
    }


class CropDataset(Dataset):
    """Random training crops of ``dataset`` with mined prompts (see module docstring).

    Deterministic given (seed, epoch, index): call :meth:`set_epoch` before each epoch.
    Loaded samples are kept in memory (labels as int32/uint8).
    """

    def __init__(
        self,
        dataset: NucleiDataset,
        indices: list[int],
        size: int,
        task: str,
        mining: MiningConfig,
        seed: int = 0,
        augment: bool = True,
    ):
        self.dataset = dataset
        self.size = size
        self.task = task
        self.mining = mining
        self.seed = seed
        self.augment = augment
        self.epoch = 0
        self._cache: dict[int, NucleiSample] = {}
        self.usable: list[int] = []
        self.skipped_empty: list[str] = []
        self.skipped_no_intent: list[str] = []
        self._slots: list[int] = []
        for i in indices:
            sample = self._load(i)
            if sample.num_nuclei == 0:
                self.skipped_empty.append(sample.name)
                self._cache.pop(i, None)
                continue
            if not available_intents(sample.inst, sample.cls, task):
                self.skipped_no_intent.append(sample.name)
                self._cache.pop(i, None)
                continue
            self.usable.append(i)
            h, w = sample.shape
            self._slots += [i] * max(1, math.ceil(h * w / size**2))

    def _load(self, i: int) -> NucleiSample:
        if i not in self._cache:
            s = self.dataset[i]
            s = NucleiSample(
                s.image,
                s.inst.astype(np.int32, copy=False),
                None if s.cls is None else s.cls.astype(np.uint8, copy=False),
                s.name,
                s.tissue,
            )
            self._cache[i] = pad_to(s, self.size)
        return self._cache[i]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._slots)

    def _random_crop(self, sample: NucleiSample, rng: np.random.Generator) -> NucleiSample:
        h, w = sample.shape
        s = self.size
        for attempt in range(8):
            if attempt < 4 and rng.random() < 0.5:
                top, left = int(rng.integers(h - s + 1)), int(rng.integers(w - s + 1))
            else:  # centred near a random nucleus pixel, so sparse images still give nuclei
                rows, cols = np.nonzero(sample.inst)
                pick = int(rng.integers(rows.size))
                top = int(np.clip(rows[pick] - rng.integers(s), 0, h - s))
                left = int(np.clip(cols[pick] - rng.integers(s), 0, w - s))
            crop = crop_sample(sample, top, left, s)
            if available_intents(crop.inst, crop.cls, self.task):
                return crop
        return crop

    def __getitem__(self, index: int) -> TrainItem:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        sample = self._load(self._slots[index])
        crop = self._random_crop(sample, rng)
        if self.augment:
            crop = augment(crop, rng)
        intents = available_intents(crop.inst, crop.cls, self.task)
        if not intents:  # pathological: fall back to T1 on the whole crop
            intents = [Intent("t1")]
        if self.task == "both" and len(intents) > 1 and rng.random() < 0.5:
            intent = intents[0]  # T1 half the time, T2 of a random class otherwise
        else:
            t2 = [i for i in intents if i.task == "t2"] if self.task == "both" else intents
            intent = t2[int(rng.integers(len(t2)))] if t2 else intents[0]
        target = target_mask(crop.inst, crop.cls, intent)
        if target.any():
            sets = mine_prompt_sets(
                crop.inst, crop.cls, intent, rng, self.mining, _Geometry(crop.inst, crop.cls)
            )
        else:
            sets = []
        points, labels = pack(sets) if sets else pack([])
        if not sets:
            points = np.zeros((self.mining.num_sets, 6, 2), np.float32)
            labels = np.full((self.mining.num_sets, 6), -1, np.int64)
        return TrainItem(
            image=torch.from_numpy(np.ascontiguousarray(crop.image.transpose(2, 0, 1))),
            target=torch.from_numpy(target),
            points=torch.from_numpy(points),
            labels=torch.from_numpy(labels),
            intent=torch.tensor([0 if intent.task == "t1" else 1, intent.class_id]),
        )
