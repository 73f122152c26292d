"""How large are the nuclei of an image? A model-free estimate, and the magnification check.

A model trained at one magnification misses or merges nuclei at another (nuclei-small was trained
at 40×, about 0.25 µm/px; a 20× image shows the same nuclei at half the size). Before any model
looks at an image, :func:`typical_nucleus_radius` measures its nuclei without a model:

1. hematoxylin optical density (colour deconvolution, :func:`hed_optical_density`), smoothed
   (σ 1 px), thresholded at Otsu's level raised by :data:`DARKER` of the way to the 99th
   percentile (the darkest, most nucleus-like part: pale hematoxylin in stroma is left out),
   holes filled, opened once (3×3) — the dark-blue foreground;
2. its **granulometric radius**: the radius r of the disk whose morphological opening keeps
   :data:`KEPT_SHARE` of the foreground's area. Touching nuclei do not inflate it (a disk fits
   inside each nucleus, not inside the pair), and it scales with the image: a 2× smaller image
   gives a 2× smaller radius (docs/magnification.md measures both, and how these two settings
   were chosen).

:func:`check_scale` turns the radius into the pixel size it implies (the reference: the median
radius of the 40× training images, measured the same way) and words a warning when that is far
from the pixel size assumed. Image size and coordinates: (H, W, 3) RGB uint8, radii in pixels of
the image as given. Only the central :data:`MAX_SIDE` × :data:`MAX_SIDE` px are measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sampo_engine.nuclei.descriptors import hed_optical_density

#: the pixel size the reference radius refers to (40×: CoNSeP, MoNuSeg, PanNuke, GBM40)
REFERENCE_UM_PER_PX = 0.25
#: median granulometric radius (px) of the nuclei of the 40× training images of
#: the 40× sets of ``../shared/data`` (105 images of CoNSeP, MoNuSeg, GBM40, PanNuke-2), as scanned,
#: measured by :func:`typical_nucleus_radius`: ``python tools/magnification_study.py``
REFERENCE_RADIUS_PX = 7.6
#: warn when the implied pixel size is off the assumed one by more than this factor (both ways):
#: chosen in docs/magnification.md (few warnings on true 40× images, most on 40× images shown
#: at half or double their size)
WARN_FACTOR = 1.6
#: the measured window: the image's centre, at most this many px on a side
MAX_SIDE = 768
#: below / above this share of foreground the estimate is not trusted (no stain contrast, or an
#: image filled with nuclei or with hematoxylin-dark tissue)
FOREGROUND_RANGE = (0.02, 0.6)
#: the radii searched (px of the image as given)
RADIUS_RANGE = (1.0, 64.0)
#: the foreground threshold: Otsu's level + this share of the way to the 99th percentile
DARKER = 0.4
#: the share of the foreground's area the disk opening keeps at the reported radius
KEPT_SHARE = 0.3


@dataclass(frozen=True)
class NucleusScale:
    """radius_px: the granulometric median radius of the nuclei (px), or None when it cannot be
    trusted; foreground: the share of the measured window taken as nuclei; reason: why
    ``radius_px`` is None ("" otherwise)."""

    radius_px: float | None
    foreground: float
    reason: str = ""


def _central_window(rgb: np.ndarray, side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return rgb[top : top + side, left : left + side]


def nucleus_foreground(rgb: np.ndarray) -> np.ndarray:
    """(H, W) bool: the hematoxylin-dark foreground of an (H, W, 3) RGB uint8 image."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    hematoxylin = ndi.gaussian_filter(hed_optical_density(rgb)[..., 0], 1.0)
    if float(hematoxylin.max()) - float(hematoxylin.min()) < 1e-6:
        return np.zeros(rgb.shape[:2], bool)
    level = threshold_otsu(hematoxylin)
    level += DARKER * max(float(np.percentile(hematoxylin, 99)) - level, 0.0)
    mask = ndi.binary_fill_holes(hematoxylin > level)
    return ndi.binary_opening(mask, iterations=1)


def _kept_by_opening(mask: np.ndarray, inside: np.ndarray, radius: float) -> float:
    """Share of ``mask``'s area kept by an opening with a disk of ``radius`` px: the union of the
    disks that fit inside = the points within ``radius`` of a point at depth ≥ ``radius``."""
    from scipy import ndimage as ndi

    centres = inside >= radius
    if not centres.any():
        return 0.0
    opened = ndi.distance_transform_edt(~centres) <= radius
    return float((opened & mask).sum()) / float(mask.sum())


