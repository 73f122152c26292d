"""Segmentation metrics: binary IoU/Dice (per query and pooled) and instance metrics.

Binary metrics take two arrays of the same shape (any number of dimensions, usually (H, W));
any nonzero value is foreground. Conventions for empty masks (documented, tested):

- both empty → IoU = Dice = 1.0 (the model correctly answered "nothing here", which is what a
  T2 query on a patch without that cell type asks for);
- exactly one empty → IoU = Dice = 0.0.

Instance metrics take two (H, W) integer label maps (0 = background, any positive ids, not
necessarily consecutive) and follow HoVer-Net's ``stats_utils`` (also used by CellViT), written
here from the definitions with a sparse contingency table instead of per-instance loops:

- ``get_fast_pq``: a GT and a predicted instance match when their IoU > ``match_iou`` (0.5: the
  match is then unique). TP = matches, FP = unmatched predictions, FN = unmatched GT.
  DQ = TP / (TP + FP/2 + FN/2), SQ = mean IoU of the matches, PQ = DQ·SQ.
- ``get_fast_aji``: every GT instance is paired with the predicted instance of highest IoU among
  those it overlaps (a prediction may serve several GT instances); AJI = Σ|G∩P| / (Σ|G∪P| over
  the pairs + areas of the GT without any overlap + areas of the predictions used by no pair).
- ``detection_f1``: detection counts from the same IoU > 0.5 matching as PQ (CellViT pairs
  centroids within 12 px instead; with IoU > 0.5 matching F1 equals DQ exactly, since
  2TP / (2TP + FP + FN) = TP / (TP + FP/2 + FN/2)).

Empty conventions for instance metrics: when both maps are empty every score is NaN (undefined —
aggregate with ``np.nanmean``; the PanNuke evaluation likewise skips patches without GT nuclei).
When only one is empty there are no matches: DQ = SQ = PQ = AJI = F1 = 0.0. SQ is 0.0 whenever
TP = 0 (HoVer-Net's value). Precision is 0.0 when there are GT nuclei but no predictions; recall is
0.0 when there are predictions but no GT nuclei.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from skimage.segmentation import relabel_sequential

from sampo_engine.errors import DataError

# --------------------------------------------------------------------------------------------
# Binary masks


def _as_binary_pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise DataError(
            f"prediction shape {pred.shape} differs from target shape {target.shape}; resize the "
            f"prediction to the label resolution before scoring"
        )
    return pred != 0, target != 0


@dataclass
class OverlapCounts:
    """Pixel counts of one (prediction, target) pair, or of many pairs summed.

    ``intersection`` = |P∩T|, ``pred_sum`` = |P|, ``target_sum`` = |T| (ints).
    """

    intersection: int = 0
    pred_sum: int = 0
    target_sum: int = 0

    @property
    def union(self) -> int:
        return self.pred_sum + self.target_sum - self.intersection

    @property
    def iou(self) -> float:
        """|P∩T| / |P∪T|; 1.0 when both are empty."""
        union = self.union
        return 1.0 if union == 0 else self.intersection / union

    @property
    def dice(self) -> float:
        """2|P∩T| / (|P| + |T|); 1.0 when both are empty."""
        total = self.pred_sum + self.target_sum
        return 1.0 if total == 0 else 2.0 * self.intersection / total

    def __add__(self, other: OverlapCounts) -> OverlapCounts:
        return OverlapCounts(
            self.intersection + other.intersection,
            self.pred_sum + other.pred_sum,
            self.target_sum + other.target_sum,
        )


def overlap_counts(pred, target) -> OverlapCounts:
    """Counts of two same-shape masks (nonzero = foreground)."""
    p, t = _as_binary_pair(pred, target)
    return OverlapCounts(
        intersection=int(np.count_nonzero(p & t)),
        pred_sum=int(np.count_nonzero(p)),
        target_sum=int(np.count_nonzero(t)),
    )


def iou(pred, target) -> float:
    """Intersection over union of two same-shape masks; both empty → 1.0, one empty → 0.0."""
    return overlap_counts(pred, target).iou


def dice(pred, target) -> float:
    """Dice (F1) of two same-shape masks; both empty → 1.0, one empty → 0.0."""
    return overlap_counts(pred, target).dice


class PooledOverlap:
    """Accumulates pixel counts over many queries: pooled IoU = ΣI / ΣU, pooled Dice =
    2ΣI / (Σ|P| + Σ|T|) — large nuclei weigh more than in the macro (per-query) mean.

    With nothing added both scores are NaN; with only empty masks added they are 1.0 (the
    per-query convention). ``merge`` combines accumulators (e.g. from several workers).
    """

    def __init__(self) -> None:
        self.counts = OverlapCounts()
        self.n = 0

    def add(self, pred, target) -> OverlapCounts:
        """Add one query's masks; returns that query's counts (for its per-query scores)."""
        counts = overlap_counts(pred, target)
        self.add_counts(counts)
        return counts

    def add_counts(self, counts: OverlapCounts, n: int = 1) -> None:
        self.counts = self.counts + counts
        self.n += n

    def merge(self, other: PooledOverlap) -> PooledOverlap:
        self.add_counts(other.counts, other.n)
        return self

    @property
    def iou(self) -> float:
        return float("nan") if self.n == 0 else self.counts.iou

    @property
    def dice(self) -> float:
        return float("nan") if self.n == 0 else self.counts.dice

    def as_dict(self) -> dict:
        return {
            "n": self.n,
            "intersection": self.counts.intersection,
            "union": self.counts.union,
            "pred_sum": self.counts.pred_sum,
            "target_sum": self.counts.target_sum,
            "iou": self.iou,
            "dice": self.dice,
        }


# --------------------------------------------------------------------------------------------
# Instance maps


def _check_labels(labels, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{name} label map has dtype {labels.dtype}; instance metrics need integer labels "
            f"(0 = background) — threshold and split probabilities first (split_instances)"
        )
    if labels.size and labels.min() < 0:
        raise DataError(f"{name} label map has negative ids; use 0 for background and ids ≥ 1")
    return labels


def remap_label(labels, by_size: bool = False) -> np.ndarray:
    """Rename the ids of an (H, W) label map to 1..N (0 stays background), as HoVer-Net's
    ``remap_label``. Ids keep their relative order, or with ``by_size`` the largest instance
    gets 1. Returns an array of the same shape (int32, or int64 above 2**31 - 1 instances)."""
    labels = _check_labels(labels, "the")
    relabelled, _, _ = relabel_sequential(labels)
    n = int(relabelled.max()) if relabelled.size else 0
    dtype = np.int32 if n < np.iinfo(np.int32).max else np.int64
    if by_size and n > 1:
        areas = np.bincount(relabelled.ravel(), minlength=n + 1)[1:]
        order = np.argsort(-areas, kind="stable")  # old id - 1, largest first
        lut = np.zeros(n + 1, dtype=dtype)
        lut[order + 1] = np.arange(1, n + 1, dtype=dtype)
        return lut[relabelled]
    return relabelled.astype(dtype, copy=False)


@dataclass
class _Overlaps:
    """Sparse overlap table of two label maps, ids remapped to 1..N (GT) and 1..M (pred).

    ``true_ids``/``pred_ids``: original ids, index k ↔ remapped id k + 1 (shape (N,), (M,)).
    ``rows``/``cols``: 0-based remapped ids of every overlapping pair; ``inter``/``union`` their
    pixel counts; ``iou`` = inter / union. ``true_area``/``pred_area``: areas, shape (N,), (M,).
    """

    true_ids: np.ndarray
    pred_ids: np.ndarray
    true_area: np.ndarray
    pred_area: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    inter: np.ndarray
    union: np.ndarray

    @property
    def iou(self) -> np.ndarray:
        return self.inter / self.union


def _overlaps(true, pred) -> _Overlaps:
    true = _check_labels(true, "ground-truth")
    pred = _check_labels(pred, "predicted")
    if true.shape != pred.shape:
        raise DataError(
            f"predicted label map shape {pred.shape} differs from ground truth {true.shape}; "
            f"predict at the label resolution before scoring"
        )
    t, t_fwd, _ = relabel_sequential(true)
    p, p_fwd, _ = relabel_sequential(pred)
    t = t.ravel()
    p = p.ravel()
    # relabel_sequential numbers the sorted original ids 1..N: original id of k is ids[k - 1].
    true_ids = np.asarray(t_fwd.in_values, dtype=np.int64)
    true_ids = true_ids[true_ids != 0]
    pred_ids = np.asarray(p_fwd.in_values, dtype=np.int64)
    pred_ids = pred_ids[pred_ids != 0]
    n, m = true_ids.size, pred_ids.size
    true_area = np.bincount(t, minlength=n + 1)[1:]
    pred_area = np.bincount(p, minlength=m + 1)[1:]
    both = (t > 0) & (p > 0)
    table = sparse.coo_matrix(
        (np.ones(int(both.sum()), dtype=np.int64), (t[both] - 1, p[both] - 1)), shape=(n, m)
    ).tocsr()  # duplicates are summed: table[i, j] = |G_i ∩ P_j|
    table = table.tocoo()
    rows, cols, inter = table.row.astype(np.int64), table.col.astype(np.int64), table.data
    union = true_area[rows] + pred_area[cols] - inter
    return _Overlaps(true_ids, pred_ids, true_area, pred_area, rows, cols, inter, union)


def _match(ov: _Overlaps, match_iou: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique GT↔prediction pairs with IoU > match_iou: (row index, col index, IoU) arrays."""
    ious = ov.iou
    keep = ious > match_iou
    if match_iou >= 0.5:  # IoU > 0.5 pairs are unique: no assignment problem to solve
        return ov.rows[keep], ov.cols[keep], ious[keep]
    from scipy.optimize import linear_sum_assignment

    rows, cols, ious = ov.rows[keep], ov.cols[keep], ious[keep]
    if rows.size == 0:
        return rows, cols, ious
    r_ids, r_idx = np.unique(rows, return_inverse=True)
    c_ids, c_idx = np.unique(cols, return_inverse=True)
    cost = np.zeros((r_ids.size, c_ids.size))
    cost[r_idx, c_idx] = -ious
    sel_r, sel_c = linear_sum_assignment(cost)
    chosen = -cost[sel_r, sel_c]
    ok = chosen > match_iou
    return r_ids[sel_r[ok]], c_ids[sel_c[ok]], chosen[ok]


