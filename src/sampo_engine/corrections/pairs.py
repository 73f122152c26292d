"""The pathologist's correction records as training pairs: fixed-size batches for the trainer.

Records are cut to the model input size S: a random S × S window that contains edited pixels
(records smaller than S are padded with white image and background), with the prompt points
shifted and those outside the window dropped. The loss they feed is
:mod:`sampo_engine.train.corrections_loss` (docs/corrections.md).
"""

from __future__ import annotations

import numpy as np
import torch

from sampo_engine.corrections.store import CorrectionRecord
from sampo_engine.prompts import MAX_POINTS


def _pad(a: np.ndarray, size: int, value) -> np.ndarray:
    h, w = a.shape[:2]
    pads = [(0, max(0, size - h)), (0, max(0, size - w))] + [(0, 0)] * (a.ndim - 2)
    return np.pad(a, pads, constant_values=value)


class CorrectionsDataset:
    """Fixed-size (S × S) items of correction records; deterministic given (seed, step)."""

    def __init__(self, records: list[CorrectionRecord], size: int, seed: int = 0):
        self.records = [r for r in records if len(r.labels)]  # records need prompts
        self.size = size
        self.seed = seed

    def __len__(self) -> int:
        return len(self.records)

    def item(self, index: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        r = self.records[index]
        s = self.size
        image = _pad(r.image, s, 255)
        orig = _pad(r.original, s, False)
        corr = _pad(r.corrected, s, False)
        h, w = orig.shape
        changed = orig != corr
        top = left = 0
        if h > s or w > s:
            rows, cols = np.nonzero(changed) if changed.any() else np.nonzero(corr | orig)
            if rows.size:
                k = int(rng.integers(rows.size))
                top = int(np.clip(rows[k] - rng.integers(s), 0, h - s))
                left = int(np.clip(cols[k] - rng.integers(s), 0, w - s))
            else:
                top, left = int(rng.integers(h - s + 1)), int(rng.integers(w - s + 1))
        sl = (slice(top, top + s), slice(left, left + s))
        pts = r.points - [left, top]
        inside = (pts[:, 0] >= 0) & (pts[:, 0] < s) & (pts[:, 1] >= 0) & (pts[:, 1] < s)
        pts, labels = pts[inside][:MAX_POINTS], r.labels[inside][:MAX_POINTS]
        points = np.zeros((1, MAX_POINTS, 2), np.float32)
        lab = np.full((1, MAX_POINTS), -1, np.int64)
        points[0, : len(pts)] = pts
        lab[0, : len(labels)] = labels
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image[sl].transpose(2, 0, 1))),
            "points": torch.from_numpy(points),
            "labels": torch.from_numpy(lab),
            "corrected": torch.from_numpy(np.ascontiguousarray(corr[sl])),
            "original": torch.from_numpy(np.ascontiguousarray(orig[sl])),
        }

    def batch(self, step: int, batch_size: int) -> dict[str, torch.Tensor]:
        """The corrections batch of optimiser step ``step``: records in a seeded order per pass."""
        n = len(self.records)
        rng = np.random.default_rng([self.seed, 7919, step])
        items = []
        for i in range(min(batch_size, n)):
            flat = step * min(batch_size, n) + i
            order = np.random.default_rng([self.seed, 104729, flat // n]).permutation(n)
            items.append(self.item(int(order[flat % n]), rng))
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}
