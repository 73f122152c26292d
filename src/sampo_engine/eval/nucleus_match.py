"""Scoring by nucleus, as the field reports cell-type results.

- :func:`centroid_f1`: predicted nuclei against true nuclei matched one-to-one by centroid
  distance (Hungarian assignment, a pair counts when its centroids lie within ``radius`` px) —
  HoVer-Net's detection/classification matching. We use a radius of 3 µm: 12 px at 40×
  (0.25 µm/px, CoNSeP, MoNuSeg), 6 px at 20× (0.5 µm/px), as HoVer-Net does for CoNSeP.
  For T2 the true nuclei are those of the clicked class, so F1 = 2 TP / (2 TP + FP + FN) is the
  per-class F1 of the answer (a wrong-class nucleus in the answer is a false positive, a missed
  nucleus of the class a false negative).
- :func:`point_agreement`: for point-labelled data (a dot and a class per nucleus, no masks):
  of the predicted nuclei that hold a labelled dot, the share whose dot is of the clicked class
  (precision), and the share of that class's dots that lie in a predicted nucleus (coverage).
  Dots marked as nuclei without a class (CRCHistoPhenotypes' unclassified ones) are neither
  right nor wrong: a prediction holding only such dots is not counted.

Coordinates: centroids are (row, col); dots are (x, y) = (column, row).
"""

from __future__ import annotations

import numpy as np

#: the matching radius in micrometres (HoVer-Net: 12 px at 40×)
MATCH_RADIUS_UM = 3.0


def radius_px(um_per_px: float) -> float:
    """The matching radius in pixels at ``um_per_px`` (3 µm)."""
    return MATCH_RADIUS_UM / float(um_per_px)


def label_centroids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids (N,), centroids (N, 2) (row, col)) of the nonzero labels of an (H, W) map."""
    flat = np.asarray(labels).ravel()
    inside = np.flatnonzero(flat)
    lab = flat[inside]
    if lab.size == 0:
        return np.zeros(0, np.int64), np.zeros((0, 2))
    top = int(lab.max()) + 1
    count = np.bincount(lab, minlength=top)
    ids = np.flatnonzero(count)
    r, c = np.divmod(inside, labels.shape[1])
    cr = np.bincount(lab, weights=r, minlength=top)[ids] / count[ids]
    cc = np.bincount(lab, weights=c, minlength=top)[ids] / count[ids]
    return ids.astype(np.int64), np.stack([cr, cc], axis=1)


def centroid_f1(pred_centroids, true_centroids, radius: float) -> dict:
    """One-to-one matching within ``radius`` px: tp, fp, fn, precision, recall, f1.

    Args:
        pred_centroids, true_centroids: (P, 2) and (T, 2) (row, col).
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial import cKDTree

    pred = np.asarray(pred_centroids, np.float64).reshape(-1, 2)
    true = np.asarray(true_centroids, np.float64).reshape(-1, 2)
    tp = 0
    if len(pred) and len(true):
        pairs = cKDTree(pred).sparse_distance_matrix(
            cKDTree(true), radius, output_type="coo_matrix"
        )
        if pairs.nnz:
            # only nuclei with a partner within the radius take part in the assignment
            rows, row_index = np.unique(pairs.row, return_inverse=True)
            cols, col_index = np.unique(pairs.col, return_inverse=True)
            cost = np.full((len(rows), len(cols)), 1e9)
            cost[row_index, col_index] = pairs.data
            a, b = linear_sum_assignment(cost)
            tp = int((cost[a, b] <= radius).sum())
    fp, fn = len(pred) - tp, len(true) - tp
    precision = tp / len(pred) if len(pred) else float("nan")
    recall = tp / len(true) if len(true) else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else float("nan")
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def point_agreement(
    pred_labels: np.ndarray,
    points_xy,
    point_classes,
    target_class: int,
) -> dict:
    """Precision and coverage of a T2 answer against labelled dots (see the module docstring).

    Args:
        pred_labels: (H, W) int instance map of the T2 answer.
        points_xy: (P, 2) dots as (x, y); point_classes: (P,) their class ids.
        target_class: the clicked class. Pass only classified dots: unclassified ones are
            neither right nor wrong.

    Returns {'held': predicted nuclei holding a classified dot, 'right': of those, holding a dot
    of the target class, 'precision', 'covered', 'class_points', 'coverage', 'predicted'}.
    """
    labels = np.asarray(pred_labels)
    h, w = labels.shape
    pts = np.asarray(points_xy, np.float64).reshape(-1, 2)
    cls = np.asarray(point_classes).reshape(-1)
    cols = np.clip(np.round(pts[:, 0]).astype(np.int64), 0, w - 1)
    rows = np.clip(np.round(pts[:, 1]).astype(np.int64), 0, h - 1)
    hit = labels[rows, cols]
    held_ids = np.unique(hit[hit > 0])
    right_ids = np.unique(hit[(hit > 0) & (cls == target_class)])
    # a nucleus holding dots of several classes counts as right when one of them is the target
    n_pred = len(np.unique(labels)) - (1 if (labels == 0).any() else 0)
    in_class = cls == target_class
    covered = int((hit[in_class] > 0).sum())
    return {
        "predicted": int(n_pred),
        "held": int(len(held_ids)),
        "right": int(len(right_ids)),
        "precision": len(right_ids) / len(held_ids) if len(held_ids) else float("nan"),
        "covered": covered,
        "class_points": int(in_class.sum()),
        "coverage": covered / in_class.sum() if in_class.any() else float("nan"),
    }