@dataclass
class PQResult:
    """Panoptic-quality terms of one image; ids are the ORIGINAL label ids."""

    dq: float
    sq: float
    pq: float
    tp: int
    fp: int
    fn: int
    iou_sum: float  # Σ IoU over matches: pool images with SQ = Σiou_sum / Σtp
    paired_true: np.ndarray
    paired_pred: np.ndarray
    unpaired_true: np.ndarray
    unpaired_pred: np.ndarray


def _pq_from_counts(tp: int, fp: int, fn: int, iou_sum: float) -> tuple[float, float, float]:
    if tp + fp + fn == 0:
        nan = float("nan")
        return nan, nan, nan
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = iou_sum / tp if tp else 0.0
    return dq, sq, dq * sq


def _pq(ov: _Overlaps, match_iou: float) -> PQResult:
    rows, cols, ious = _match(ov, match_iou)
    tp = int(rows.size)
    fn = int(ov.true_ids.size) - tp
    fp = int(ov.pred_ids.size) - tp
    iou_sum = float(ious.sum())
    dq, sq, pq = _pq_from_counts(tp, fp, fn, iou_sum)
    return PQResult(
        dq=dq,
        sq=sq,
        pq=pq,
        tp=tp,
        fp=fp,
        fn=fn,
        iou_sum=iou_sum,
        paired_true=ov.true_ids[rows],
        paired_pred=ov.pred_ids[cols],
        unpaired_true=np.delete(ov.true_ids, rows),
        unpaired_pred=np.delete(ov.pred_ids, cols),
    )