def granulometric_radius(mask: np.ndarray, kept: float = KEPT_SHARE, steps: int = 9) -> float:
    """The radius (px) whose disk opening keeps the share ``kept`` of ``mask``'s (H, W) bool
    area, found by bisection on a log scale within :data:`RADIUS_RANGE` (``steps`` halvings:
    ±4 %). ``kept`` 0.5 = the granulometric median."""
    from scipy import ndimage as ndi

    inside = ndi.distance_transform_edt(mask)
    lo, hi = RADIUS_RANGE
    for _ in range(steps):
        mid = float(np.sqrt(lo * hi))
        if _kept_by_opening(mask, inside, mid) >= kept:
            lo = mid
        else:
            hi = mid
    return float(np.sqrt(lo * hi))


def typical_nucleus_radius(rgb: np.ndarray) -> NucleusScale:
    """The nuclei's typical radius in an (H, W, 3) RGB uint8 H&E image, without a model.

    Measures the central :data:`MAX_SIDE`² px (0.1–0.3 s on 2 cores). ``radius_px`` is None when
    the foreground is outside :data:`FOREGROUND_RANGE` (no contrast, or no background).
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"an (H, W, 3) RGB image is needed, got shape {rgb.shape}")
    window = np.ascontiguousarray(_central_window(rgb[..., :3], MAX_SIDE)).astype(np.uint8)
    mask = nucleus_foreground(window)
    share = float(mask.mean()) if mask.size else 0.0
    lo, hi = FOREGROUND_RANGE
    if not lo <= share <= hi:
        why = "too little" if share < lo else "too much"
        return NucleusScale(None, share, f"{why} hematoxylin-dark area ({share:.0%}) to measure")
    return NucleusScale(granulometric_radius(mask), share)


@dataclass(frozen=True)
class ScaleCheck:
    """The magnification check of one image.

    radius_px: the typical nucleus radius measured (px of the image as given; None: not
    measurable); implied_um_per_px: the pixel size at which such nuclei would have the
    training images' size; assumed_um_per_px: the pixel size the model is told (or assumes);
    message: a warning when the two differ by more than :data:`WARN_FACTOR`, else "".
    """

    radius_px: float | None
    implied_um_per_px: float | None
    assumed_um_per_px: float
    message: str = ""

    @property
    def ratio(self) -> float | None:
        """implied / assumed pixel size (> 1: nuclei smaller than the model expects)."""
        if self.implied_um_per_px is None:
            return None
        return self.implied_um_per_px / self.assumed_um_per_px


def check_scale(
    rgb: np.ndarray, assumed_um_per_px: float = REFERENCE_UM_PER_PX, model: str = "the model"
) -> ScaleCheck:
    """Measure ``rgb``'s nuclei and compare the pixel size they imply with ``assumed_um_per_px``.

    The warning names the model's expected pixel size and the remedy: the ``--um-per-px`` option
    (the predictor then resamples the image so that its nuclei have the trained size).
    """
    scale = typical_nucleus_radius(rgb)
    if scale.radius_px is None:
        return ScaleCheck(None, None, assumed_um_per_px)
    implied = REFERENCE_UM_PER_PX * REFERENCE_RADIUS_PX / scale.radius_px
    check = ScaleCheck(scale.radius_px, implied, assumed_um_per_px)
    ratio = check.ratio
    if 1 / WARN_FACTOR <= ratio <= WARN_FACTOR:
        return check
    size = "smaller" if ratio > 1 else "larger"
    times = ratio if ratio > 1 else 1 / ratio
    magnification = 10.0 / implied  # 0.25 µm/px ≈ 40×
    message = (
        f"magnification: the nuclei of this image look about {times:.1f}× {size} than those "
        f"{model} was trained on (typical radius {scale.radius_px:.1f} px here, "
        f"{REFERENCE_RADIUS_PX * REFERENCE_UM_PER_PX / assumed_um_per_px:.1f} px expected at "
        f"{assumed_um_per_px:g} µm/px), as if the image were about {implied:.2f} µm/px "
        f"(~{magnification:.0f}×); {model} expects {REFERENCE_UM_PER_PX:g} µm/px (40×). If the "
        f"image's pixel size is not {assumed_um_per_px:g} µm, give it with --um-per-px "
        f"(e.g. --um-per-px 0.5 for 20×) and the image is resampled to the trained size; "
        f"nuclei far off that size are missed or merged"
    )
    return ScaleCheck(scale.radius_px, implied, assumed_um_per_px, message)
