"""How the whole-tile predictor cuts its T1 foreground probability into nuclei
(``PredictConfig.split_by``): the model's learned split head where it ships one
(:mod:`sampo_engine.models.split_head`, docs/split_head.md), else the distance-transform watershed
of the probability (:func:`~sampo_engine.predict.instances.split_instances`, docs/instances.md).

The head was trained on 40× images (about 0.25 µm/px) at their own resolution, so it runs on the
image resampled to 40× when its pixel size is given (``--um-per-px 0.5`` → ×2; otherwise the
image is taken as 40×, whatever ``--resample`` shows the model) and its nuclei are brought back
to the image's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sampo_engine.errors import ConfigError, DataError

#: ``PredictConfig.split_by``: auto = the head where the model ships one, else the watershed;
#: head+flips = the head averaged over the image and its three flips (~4× the head's time;
#: docs/split_head.md)
SPLITS = ("auto", "head", "head+flips", "watershed")
#: the settings that refuse a model without a head
NEEDS_HEAD = ("head", "head+flips")


@dataclass
class SplitResult:
    """Nuclei cut out of one image: (H, W) int32 ``labels`` (0 = background), the (H, W) bool
    foreground ``mask`` they were cut from, which method did it, and what the user should know."""

    labels: np.ndarray
    mask: np.ndarray
    method: str
    messages: list[str]


class NucleusSplitter:
    """The split of one predictor: resolves ``config.split_by`` for ``model_type`` once (loading
    the head), then :meth:`split` per prediction."""

    def __init__(self, config, model_type: str, device: str = "cpu"):
        from sampo_engine.models.split_head import shipped_split_head
        from sampo_engine.nuclei.scale import REFERENCE_UM_PER_PX

        self.config = config
        self.head, self.settings, self.messages = None, {}, []
        um_per_px = float(config.um_per_px or REFERENCE_UM_PER_PX)
        self.head_scale = um_per_px / REFERENCE_UM_PER_PX  # the image at 40×
        if config.split_by == "watershed":
            return
        try:
            found = shipped_split_head(model_type, device)
        except DataError as err:
            if config.split_by in NEEDS_HEAD:
                raise
            self.messages = [f"split head unusable, nuclei cut by the watershed instead: {err}"]
            return
        if found is None:
            if config.split_by in NEEDS_HEAD:
                raise ConfigError(
                    f"--split-by {config.split_by}: model {model_type} ships no split head (only "
                    f"nuclei-small does); use --split-by watershed or auto"
                )
            return
        self.head, self.settings = found
        self.device = device

    @property
    def method(self) -> str:
        return "head" if self.head is not None else "watershed"

    def split(self, prob: np.ndarray, rgb: np.ndarray, head: bool = True) -> SplitResult:
        """Nuclei of the (H, W) float probability ``prob`` of the (H, W, 3) uint8 image ``rgb``
        (both at the image's own size, [row, col]); ``head=False`` = the watershed whatever the
        setting (for probabilities the head was not trained on: the decoder's T2)."""
        from sampo_engine.predict.instances import split_instances

        cfg = self.config
        if self.head is None or not head:
            labels = split_instances(
                prob, threshold=cfg.threshold, min_size=cfg.min_size,
                min_distance=cfg.seed_distance, sigma=cfg.seed_sigma,
            )  # fmt: skip
            notes = list(self.messages) if head else []
            return SplitResult(labels, prob > cfg.threshold, "watershed", notes)
        return SplitResult(*self._by_head(prob, rgb), "head", list(self.messages))

    def _by_head(self, prob, rgb):
        from sampo_engine.models.split_head import predict_split_maps
        from sampo_engine.predict.instances import split_by_distance
        from sampo_engine.predict.resample import labels_to_shape, resample_image

        shape = prob.shape
        scale = self.head_scale
        if abs(scale - 1.0) > 1e-6:
            rgb = resample_image(rgb, scale)
            prob = _resize(prob, rgb.shape[:2])
        flips = self.config.split_by == "head+flips"
        fg, distance = predict_split_maps(self.head, rgb, prob, self.device, flips=flips)
        mask = fg > float(self.settings.get("threshold", 0.5))
        # sizes are the image's px (as --min-size says): at the head's scale they grow by scale²
        min_size = max(1, int(round(self.config.min_size * scale * scale)))
        labels = split_by_distance(
            mask, distance, float(self.settings.get("core_level", 0.5)), min_size
        )
        if labels.shape != shape:
            labels = labels_to_shape(labels, shape)
            mask = labels_to_shape(mask.astype(np.int32), shape) > 0
        return labels, mask


def _resize(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from skimage.transform import resize

    return resize(prob.astype(np.float32), shape, order=1, preserve_range=True).astype(np.float32)