def get_fast_pq(true, pred, match_iou: float = 0.5) -> PQResult:
    """Detection, segmentation and panoptic quality of predicted instances vs ground truth.

    ``true``, ``pred``: (H, W) integer label maps, 0 = background. Matching is IoU >
    ``match_iou`` (strict); below 0.5 a maximum-IoU unique assignment is solved first (as
    HoVer-Net does). Both maps empty → DQ = SQ = PQ = NaN.
    """
    if not 0.0 <= match_iou < 1.0:
        raise DataError(f"match_iou {match_iou} must lie in [0, 1); the standard value is 0.5")
    return _pq(_overlaps(true, pred), match_iou)


def _aji(ov: _Overlaps) -> float:
    n_true, n_pred = ov.true_ids.size, ov.pred_ids.size
    if n_true == 0 and n_pred == 0:
        return float("nan")
    ious = ov.iou
    # For each GT row its best-IoU prediction (ties → smallest remapped id, as np.argmax).
    order = np.lexsort((ov.cols, -ious, ov.rows))
    first = order[np.unique(ov.rows[order], return_index=True)[1]]
    inter = int(ov.inter[first].sum())
    union = int(ov.union[first].sum())
    paired_rows = ov.rows[first]
    paired_cols = np.unique(ov.cols[first])
    union += int(np.delete(ov.true_area, paired_rows).sum())
    union += int(np.delete(ov.pred_area, paired_cols).sum())
    return inter / union


