"""Pseudo labels from point annotations: a segmentation's nuclei, classed by the dots inside them.

Point-labelled sets (BRCA-M2C, CRCHistoPhenotypes, the shipped sample tile) give one dot and a
class per nucleus, no outlines. Paired with an instance map (a model's T1 answer), every nucleus
that holds dots becomes a labelled nucleus of its dots' class, so the pair can train T2 like a
mask-labelled image. Nuclei holding no dot are left out (they are background in the result: the
experts did not call them nuclei of any class); a nucleus whose dots disagree with no majority is
left out too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PseudoLabels:
    """inst: (H, W) int32, the kept nuclei (their ids in the source map); cls: (H, W) uint8, each
    kept nucleus's class, 0 elsewhere; kept / without_dot / ambiguous: numbers of nuclei; dots_used:
    dots that fell inside a kept nucleus."""

    inst: np.ndarray
    cls: np.ndarray
    kept: int
    without_dot: int
    ambiguous: int
    dots_used: int


def pseudo_labels_from_points(instances, points_xy, point_classes) -> PseudoLabels:
    """Class the nuclei of ``instances`` by the dots inside them.

    Args:
        instances: (H, W) int instance map, 0 = background, indexed [row, col].
        points_xy: (N, 2) dots as (x, y) = (column, row), pixel centres at integers.
        point_classes: (N,) class ids ≥ 1 (at most 255).
    """
    inst = np.asarray(instances)
    pts = np.asarray(points_xy, np.float64).reshape(-1, 2)
    classes = np.asarray(point_classes, np.int64).reshape(-1)
    if len(pts) != len(classes):
        raise ValueError(f"{len(pts)} dots but {len(classes)} classes")
    h, w = inst.shape
    cols = np.clip(np.round(pts[:, 0]).astype(np.int64), 0, w - 1)
    rows = np.clip(np.round(pts[:, 1]).astype(np.int64), 0, h - 1)
    hit = inst[rows, cols]
    inside = hit > 0
    ids = np.unique(inst[inst > 0])
    class_of: dict[int, int] = {}
    ambiguous = 0
    for nucleus in np.unique(hit[inside]).tolist():
        votes = np.bincount(classes[inside & (hit == nucleus)])
        top = np.flatnonzero(votes == votes.max())
        if len(top) > 1:
            ambiguous += 1
            continue
        class_of[int(nucleus)] = int(top[0])
    lut_ids = np.array(sorted(class_of), np.int64)
    keep = np.isin(inst, lut_ids)
    out_inst = np.where(keep, inst, 0).astype(np.int32)
    out_cls = np.zeros(inst.shape, np.uint8)
    if len(lut_ids):
        order = np.searchsorted(lut_ids, inst[keep])
        out_cls[keep] = np.array([class_of[i] for i in lut_ids.tolist()], np.uint8)[order]
    used = int(np.isin(hit, lut_ids).sum())
    return PseudoLabels(
        out_inst, out_cls, len(class_of), len(ids) - len(class_of) - ambiguous, ambiguous, used
    )
