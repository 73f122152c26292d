"""Few-shot nucleus classification from the user's clicks ("more like these").

The clicked nuclei are the exemplars: a positive click names its nucleus an example of the wanted
type, a negative click an example of what is not wanted — or, with named classes, each click
names its nucleus an example of one class. A scikit-learn classifier fitted on the exemplars'
:class:`~sampo_engine.nuclei.descriptors.NucleusDescriptors` gives every nucleus of the tile a
probability per class.

Steps (:func:`classify_nuclei`):

1. **Snap** (:func:`snap_clicks`): a click inside a nucleus names that nucleus; a click on
   background names the nucleus whose outline is nearest, if within ``snap_radius`` px, else it
   is reported ("click 2 (x=…, y=…) is on background") and ignored. A nucleus named by two
   classes is dropped from the exemplars, with a message.
2. **Standardise** every descriptor column over all nuclei of the tile (median and
   inter-quartile range, clipped to ±5: robust to a few giant or empty segments). The statistics
   come from the unlabelled nuclei too, which is what makes 3 + 3 exemplars usable.
3. **Classify** with one of :data:`METHODS`:

   - ``logreg`` — class-balanced L2 logistic regression on the exemplars
     (:class:`sklearn.linear_model.LogisticRegression`, C = ``C``);
   - ``spreading`` — label spreading over the k-nearest-neighbour graph of all nuclei
     (:class:`sklearn.semi_supervised.LabelSpreading`): unlabelled nuclei carry the labels
     along dense regions of descriptor space;
   - ``nearest`` — each nucleus takes the class of its nearest exemplar (the classical floor's
     rule), as a reference;
   - ``types`` — with a type head's general-type columns among the descriptors: the general
     type each clicked class points at (:mod:`~sampo_engine.nuclei.general_types`), falling back
     to ``logreg`` with a message when the clicks point at none;
   - ``blend`` — the mean of ``types`` and ``logreg``.

Fallbacks, never a silent empty answer: with exemplars of one class only (positives, no
negative), the ``max(3, 25 %)`` nuclei least like them (farthest from their mean in the
standardised space) stand in as the other class, and a message says so; with no exemplar at all
(every click on background) :class:`~sampo_engine.errors.DataError` names each click.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sampo_engine.errors import DataError

METHODS = ("logreg", "spreading", "nearest", "types", "blend")
DEFAULT_METHOD = "logreg"
#: how far from a nucleus a click on background may lie and still name it, in px
DEFAULT_SNAP_RADIUS = 6.0
#: L2 strength of the logistic regression (smaller = stronger; few exemplars need strong)
DEFAULT_C = 0.5
#: neighbours of the label-spreading graph
DEFAULT_NEIGHBOURS = 10
#: share of nuclei standing in as the other class when only one class was clicked
PSEUDO_NEGATIVE_SHARE = 0.25


@dataclass
class ClickSnap:
    """Where each click landed.

    Attributes:
        rows: (P,) row of the named nucleus in the descriptors, -1 when none.
        distance: (P,) px from the click to that nucleus (0 inside it; inf when none).
        messages: one plain sentence per click that named no nucleus.
    """

    rows: np.ndarray
    distance: np.ndarray
    messages: list[str] = field(default_factory=list)


@dataclass
class NucleusScores:
    """Per-nucleus class probabilities.

    Attributes:
        probabilities: (N, K) float32, rows sum to 1; column k is class k.
        classes: (N,) int argmax class.
        exemplar_rows: (M,) the nuclei the classifier was fitted on; ``exemplar_classes`` (M,).
        method: the classifier used.
        messages: what the user should know (clicks ignored, fallbacks taken).
    """

    probabilities: np.ndarray
    classes: np.ndarray
    exemplar_rows: np.ndarray
    exemplar_classes: np.ndarray
    method: str
    messages: list[str] = field(default_factory=list)

    def probability_of(self, k: int) -> np.ndarray:
        return self.probabilities[:, k]


def snap_clicks(
    labels: np.ndarray, points_xy, descriptors, snap_radius: float = DEFAULT_SNAP_RADIUS
) -> ClickSnap:
    """The nucleus each click names (see the module docstring).

    Args:
        labels: (H, W) instance map the descriptors were computed from.
        points_xy: (P, 2) (x, y) = (column, row) pixels.
        descriptors: :class:`~sampo_engine.nuclei.descriptors.NucleusDescriptors` of ``labels``.
        snap_radius: px.
    """
    from scipy import ndimage as ndi

    pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    h, w = labels.shape
    rows = np.full(len(pts), -1, np.int64)
    dist = np.full(len(pts), np.inf)
    messages = []
    need = []
    for i, (x, y) in enumerate(pts):
        r, c = int(round(min(max(y, 0), h - 1))), int(round(min(max(x, 0), w - 1)))
        lab = int(labels[r, c])
        if lab:
            rows[i] = descriptors.index_of([lab])[0]
            dist[i] = 0.0
        else:
            need.append((i, r, c))
    if need:
        radius = int(np.ceil(snap_radius))
        for i, r, c in need:
            r0, r1 = max(r - radius, 0), min(r + radius + 1, h)
            c0, c1 = max(c - radius, 0), min(c + radius + 1, w)
            window = labels[r0:r1, c0:c1]
            if window.any():
                d, (ir, ic) = ndi.distance_transform_edt(window == 0, return_indices=True)
                d_here = d[r - r0, c - c0]
                if d_here <= snap_radius:
                    lab = int(window[ir[r - r0, c - c0], ic[r - r0, c - c0]])
                    rows[i] = descriptors.index_of([lab])[0]
                    dist[i] = float(d_here)
                    continue
            x, y = pts[i]
            messages.append(
                f"click {i + 1} (x={x:.0f}, y={y:.0f}) is on background: no nucleus within "
                f"{snap_radius:g} px, so it was ignored; click on a nucleus"
            )
    return ClickSnap(rows, dist, messages)


def standardise(features: np.ndarray) -> np.ndarray:
    """Columns centred on their median and scaled by their inter-quartile range, clipped ±5."""
    x = np.asarray(features, np.float64)
    if len(x) == 0:
        return x
    med = np.median(x, axis=0)
    q1, q3 = np.percentile(x, [25, 75], axis=0)
    scale = q3 - q1
    std = x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, np.where(std > 1e-9, std, 1.0))
    return np.clip((x - med) / scale, -5.0, 5.0)


def _exemplar_table(snap: ClickSnap, click_classes) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Unique (nucleus row, class) exemplars; nuclei named by two classes are dropped."""
    click_classes = np.asarray(click_classes, np.int64).reshape(-1)
    named: dict[int, set[int]] = {}
    for row, k in zip(snap.rows.tolist(), click_classes.tolist()):
        if row >= 0:
            named.setdefault(row, set()).add(k)
    messages = []
    rows, classes = [], []
    for row, ks in sorted(named.items()):
        if len(ks) > 1:
            messages.append(
                "one nucleus was clicked as two different classes (e.g. positive and negative); "
                "it was left out of the examples"
            )
            continue
        rows.append(row)
        classes.append(next(iter(ks)))
    return np.asarray(rows, np.int64), np.asarray(classes, np.int64), messages