def get_fast_aji(true, pred) -> float:
    """Aggregated Jaccard Index of two (H, W) label maps (HoVer-Net's ``get_fast_aji``).

    Both maps empty → NaN; exactly one empty → 0.0.
    """
    return _aji(_overlaps(true, pred))


@dataclass
class DetectionResult:
    """Detection quality from IoU > 0.5 instance matching."""

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int


def _detection_from_counts(tp: int, fp: int, fn: int) -> DetectionResult:
    if tp + fp + fn == 0:
        nan = float("nan")
        return DetectionResult(nan, nan, nan, 0, 0, 0)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn)
    return DetectionResult(precision, recall, f1, tp, fp, fn)


def detection_f1(true, pred, match_iou: float = 0.5) -> DetectionResult:
    """Precision, recall and F1 of nucleus detection: a predicted nucleus is a true positive
    when it matches a GT nucleus with IoU > ``match_iou`` (the PQ matching). Both empty → NaN."""
    result = get_fast_pq(true, pred, match_iou)
    return _detection_from_counts(result.tp, result.fp, result.fn)


def instance_metrics(true, pred, match_iou: float = 0.5) -> dict:
    """Every instance metric of one image from one overlap table.

    Returns a flat dict of floats/ints: ``dq, sq, pq, aji, precision, recall, f1, tp, fp, fn,
    iou_sum, n_true, n_pred`` (counts allow pooling over images; NaN where undefined).
    """
    if not 0.0 <= match_iou < 1.0:
        raise DataError(f"match_iou {match_iou} must lie in [0, 1); the standard value is 0.5")
    ov = _overlaps(true, pred)
    pq = _pq(ov, match_iou)
    det = _detection_from_counts(pq.tp, pq.fp, pq.fn)
    return {
        "dq": pq.dq,
        "sq": pq.sq,
        "pq": pq.pq,
        "aji": _aji(ov),
        "precision": det.precision,
        "recall": det.recall,
        "f1": det.f1,
        "tp": pq.tp,
        "fp": pq.fp,
        "fn": pq.fn,
        "iou_sum": pq.iou_sum,
        "n_true": int(ov.true_ids.size),
        "n_pred": int(ov.pred_ids.size),
    }


def pooled_instance_metrics(rows: list[dict]) -> dict:
    """Pool :func:`instance_metrics` results of many images by summing TP/FP/FN and IoU sums
    (DQ, SQ, PQ, precision, recall, F1 of the pooled counts; AJI is not poolable and omitted)."""
    tp = sum(int(r["tp"]) for r in rows)
    fp = sum(int(r["fp"]) for r in rows)
    fn = sum(int(r["fn"]) for r in rows)
    iou_sum = sum(float(r["iou_sum"]) for r in rows)
    dq, sq, pq = _pq_from_counts(tp, fp, fn, iou_sum)
    det = _detection_from_counts(tp, fp, fn)
    return {
        "dq": dq,
        "sq": sq,
        "pq": pq,
        "precision": det.precision,
        "recall": det.recall,
        "f1": det.f1,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "iou_sum": iou_sum,
    }
