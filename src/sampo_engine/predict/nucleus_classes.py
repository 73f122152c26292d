"""T2 by nucleus: classify every nucleus of the tile from the clicked ones.

The decoder's T2 answer (``t2_mode="decoder"``) asks SAM to read the wanted type from the
clicks; the models we can train do not (``docs/results.md``). Here the decision is made per
nucleus instead (``docs/exemplars.md``):

1. the T1 instance map of the whole image — every nucleus — from the same clicks, all taken as
   positives (they all lie on nuclei); it is computed once per image and reused while the
   clicks change (:class:`NucleiIndex`);
2. :func:`~sampo_engine.nuclei.descriptors.describe_nuclei` for every nucleus, with the image
   encoder's features pooled from the cached tile embeddings;
3. :func:`~sampo_engine.nuclei.exemplars.classify_nuclei` fitted on the clicked nuclei.

``t2_mode``:

- ``exemplar``: a nucleus belongs to the answer when its classifier probability of the clicked
  type is ≥ ``class_threshold``;
- ``hybrid``: the mean of that probability and the decoder's T2 foreground probability averaged
  over the nucleus' pixels;
- ``decoder``: not handled here (the predictor's own T2 path).

Re-scoring with new clicks costs one classifier fit and one pass over the nuclei: no encoder,
no decoder, no instance split (``benchmarks/exemplar_bench.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

T2_MODES = ("decoder", "exemplar", "hybrid")
DEFAULT_T2_MODE = "exemplar"


#: weight of each descriptor group after standardisation: the neighbourhood's columns are the
#: mean of other nuclei's and count half (where cell types do not cluster they are noise, and
#: 3 + 3 examples cannot tell; docs/exemplars.md)
GROUP_WEIGHTS = {
    "morphology": 1.0,
    "stain": 1.0,
    "neighbourhood": 0.5,
    "embedding": 1.0,
    "type": 1.0,
    "general": 1.0,
}


def weighted_features(descriptors) -> np.ndarray:
    """(N, F) the standardised descriptor columns, each scaled by its group's weight."""
    from sampo_engine.nuclei.exemplars import standardise

    x = standardise(descriptors.features)
    weights = np.array([GROUP_WEIGHTS.get(g, 1.0) for g in descriptors.groups])
    return x * weights[None, :] if x.size else x


def type_head_columns(net, um_per_px: float):
    """The ``nucleus_types`` function of :func:`~sampo_engine.nuclei.descriptors.
    describe_nuclei` for a type head (:class:`~sampo_engine.models.type_head.NucleusTypeNet`)
    reading an image of ``um_per_px`` µm/px: its log-probability columns, group 'general' for
    the general types, 'type' for the training sets' own classes; None without a head."""
    from sampo_engine.models.type_head import GENERAL, type_columns

    if net is None:
        return None

    names = net.column_names()
    groups = tuple("general" if n.startswith(f"type_{GENERAL}_") else "type" for n in names)

    def columns(rgb, centroids):
        logp, _ = type_columns(net, rgb, centroids, um_per_px)
        return names, logp, groups

    return columns