def _pseudo_other(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows of the nuclei least like ``rows`` (farthest from their mean)."""
    d = np.linalg.norm(x - x[rows].mean(axis=0, keepdims=True), axis=1)
    d[rows] = -np.inf
    count = max(3, int(round(PSEUDO_NEGATIVE_SHARE * len(x))))
    count = min(count, len(x) - len(rows))
    return np.argsort(-d, kind="stable")[:count]


def _general_types(descriptors, rows, classes, num_classes, one_vs_rest):
    """(N, K) probabilities from the general types the clicks point at, or None; and a message."""
    from sampo_engine.nuclei.general_types import match_general_types

    groups = getattr(descriptors, "groups", ())
    keep = [i for i, g in enumerate(groups) if g == "general"]
    if not keep:
        return None, (
            "no type head described these nuclei (--type-head off, or none shipped): the "
            "nuclei were classified by their descriptors"
        )
    names = tuple(descriptors.names[i].rsplit("_", 1)[-1] for i in keep)
    p = np.exp(descriptors.features[:, keep].astype(np.float64))
    p /= np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
    typed, said = match_general_types(p, rows, classes, num_classes, names, one_vs_rest)
    if typed is None:
        said += "; the nuclei were classified by their descriptors instead"
    return typed, said


def _balanced_weights(classes: np.ndarray) -> np.ndarray:
    """Sample weights that give every class the same total (1): 3 positives weigh as much as
    5 negatives."""
    weights = np.zeros(len(classes))
    for k in np.unique(classes):
        weights[classes == k] = 1.0 / (classes == k).sum()
    return weights


def classify_nuclei(
    descriptors,
    snap: ClickSnap,
    click_classes,
    num_classes: int,
    method: str = DEFAULT_METHOD,
    groups: tuple[str, ...] = ("morphology", "stain", "neighbourhood", "embedding"),
    C: float = DEFAULT_C,
    neighbours: int = DEFAULT_NEIGHBOURS,
    standardised: np.ndarray | None = None,
    one_vs_rest: bool = False,
) -> NucleusScores:
    """Class probabilities for every nucleus from the clicked exemplars.

    Args:
        descriptors: the tile's :class:`~sampo_engine.nuclei.descriptors.NucleusDescriptors`.
        snap: :func:`snap_clicks` of the clicks.
        click_classes: (P,) class index 0..K-1 of each click (binary T2: 0 = wanted type,
            1 = not wanted).
        num_classes: K ≥ 2.
        method: one of :data:`METHODS`.
        groups: descriptor groups used.
        standardised: :func:`standardise` of the selected columns, if already computed (it does
            not depend on the clicks).
        one_vs_rest: binary T2 (class 0 = the wanted type, 1 = anything else): ``types`` matches
            class 0 only.
    """
    if method not in METHODS:
        raise DataError(f"unknown classifier {method!r}; choose one of {', '.join(METHODS)}")
    if num_classes < 2:
        raise DataError("few-shot classification needs at least two classes")
    n = len(descriptors)
    messages = list(snap.messages)
    rows, classes, conflicts = _exemplar_table(snap, click_classes)
    messages += conflicts
    if n == 0:
        raise DataError("no nuclei were found in the image, so there is nothing to classify")
    if len(rows) == 0:
        raise DataError(
            "none of the clicks names a nucleus: "
            + "; ".join(snap.messages or ["every clicked nucleus was named twice"])
        )
    x = standardise(descriptors.select(groups)) if standardised is None else standardised
    present = np.unique(classes)
    fit_rows, fit_classes = rows, classes
    if len(present) == 1 and len(rows) == n:
        # every nucleus found was clicked, as one kind: none is left to stand in for the other
        probs = np.zeros((n, num_classes), np.float32)
        probs[:, present[0]] = 1.0
        messages.append(
            "every nucleus found was clicked, all as one kind, so there were none to tell them "
            "from: each is answered as that kind; add a negative click (or a click of another "
            "class) on a nucleus of another kind"
        )
        return NucleusScores(probs, probs.argmax(axis=1), rows, classes, method, messages)
    if len(present) == 1:
        other = _pseudo_other(x, rows)
        stand_in = 1 if present[0] == 0 else 0
        fit_rows = np.concatenate([rows, other])
        fit_classes = np.concatenate([classes, np.full(len(other), stand_in)])
        messages.append(
            "only one kind of nucleus was clicked: the nuclei least like them stood in as "
            "the other kind; add a negative click (or a click of another class) for a sharper "
            "answer"
        )
    probs = np.zeros((n, num_classes), np.float64)
    fitted = np.unique(fit_classes)
    typed, run = None, method
    if method in ("types", "blend"):
        typed, said = _general_types(descriptors, rows, classes, num_classes, one_vs_rest)
        if not (method == "blend" and "no type head" in said):
            messages.append(said)  # blend without a head is logreg: nothing to say
        # the descriptors' logistic regression: blend's other half, or types' fallback
        run = "logreg" if method == "blend" or typed is None else "none"
    if run == "none":
        probs = typed
    elif run == "nearest":
        d = np.linalg.norm(x[:, None, :] - x[fit_rows][None], axis=2)  # (N, M)
        per_class = np.stack(
            [d[:, fit_classes == k].min(axis=1) for k in fitted], axis=1
        )  # (N, K')
        soft = np.exp(-(per_class - per_class.min(axis=1, keepdims=True)))
        probs[:, fitted] = soft / soft.sum(axis=1, keepdims=True)
    elif run == "logreg":
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=C, max_iter=2000)
        clf.fit(x[fit_rows], fit_classes, sample_weight=_balanced_weights(fit_classes))
        probs[:, clf.classes_] = clf.predict_proba(x)
        if typed is not None:  # blend
            probs = 0.5 * (probs + typed)
    else:
        from sklearn.semi_supervised import LabelSpreading

        y = np.full(n, -1, np.int64)
        y[fit_rows] = fit_classes
        k = int(min(neighbours, max(n - 1, 1)))
        model = LabelSpreading(kernel="knn", n_neighbors=k, alpha=0.2, max_iter=60)
        model.fit(x, y)
        dist = np.nan_to_num(model.label_distributions_, nan=0.0)
        probs[:, model.classes_] = dist
        empty = probs.sum(axis=1) <= 0  # a component of the graph no label reached
        probs[np.ix_(empty, fitted)] = 1.0 / len(fitted)
    probs /= np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)
    # the user's own exemplars are what they said they are
    probs[rows] = 0.0
    probs[rows, classes] = 1.0
    return NucleusScores(
        probs.astype(np.float32),
        probs.argmax(axis=1),
        rows,
        classes,
        method,
        messages,
    )
