"""The whole-tile predictor's resampling: the model may see the image resampled by a factor
(1.5 for ``nuclei-small``: its nuclei then span more of the decoder's 1/4-resolution logits,
docs/instances.md) while everything the user gives and gets stays at the image's own size.

Coordinates: points are (x, y) = (column, row) in pixels of the image as given; a pixel's
centre is at its index, so ``x_model = (x + 0.5) · f − 0.5`` (the convention of
``skimage.transform.rescale``). Maps are (H, W) indexed [row, col].
"""

from __future__ import annotations

import numpy as np


def own_factor(model_type: str) -> float:
    """The factor ``model_type`` sees images resampled by on its own (``SamSpec.resample`` in
    models.registry: 1.5 for ``nuclei-small``; 1 for the others and for unknown names)."""
    from sampo_engine.models.registry import SPECS

    spec = SPECS.get(model_type)
    return float(spec.resample) if spec is not None else 1.0


def resample_factor(model_type: str, resample: float = 0.0, um_per_px: float = 0.0) -> float:
    """The factor the predictor resamples by: ``resample`` when given (≠ 0); else the model's
    own, times ``um_per_px`` / 0.25 when the image's pixel size is given (its nuclei are then
    shown at the trained size; ``PredictConfig.resample`` / ``um_per_px``)."""
    from sampo_engine.nuclei.scale import REFERENCE_UM_PER_PX

    if resample:
        return float(resample)
    factor = own_factor(model_type)
    if um_per_px:
        factor *= float(um_per_px) / REFERENCE_UM_PER_PX
    return factor


def assumed_um_per_px(model_type: str, factor: float) -> float:
    """The image pixel size (µm) that resampling by ``factor`` assumes (0.25 at the model's own
    factor, 0.5 at twice it)."""
    from sampo_engine.nuclei.scale import REFERENCE_UM_PER_PX

    return REFERENCE_UM_PER_PX * factor / own_factor(model_type)


def model_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    """(H, W) of an image of ``shape`` resampled by ``factor`` (rounded, at least 1 px)."""
    return tuple(max(1, int(round(s * factor))) for s in shape[:2])


def resample_image(rgb: np.ndarray, factor: float) -> np.ndarray:
    """(H, W, 3) uint8 → (H·f, W·f, 3) uint8, bilinear (area-averaged when shrinking)."""
    if factor == 1.0:
        return rgb
    from skimage.transform import resize

    out = resize(
        rgb,
        (*model_shape(rgb.shape, factor), rgb.shape[2]),
        order=1,
        preserve_range=True,
        anti_aliasing=factor < 1.0,
    )
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def points_to_model(points_xy: np.ndarray, factor: float) -> np.ndarray:
    """(N, 2) (x, y) in image pixels → the same points on the resampled image."""
    pts = np.asarray(points_xy, np.float32).reshape(-1, 2)
    if factor == 1.0:
        return pts
    return ((pts + 0.5) * factor - 0.5).astype(np.float32)


def prob_to_image(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(h, w) float probability on the resampled image → (H, W) float32 on the image (bilinear;
    area-averaged when shrinking)."""
    if prob.shape == tuple(shape):
        return prob
    from skimage.transform import resize

    smaller = prob.shape[0] > shape[0]
    out = resize(prob, shape, order=1, preserve_range=True, anti_aliasing=smaller)
    return out.astype(np.float32)


def labels_to_shape(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(h, w) int label map → (H, W) int32 by nearest neighbour (ids kept; a nucleus smaller
    than a pixel of the target may vanish)."""
    labels = np.asarray(labels)
    if labels.shape == tuple(shape):
        return labels.astype(np.int32, copy=False)
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0]).astype(int),
                      labels.shape[0] - 1)  # fmt: skip
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1]).astype(int),
                      labels.shape[1] - 1)  # fmt: skip
    return labels[np.ix_(rows, cols)].astype(np.int32, copy=False)