def only_ids(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(H, W) int32: ``labels`` where the label is one of ``ids`` (ids unchanged), 0 elsewhere."""
    labels = np.asarray(labels)
    ids = np.asarray(ids, np.int64)
    top = max(int(labels.max()) if labels.size else 0, int(ids.max()) if ids.size else 0)
    lut = np.zeros(top + 1, np.int32)
    lut[ids] = ids
    return lut[labels]


@dataclass
class NucleiIndex:
    """The nuclei of one image and their descriptors, reused while the clicks change.

    Attributes:
        key: the embedding-cache key of the image (and model) they belong to.
        labels: (H, W) int32 instance map of every nucleus (T1).
        descriptors: :class:`~sampo_engine.nuclei.descriptors.NucleusDescriptors`.
        standardised: (N, F) standardised descriptor columns (click independent).
    """

    key: str
    labels: np.ndarray
    descriptors: object
    standardised: np.ndarray

    @classmethod
    def build(
        cls, key: str, image, labels, embeddings=None, grid=None, nucleus_types=None
    ) -> NucleiIndex:
        """Describe every nucleus of ``labels`` (H, W) on ``image`` (H, W, 3); ``nucleus_types``
        (optional): the type head's columns (:func:`type_head_columns`)."""
        from sampo_engine.nuclei.descriptors import describe_nuclei

        labels = np.asarray(labels, dtype=np.int32)
        desc = describe_nuclei(
            image, labels, embeddings=embeddings, grid=grid, nucleus_types=nucleus_types
        )
        return cls(key, labels, desc, weighted_features(desc))

    def mean_under(self, prob: np.ndarray) -> np.ndarray:
        """(N,) mean of the (H, W) map ``prob`` over each nucleus' pixels."""
        ids = self.descriptors.ids
        flat = self.labels.ravel()
        top = int(flat.max()) + 1 if flat.size else 1
        total = np.bincount(flat, weights=prob.ravel().astype(np.float64), minlength=top)
        count = np.bincount(flat, minlength=top)
        return (total[ids] / np.maximum(count[ids], 1)).astype(np.float32)

    def keep(self, rows: np.ndarray) -> np.ndarray:
        """(H, W) int32 map of the nuclei at ``rows`` (their ids unchanged), 0 elsewhere."""
        return only_ids(self.labels, self.descriptors.ids[rows])


@dataclass
class NucleusClasses:
    """Every nucleus with its class and probability.

    Attributes:
        nuclei: (H, W) int32 instance map of every nucleus.
        ids: (N,) label ids; ``classes`` (N,) class index; ``probability`` (N,) of that class
            (T2: ``probability`` is the probability of the clicked type, ``classes`` 0 = that
            type, 1 = not).
        probabilities: (N, K) per class.
        class_names: K names.
        messages: what the user should know (clicks on background, fallbacks).
        mode: 'exemplar' | 'hybrid' | 'classes'.
    """

    nuclei: np.ndarray
    ids: np.ndarray
    classes: np.ndarray
    probability: np.ndarray
    probabilities: np.ndarray
    class_names: list[str]
    messages: list[str]
    mode: str

    def label_probability(self) -> dict[int, float]:
        return {int(i): float(p) for i, p in zip(self.ids, self.probability)}


def score_t2(
    index: NucleiIndex,
    points_xy,
    labels,
    mode: str = DEFAULT_T2_MODE,
    decoder_prob: np.ndarray | None = None,
    method: str = "logreg",
    snap_radius: float = 6.0,
    class_name: str = "target",
) -> NucleusClasses:
    """Probability of the clicked type for every nucleus (positives 1, negatives 0)."""
    from sampo_engine.errors import ConfigError
    from sampo_engine.nuclei.exemplars import classify_nuclei, snap_clicks

    if mode not in ("exemplar", "hybrid"):
        raise ConfigError(f"score_t2 handles t2_mode exemplar or hybrid, not {mode!r}")
    labels = np.asarray(labels).reshape(-1)
    snap = snap_clicks(index.labels, points_xy, index.descriptors, snap_radius)
    scores = classify_nuclei(
        index.descriptors,
        snap,
        np.where(labels == 1, 0, 1),
        2,
        method=method,
        standardised=index.standardised,
        one_vs_rest=True,
    )
    p = scores.probabilities[:, 0].astype(np.float32)
    if mode == "hybrid":
        if decoder_prob is None:
            raise ConfigError("t2_mode hybrid needs the decoder's T2 probability map")
        p = 0.5 * (p + index.mean_under(decoder_prob))
        p[scores.exemplar_rows] = (scores.exemplar_classes == 0).astype(np.float32)
    probs = np.stack([p, 1 - p], axis=1)
    return NucleusClasses(
        index.labels,
        index.descriptors.ids,
        (p < 0.5).astype(np.int64),
        p,
        probs,
        [class_name, "other"],
        scores.messages,
        mode,
    )


def score_classes(
    index: NucleiIndex,
    points_xy,
    point_classes,
    class_names: list[str],
    method: str = "logreg",
    snap_radius: float = 6.0,
) -> NucleusClasses:
    """One class for every nucleus from clicks of several named classes.

    Args:
        point_classes: (P,) class index 0..K-1 of each click (into ``class_names``).
        class_names: K ≥ 2 names.
    """
    from sampo_engine.errors import DataError
    from sampo_engine.nuclei.exemplars import classify_nuclei, snap_clicks

    point_classes = np.asarray(point_classes, np.int64).reshape(-1)
    k = len(class_names)
    if k < 2:
        raise DataError("name at least two classes and click a few nuclei of each")
    if point_classes.size and (point_classes.min() < 0 or point_classes.max() >= k):
        raise DataError(f"click classes must be 0..{k - 1} (one per named class)")
    snap = snap_clicks(index.labels, points_xy, index.descriptors, snap_radius)
    scores = classify_nuclei(
        index.descriptors, snap, point_classes, k, method=method, standardised=index.standardised
    )
    missing = [class_names[c] for c in range(k) if c not in set(scores.exemplar_classes.tolist())]
    messages = list(scores.messages)
    if missing:
        messages.append(
            f"no nucleus was clicked as {', '.join(missing)}: no nucleus is given that class; "
            f"click a few of each class"
        )
    probability = scores.probabilities[np.arange(len(scores.classes)), scores.classes]
    return NucleusClasses(
        index.labels,
        index.descriptors.ids,
        scores.classes,
        probability.astype(np.float32),
        scores.probabilities,
        list(class_names),
        messages,
        "classes",
    )
