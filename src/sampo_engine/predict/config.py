"""What a whole-tile prediction is asked: :class:`PredictConfig` (every option, shared by the CLI
``sampo-engine predict`` and the napari widget) and :func:`check_points` (the clicks, validated).

Imports nothing heavy (no torch): the CLI builds its parser from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sampo_engine._config import DEVICES, option
from sampo_engine.errors import ConfigError, DataError
from sampo_engine.models.registry import MODEL_TYPES
from sampo_engine.nuclei.exemplars import METHODS
from sampo_engine.predict.nucleus_classes import DEFAULT_T2_MODE, T2_MODES
from sampo_engine.predict.propagation import (
    DEFAULT_MIN_SIMILARITY,
    DEFAULT_MIN_SPACING,
    MAX_NEGATIVE,
    MAX_POSITIVE,
)
from sampo_engine.predict.split import SPLITS
from sampo_engine.tasks import TASKS  # noqa: F401  (re-exported: the CLI and the widget)

MAX_POINTS = MAX_POSITIVE + MAX_NEGATIVE

#: exemplar T2's classifier: the mean of the general type the clicks point at and the logistic
#: regression on the descriptors — best on CoNSeP's nucleus F1 and T2 Dice, near the best
#: precision on the point sets with more of each class covered (docs/type_head.md); without a
#: type head it is the logistic regression
DEFAULT_CLASSIFIER = "blend"

#: What ``sampo-engine predict`` can be asked: a task, or ``classes`` (every nucleus labelled
#: with one of several named classes: :meth:`TilePredictor.classify`).
PREDICT_TASKS = (*TASKS, "classes")

#: Class name written for T2 results when none is given.
DEFAULT_T2_CLASS = "T2 target"

#: How the predictor splits its foreground probability into nuclei (``split_instances``):
#: chosen on training images and checked on held-out whole images in docs/instances.md
#: (``python tools/instance_study.py all``). ``split_instances``' own defaults (threshold 0.5,
#: 3 px, σ 1 px, 16 px) stay for the classical floor and the crop scoring.
DEFAULT_THRESHOLD = 0.4
DEFAULT_SEED_DISTANCE = 8
DEFAULT_SEED_SIGMA = 3.0
DEFAULT_SPLIT_MIN_SIZE = 48


@dataclass
class PredictConfig:
    """Every option of whole-tile prediction (CLI ``sampo-engine predict`` and the napari widget)."""

    task: str = option(
        "t1",
        "t1 = all nuclei, t2 = the clicked type, classes = every nucleus labelled with one of "
        "the classes named in the points file",
        choices=PREDICT_TASKS,
    )
    model: str = option(
        "",
        "model (with --adapter the bundle's type is used); empty = the best one usable here: "
        "a shipped model, else a downloaded official checkpoint, else tiny (random weights)",
        choices=MODEL_TYPES,
    )
    checkpoint: str = option(
        "", "base weights .pth (empty = the cached official checkpoint, or the bundle's base)"
    )
    adapter: str = option("", "adapter bundle folder written by `sampo-engine train` (optional)")
    image_size: int = option(
        0, "model input = tile size in px (0 = the bundle's, else 224); a multiple of 16"
    )
    device: str = option("auto", "auto = cuda, then mps, then cpu", choices=DEVICES)
    overlap: int = option(32, "minimum overlap of neighbouring tiles in px (0 .. tile/2)")
    batch_size: int = option(8, "tiles per image-encoder batch")
    propagate: bool = option(
        True, "prompt tiles without clicks by feature similarity to the clicked nuclei"
    )
    threshold: float = option(
        DEFAULT_THRESHOLD, "foreground probability threshold (docs/instances.md)"
    )
    min_size: int = option(
        DEFAULT_SPLIT_MIN_SIZE,
        "drop nuclei (and watershed fragments) smaller than this, in px",
    )
    cache_dir: str = option("", "folder for cached image embeddings on disk (empty = memory only)")
    # ---- optional additions (not part of the widget contract)
    similarity: float = option(
        DEFAULT_MIN_SIMILARITY,
        "propagation: minimum (centred, norm-floored) cosine similarity to the clicked nuclei "
        "for a tile cell to become a positive prompt (-1 .. 1; lower = more tiles prompted)",
    )
    spacing: float = option(
        DEFAULT_MIN_SPACING,
        "propagation: minimum distance between propagated points, in 16 px cells",
    )
    class_name: str = option(
        "", f"class name written for the result (default: none for T1, {DEFAULT_T2_CLASS!r} for T2)"
    )
    t2_mode: str = option(
        DEFAULT_T2_MODE,
        "how T2 picks the nuclei of the clicked type: exemplar = segment every nucleus, then "
        "classify each one from the clicked nuclei (docs/exemplars.md); decoder = SAM's decoder "
        "reads the type from the clicks; hybrid = the mean of both per nucleus",
        choices=T2_MODES,
    )
    classifier: str = option(
        DEFAULT_CLASSIFIER,
        "exemplar/hybrid T2: the classifier fitted on the clicked nuclei (logreg = class-"
        "balanced logistic regression; spreading = label spreading over all nuclei; nearest = "
        "nearest clicked nucleus; types = the general type the type head knows that the clicks "
        "point at; blend = the mean of types and logreg; docs/type_head.md)",
        choices=METHODS,
    )
    class_threshold: float = option(
        0.5, "exemplar/hybrid T2: keep a nucleus when its probability of the clicked type ≥ this"
    )
    snap_radius: float = option(
        6.0, "exemplar/hybrid T2: a click on background names the nearest nucleus within this (px)"
    )
    resample: float = option(
        0.0,
        "resample the image by this factor before the model sees it; clicks and results stay at "
        "the image's own size (0 = the model's own: 1.5 for nuclei-small, whose nuclei then "
        "span more of the decoder's logit cells, docs/instances.md; 1 for the others)",
    )
    um_per_px: float = option(
        0.0,
        "the image's pixel size in µm (0.25 at 40×, 0.5 at 20×; the scanner's metadata says it): "
        "the image is resampled so that its nuclei have the size the model was trained on "
        "(0.25 µm/px); 0 = assume 0.25 (a warning names a far-off size; docs/magnification.md)",
    )
    seed_distance: int = option(
        DEFAULT_SEED_DISTANCE,
        "instances: minimum distance between the watershed seeds of two nuclei, in px (touching "
        "nuclei whose centres are closer stay one; docs/instances.md)",
    )
    seed_sigma: float = option(
        DEFAULT_SEED_SIGMA,
        "instances: Gaussian smoothing of the distance to the background before seeding, in px "
        "(0 = none; docs/instances.md)",
    )
    split_by: str = option(
        "auto",
        "instances (T1): how touching nuclei are cut apart — head = the model's learned split "
        "head, which reads the image at full resolution (nuclei-small ships one; "
        "docs/split_head.md); head+flips = the head averaged over the image and its three "
        "flips (~1.8x the T1 time, +1.6 PQ on CoNSeP, +0.8 on MoNuSeg, none on GBM40 and "
        "PanNuke); watershed = distance-transform watershed of the probability "
        "(--seed-distance, --seed-sigma); auto = head where the model ships one",
        choices=SPLITS,
    )
    type_head: str = option(
        "auto",
        "T2 by nucleus and classes: what tells nucleus types apart besides size, shape and "
        "stain — auto = the packaged type head (trained on 48k expert-classed nuclei; it reads "
        "the pixels, so it serves every model; docs/type_head.md), off = none, or the path of "
        "a type head "
        ".safetensors (tools/train_type_head.py)",
    )
    slot_rule: str = option(
        "auto",
        "which of SAM's 3 masks to use per tile: iou = the IoU head's pick; clicks = the one that "
        "agrees best with the clicks (much better for T2); auto = clicks for T2, iou for T1",
        choices=("auto", "iou", "clicks"),
    )

    def validate(self) -> None:
        """Refuse impossible settings before any work starts."""
        if self.task not in PREDICT_TASKS:
            raise ConfigError(
                f"--task must be one of {', '.join(PREDICT_TASKS)}, not {self.task!r}"
            )
        if self.model and self.model not in MODEL_TYPES:
            raise ConfigError(
                f"unknown model {self.model!r}; choose one of {', '.join(MODEL_TYPES)}"
            )
        if self.image_size < 0 or self.image_size % 16:
            raise ConfigError(
                f"--image-size {self.image_size} is not 0 or a positive multiple of 16; use 0"
            )
        if self.overlap < 0:
            raise ConfigError(f"--overlap must be ≥ 0 px, got {self.overlap}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be ≥ 1, got {self.batch_size}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(
                f"--threshold must lie strictly between 0 and 1, got {self.threshold}"
            )
        if self.min_size < 0:
            raise ConfigError(f"--min-size must be ≥ 0 px, got {self.min_size}")
        if self.resample != 0 and not 0.25 <= self.resample <= 4:
            raise ConfigError(
                f"--resample must be 0 (the model's own) or 0.25 .. 4, got {self.resample}"
            )
        if self.um_per_px != 0 and not 0.05 <= self.um_per_px <= 2:
            raise ConfigError(
                f"--um-per-px must be 0 (assume the model's 0.25) or 0.05 .. 2 µm, got "
                f"{self.um_per_px}"
            )
        if self.um_per_px and self.resample:
            raise ConfigError(
                "give --um-per-px (the image's pixel size: the resampling follows) or --resample "
                "(the factor itself), not both"
            )
        if self.seed_distance < 1:
            raise ConfigError(f"--seed-distance must be ≥ 1 px, got {self.seed_distance}")
        if self.seed_sigma < 0:
            raise ConfigError(
                f"--seed-sigma must be ≥ 0 px (0 = no smoothing), got {self.seed_sigma}"
            )
        if not -1.0 <= self.similarity <= 1.0:
            raise ConfigError(f"--similarity is a cosine: use -1 .. 1, got {self.similarity}")
        if self.spacing < 0:
            raise ConfigError(f"--spacing must be ≥ 0 cells, got {self.spacing}")
        if not 0.0 <= self.class_threshold <= 1.0:
            raise ConfigError(
                f"--class-threshold is a probability: use 0 .. 1, got {self.class_threshold}"
            )
        if self.snap_radius < 0:
            raise ConfigError(f"--snap-radius must be ≥ 0 px, got {self.snap_radius}")
        if self.split_by not in SPLITS:
            raise ConfigError(
                f"--split-by must be one of {', '.join(SPLITS)}, not {self.split_by!r}"
            )
        if self.type_head not in ("auto", "off") and not self.type_head.endswith(".safetensors"):
            raise ConfigError(
                f"--type-head must be auto, off or a type head .safetensors file, not "
                f"{self.type_head!r}"
            )


def check_points(points_xy, labels, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Validate clicks against an image of ``shape`` (H, W); return (N, 2) float32 (x, y) and
    (N,) int64 labels. Every problem raises :class:`DataError` naming the offending points."""
    pts = np.asarray(points_xy, dtype=np.float64)
    lab = np.asarray(labels)
    if pts.size == 0:
        raise DataError("no points given; click at least one positive point on a nucleus")
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise DataError(f"points must be an (N, 2) array of (x, y), got shape {pts.shape}")
    if lab.shape != (pts.shape[0],):
        raise DataError(
            f"{pts.shape[0]} points but labels of shape {lab.shape}; give one label per point"
        )
    bad = [i for i, v in enumerate(lab.tolist()) if v not in (0, 1, True, False)]
    if bad:
        raise DataError(
            f"labels must be 1 (positive) or 0 (negative); point(s) {bad[:10]} have "
            f"{[lab.tolist()[i] for i in bad[:10]]}"
        )
    lab = lab.astype(np.int64)
    if not np.isfinite(pts).all():
        rows = np.flatnonzero(~np.isfinite(pts).all(1))
        raise DataError(f"point(s) {rows[:10].tolist()} have a non-finite coordinate")
    h, w = shape
    outside = (
        (pts[:, 0] < -0.5) | (pts[:, 0] >= w - 0.5) | (pts[:, 1] < -0.5) | (pts[:, 1] >= h - 0.5)
    )
    if outside.any():
        named = ", ".join(
            f"#{i} (x={pts[i, 0]:g}, y={pts[i, 1]:g})" for i in np.flatnonzero(outside)[:10]
        )
        more = "" if outside.sum() <= 10 else f" and {int(outside.sum()) - 10} more"
        raise DataError(
            f"{int(outside.sum())} point(s) lie outside the {w} × {h} px image: {named}{more}. "
            f"Points are (x = column, y = row) in pixels, x in 0..{w - 1}, y in 0..{h - 1}; "
            f"napari gives (row, col) — swap them (TilePredictor.points_from_napari)"
        )
    if not (lab == 1).any():
        raise DataError(
            "no positive point: click at least one nucleus of the kind to segment (label 1); "
            "negative points (label 0) only say what not to segment"
        )
    return pts.astype(np.float32), lab
