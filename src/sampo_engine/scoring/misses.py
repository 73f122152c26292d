"""Why true nuclei go unmatched: each nucleus a prediction misses (IoU ≤ 0.5 with every
predicted nucleus, as PQ counts it) is put down to one cause, and each unmatched predicted
nucleus to one kind — the breakdown that says whether touching nuclei merge, shapes are cut
wrong, or nuclei are not found at all (docs/split_head.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from sampo_engine.scoring.metrics import _match, _overlaps

#: a predicted nucleus "holds" a true nucleus when that nucleus fills this share of it
HOLDS = 0.2


@dataclass(frozen=True)
class MissCauses:
    """Counts of one image (or a sum of images).

    - ``true``: true nuclei; ``matched``: matched at IoU > 0.5.
    - Missed true nuclei, each by one cause: ``merged`` — the predicted nucleus that covers most
      of it holds another true nucleus too (two or more fill ≥ :data:`HOLDS` of it); ``misshapen``
      — at least half of it lies in predicted nuclei but none holds it alone well enough;
      ``not_found`` — less than half of it lies in any predicted nucleus (faint, or cut off).
    - Unmatched predicted nuclei, each by kind: ``spurious`` — less than half of it lies on true
      nuclei; ``pieces`` — the rest (a fragment of a nucleus, or a merge of several).
    """

    true: int = 0
    matched: int = 0
    merged: int = 0
    misshapen: int = 0
    not_found: int = 0
    spurious: int = 0
    pieces: int = 0

    def __add__(self, other: MissCauses) -> MissCauses:
        a, b = asdict(self), asdict(other)
        return MissCauses(**{k: a[k] + b[k] for k in a})

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def miss_causes(true, pred) -> MissCauses:
    """:class:`MissCauses` of the (H, W) int predicted nuclei ``pred`` against the (H, W) int
    true nuclei ``true`` (0 = background; the same [row, col] grid)."""
    ov = _overlaps(true, pred)
    rows, cols, _ = _match(ov, 0.5)
    n, m = ov.true_ids.size, ov.pred_ids.size
    # per overlapping pair (ov.rows[k], ov.cols[k]): does the true nucleus fill ≥ 20 % of it?
    holds = ov.inter >= HOLDS * ov.pred_area[ov.cols]
    held_per_pred = np.bincount(ov.cols[holds], minlength=m)  # (M,) true nuclei each holds
    on_pred = np.bincount(ov.rows, weights=ov.inter, minlength=n)  # (N,) px inside predictions
    on_true = np.bincount(ov.cols, weights=ov.inter, minlength=m)  # (M,) px on true nuclei
    # the predicted nucleus covering most of each true nucleus (-1: none)
    order = np.lexsort((ov.inter, ov.rows))  # by true nucleus, largest overlap last
    best = np.full(n, -1, np.int64)
    best[ov.rows[order]] = ov.cols[order]
    missed = np.ones(n, bool)
    missed[rows] = False
    unmatched = np.ones(m, bool)
    unmatched[cols] = False
    not_found = missed & (on_pred < 0.5 * ov.true_area)
    found = missed & ~not_found
    held_by_best = np.zeros(n, np.int64)  # how many true nuclei that prediction holds
    held_by_best[best >= 0] = held_per_pred[best[best >= 0]]
    merged = found & (held_by_best >= 2)
    spurious = unmatched & (on_true < 0.5 * ov.pred_area)
    return MissCauses(
        true=int(n),
        matched=int(rows.size),
        merged=int(merged.sum()),
        misshapen=int((found & ~merged).sum()),
        not_found=int(not_found.sum()),
        spurious=int(spurious.sum()),
        pieces=int((unmatched & ~spurious).sum()),
    )
