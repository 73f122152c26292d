"""The classical floor: hematoxylin thresholding + watershed, no learning.

It answers the same queries as the models, so its row in a report says what a pipeline without
any training reaches on the same crops and clicks:

- nuclei: colour deconvolution (:func:`skimage.color.rgb2hed`), the hematoxylin channel smoothed
  (σ = 1 px) and thresholded by Otsu, holes filled, then split into instances by the same
  distance-transform watershed the predictor uses (:func:`~sampo_engine.predict.instances.split_instances`);
- T1: every instance found;
- T2: each instance is kept when its colour/size features lie nearer to an instance under a
  positive click than to one under a negative click (nearest neighbour on standardised
  mean R, G, B, mean hematoxylin and log area); without negative clicks on nuclei, every instance.

The floor ignores the intent: it reads only the crop and the clicks, as a user would give them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

NAME = "classical floor (hematoxylin + watershed)"
_LOGIT = 8.0  # the floor's masks as logits: +8 inside, -8 outside


def _hematoxylin(image: np.ndarray) -> np.ndarray:
    """(H, W) hematoxylin channel of an RGB uint8 image, by colour deconvolution."""
    from skimage.color import rgb2hed

    return rgb2hed(image)[..., 0]


def hematoxylin_instances(image: np.ndarray, hematoxylin: np.ndarray | None = None) -> np.ndarray:
    """Instance labels (H, W) int32 of the dark-blue nuclei in an RGB uint8 image (H, W, 3).

    ``hematoxylin``: the image's hematoxylin channel (H, W), if already computed.
    """
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    from sampo_engine.predict.instances import split_instances

    if hematoxylin is None:
        hematoxylin = _hematoxylin(image)
    hematoxylin = ndi.gaussian_filter(hematoxylin, 1.0)
    if float(hematoxylin.max()) - float(hematoxylin.min()) < 1e-6:
        return np.zeros(image.shape[:2], np.int32)
    mask = ndi.binary_fill_holes(hematoxylin > threshold_otsu(hematoxylin))
    return split_instances(mask)


def instance_features(
    image: np.ndarray, inst: np.ndarray, hematoxylin: np.ndarray | None = None
) -> np.ndarray:
    """(N, 5) standardised features of instances 1..N: mean R, G, B, hematoxylin, log area."""
    from scipy import ndimage as ndi

    if hematoxylin is None:
        hematoxylin = _hematoxylin(image)
    n = int(inst.max())
    ids = np.arange(1, n + 1)
    channels = [image[..., c].astype(np.float32) for c in range(3)]
    channels.append(hematoxylin.astype(np.float32))
    feats = [np.asarray(ndi.mean(ch, inst, ids)) for ch in channels]
    feats.append(np.log1p(np.bincount(inst.ravel(), minlength=n + 1)[1:]))
    x = np.stack(feats, axis=1)
    return (x - x.mean(0)) / (x.std(0) + 1e-6)


def clicked_selection(
    image: np.ndarray, inst: np.ndarray, points, labels, features: np.ndarray | None = None
) -> np.ndarray:
    """Mask (H, W) bool of the instances chosen by the clicks (see the module docstring).

    Args:
        image: (H, W, 3) uint8.
        inst: (H, W) int32 instance labels 1..N.
        points: (P, 2) click positions as (x, y) pixels.
        labels: (P,) 1 = positive, 0 = negative (other values are padding and ignored).
        features: :func:`instance_features` of ``inst``, if already computed (they do not
            depend on the clicks, so one crop's prompt sets share them).
    """
    n = int(inst.max())
    if n == 0:
        return np.zeros(inst.shape, bool)
    h, w = inst.shape
    hit = {1: set(), 0: set()}
    for (x, y), lab in zip(np.asarray(points), np.asarray(labels)):
        if int(lab) in hit:
            r, c = min(max(int(y), 0), h - 1), min(max(int(x), 0), w - 1)
            if inst[r, c]:
                hit[int(lab)].add(int(inst[r, c]))
    pos, neg = sorted(hit[1] - hit[0]), sorted(hit[0])
    if not neg or not pos:
        return inst > 0
    x = instance_features(image, inst) if features is None else features
    d_pos = np.linalg.norm(x[:, None] - x[np.array(pos) - 1][None], axis=2).min(1)
    d_neg = np.linalg.norm(x[:, None] - x[np.array(neg) - 1][None], axis=2).min(1)
    keep = np.concatenate([[False], d_pos <= d_neg])
    keep[neg] = False
    return keep[inst]


class ClassicalFloor:
    """Stands in for a model in :func:`~sampo_engine.scoring.queries.predict_queries`."""

    name = NAME

    def predict_queries(
        self,
        queries: Sequence,
        prompt_sets: Sequence[Sequence],
        batch_size: int = 8,
        progress: Callable[[int, int], None] | None = None,
        digest=None,
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield (query index, logits (K, 3, S, S), iou_pred (K, 3)) as the models do.

        The three slots hold the same mask; the nuclei of a crop are found once for all its
        queries. Queries go in the models' batches and order, so ``digest`` sees the same
        packed prompts as a model's would.
        """
        from collections import OrderedDict

        from sampo_engine.prompts import pack
        from sampo_engine.scoring.queries import query_batches

        cache: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        done = 0
        for batch in query_batches(prompt_sets, batch_size):
            packed = [pack(list(prompt_sets[i])) for i in batch]  # (K, P, 2), (K, P) each
            if digest is not None:
                digest.update(np.stack([p for p, _ in packed]).tobytes())
                digest.update(np.stack([lab for _, lab in packed]).tobytes())
            for i, (points, labels) in zip(batch, packed):
                q = queries[i]
                if q.name not in cache:  # per crop, once: its nuclei and their features
                    hematoxylin = _hematoxylin(q.image)
                    inst = hematoxylin_instances(q.image, hematoxylin)
                    cache[q.name] = (inst, instance_features(q.image, inst, hematoxylin))
                    if len(cache) > 64:
                        cache.popitem(last=False)
                inst, features = cache[q.name]
                k = len(points)
                logits = np.empty((k, 3, *inst.shape), np.float32)
                for j in range(k):
                    mask = clicked_selection(q.image, inst, points[j], labels[j], features)
                    logits[j] = np.where(mask, _LOGIT, -_LOGIT)[None]
                yield i, logits, np.ones((k, 3), np.float32)
            done += len(batch)
            if progress is not None:
                progress(done, len(queries))


class ClassicalTilePredictor:
    """The floor on whole images, with the slice of the
    :class:`~sampo_engine.predict.predictor.TilePredictor` interface that
    :func:`~sampo_engine.eval.whole.score_whole_images` uses.

    T1: every hematoxylin nucleus of the image. T2, by ``config.t2_mode``: ``decoder`` (the
    floor has no decoder: its own nearest-look rule, :func:`clicked_selection`) or
    ``exemplar`` / ``hybrid`` (the few-shot classifier of
    :mod:`~sampo_engine.predict.nucleus_classes` on the floor's nuclei: morphology and stain,
    and the type head's columns with ``type_head`` — ``PredictConfig.type_head``; the image is
    taken as 40×). It separates what the classifier gains from what a learned segmentation
    gains.
    """

    name = NAME

    def __init__(self, tile: int = 224, overlap: int = 32, type_head: str = "off"):
        from types import SimpleNamespace

        from sampo_engine.models.type_head import resolve_type_head
        from sampo_engine.predict.config import DEFAULT_CLASSIFIER

        self.type_head, _ = resolve_type_head(type_head)
        classifier = DEFAULT_CLASSIFIER if self.type_head is not None else "logreg"
        self.config = SimpleNamespace(
            t2_mode="exemplar", classifier=classifier, class_threshold=0.5, snap_radius=6.0
        )
        self._tile, self._overlap = tile, overlap
        self.tile_grid = None
        self._image = self._inst = self._index = None

    def set_image(self, image: np.ndarray) -> None:
        from sampo_engine.predict.tiling import make_grid
        from sampo_engine.utils.imageio import to_rgb_uint8

        self._image = to_rgb_uint8(image)
        self._inst = hematoxylin_instances(self._image)
        self._index = None
        h, w = self._image.shape[:2]
        self.tile_grid = make_grid(h, w, self._tile, self._overlap)

    def forget_nuclei(self) -> None:
        self._index = None

    def predict(self, points_xy, labels, task: str = "t1"):
        from types import SimpleNamespace

        from sampo_engine.nuclei.scale import REFERENCE_UM_PER_PX
        from sampo_engine.predict.nucleus_classes import NucleiIndex, score_t2, type_head_columns

        inst = self._inst
        nucleus = None
        if task == "t1":
            answer = inst
        elif self.config.t2_mode == "decoder":
            answer = np.where(clicked_selection(self._image, inst, points_xy, labels), inst, 0)
        else:
            if self._index is None:
                types = None
                if self.type_head is not None:
                    types = type_head_columns(self.type_head, REFERENCE_UM_PER_PX)
                self._index = NucleiIndex.build("classical", self._image, inst, nucleus_types=types)
            nucleus = score_t2(
                self._index, points_xy, labels, "exemplar",
                method=self.config.classifier, snap_radius=self.config.snap_radius,
            )  # fmt: skip
            keep = np.flatnonzero(nucleus.probability >= self.config.class_threshold)
            answer = self._index.keep(keep)
        return SimpleNamespace(
            mask=answer > 0,
            labels=answer,
            num_tiles=len(self.tile_grid),
            tiles_with_prompts=len(self.tile_grid),
            tiles_propagated=0,
            nucleus=nucleus,
            messages=[] if nucleus is None else nucleus.messages,
        )
