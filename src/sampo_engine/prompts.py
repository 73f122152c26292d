"""Point prompts: intents, online prompt-centric preference mining, the evaluation sampler.

An *intent* is T1 (all nuclei) or T2(c) (all nuclei of class c); its target mask Y_t is the union
of those nuclei. A *prompt set* is up to 3 positive + 3 negative points expressing that intent.

Mining (docs/method.md) synthesises K prompt sets per sample that vary in quality — number of
positives (1–3) and negatives (0–3), placement at a nucleus centre or near its rim, and, with a
probability that grows as the set's quality level falls, ambiguous points (T2: a "positive" on a
nucleus of another class; T1: a positive just outside a nucleus; a negative on a target nucleus'
rim). No quality order is assumed: the IoU of each output with Y_t ranks them afterwards.

Evaluation uses a separate seeded sampler (3 + 3 points at nucleus centres, negatives on other
classes' nuclei for T2, on clear background otherwise), seeded by (seed, sample name, intent) so
every compared method sees identical prompts.

All points are (x, y) = (column, row) in pixels of the array they were drawn from.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

MAX_POSITIVE = 3
MAX_NEGATIVE = 3
MAX_POINTS = MAX_POSITIVE + MAX_NEGATIVE


@dataclass(frozen=True)
class Intent:
    """T1 (``task='t1'``, all nuclei) or T2 (``task='t2'``, nuclei of ``class_id``)."""

    task: str
    class_id: int = 0

    def __str__(self) -> str:
        return "T1" if self.task == "t1" else f"T2(class {self.class_id})"


def target_mask(inst: np.ndarray, cls: np.ndarray | None, intent: Intent) -> np.ndarray:
    """(H, W) bool: the pixels of the nuclei the intent asks for."""
    if intent.task == "t1":
        return inst > 0
    return (inst > 0) & (cls == intent.class_id)


def available_intents(inst: np.ndarray, cls: np.ndarray | None, task: str) -> list[Intent]:
    """The intents a crop supports for ``task`` in {'t1', 't2', 'both'}; T2 needs a class map."""
    intents: list[Intent] = []
    if task in ("t1", "both") and inst.any():
        intents.append(Intent("t1"))
    if task in ("t2", "both") and cls is not None:
        intents += [Intent("t2", int(c)) for c in np.unique(cls[inst > 0]) if c > 0]
    return intents


@dataclass
class PromptSet:
    """points: (P, 2) float32 (x, y); labels: (P,) int64, 1 positive / 0 negative."""

    points: np.ndarray
    labels: np.ndarray

    @property
    def num_positive(self) -> int:
        return int((self.labels == 1).sum())

    @property
    def num_negative(self) -> int:
        return int((self.labels == 0).sum())


def pack(
    prompt_sets: list[PromptSet], max_points: int = MAX_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """Stack K prompt sets into (K, max_points, 2) float32 points and (K, max_points) int64
    labels, padded with label -1 (SAM's "not a point")."""
    k = len(prompt_sets)
    points = np.zeros((k, max_points, 2), np.float32)
    labels = np.full((k, max_points), -1, np.int64)
    for i, ps in enumerate(prompt_sets):
        n = len(ps.labels)
        points[i, :n] = ps.points
        labels[i, :n] = ps.labels
    return points, labels


class _Geometry:
    """Per-sample lookups: nucleus centres and rims, background near and far from nuclei."""

    def __init__(self, inst: np.ndarray, cls: np.ndarray | None):
        self.inst = inst
        self.cls = cls
        self.objects = ndimage.find_objects(inst)
        background = inst == 0
        # distance of each background pixel to the nearest nucleus
        self.bg_dist = ndimage.distance_transform_edt(background) if background.any() else None
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def ids(self, mask_classes=None, exclude_class=None) -> np.ndarray:
        ids = np.unique(self.inst)
        ids = ids[ids > 0]
        if self.cls is None or (mask_classes is None and exclude_class is None):
            return ids
        classes = np.array([self.class_of(i) for i in ids])
        if mask_classes is not None:
            return ids[classes == mask_classes]
        return ids[classes != exclude_class]

    def class_of(self, nucleus: int) -> int:
        sl = self.objects[nucleus - 1]
        values = self.cls[sl][self.inst[sl] == nucleus]
        return int(np.bincount(values).argmax()) if values.size else 0

    def _nucleus(self, nucleus: int) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) coords of its interior sorted from the centre out, and its rim coords."""
        if nucleus not in self._cache:
            sl = self.objects[nucleus - 1]
            crop = np.pad(self.inst[sl] == nucleus, 1)
            dist = ndimage.distance_transform_edt(crop)[1:-1, 1:-1]
            rows, cols = np.nonzero(dist > 0)
            d = dist[rows, cols]
            order = np.argsort(-d, kind="stable")
            coords = np.stack([rows + sl[0].start, cols + sl[1].start], 1)
            rim = coords[d <= 2]
            self._cache[nucleus] = (coords[order], rim if len(rim) else coords)
        return self._cache[nucleus]

    def centre(self, nucleus: int, rng: np.random.Generator, jitter: int = 0) -> np.ndarray:
        coords, _ = self._nucleus(nucleus)
        top = max(1, min(len(coords), 1 + jitter))
        return coords[rng.integers(top)]

    def rim(self, nucleus: int, rng: np.random.Generator) -> np.ndarray:
        _, rim = self._nucleus(nucleus)
        return rim[rng.integers(len(rim))]

    def background(self, rng: np.random.Generator, min_dist: float = 4.0, max_dist: float = np.inf):
        if self.bg_dist is None:
            return None
        ok = np.flatnonzero((self.bg_dist >= min_dist) & (self.bg_dist <= max_dist))
        if ok.size == 0:
            ok = np.flatnonzero(self.bg_dist > 0)
            if ok.size == 0:
                return None
        return np.array(np.unravel_index(ok[rng.integers(ok.size)], self.inst.shape))


def _to_xy(rc_points: list[np.ndarray]) -> np.ndarray:
    if not rc_points:
        return np.zeros((0, 2), np.float32)
    rc = np.asarray(rc_points, np.float32)
    return rc[:, ::-1].copy()


@dataclass(frozen=True)
class MiningConfig:
    """How varied the K mined prompt sets are."""

    num_sets: int = 4
    p_ambiguous: float = 0.5  # chance of an ambiguous point in the worst-quality set
    p_boundary: float = 0.7  # chance a positive sits on the rim in the worst-quality set


def mine_prompt_sets(
    inst: np.ndarray,
    cls: np.ndarray | None,
    intent: Intent,
    rng: np.random.Generator,
    config: MiningConfig = MiningConfig(),
    geometry: _Geometry | None = None,
) -> list[PromptSet]:
    """K prompt sets for one intent, spread over quality levels from clean to degraded.

    Quality levels q are evenly spaced in [0, 1] (shuffled): q = 1 gives 3 centred positives
    and informative negatives; q = 0 gives 1 positive, often on a rim, and ambiguous points.
    """
    geo = geometry or _Geometry(inst, cls)
    targets = geo.ids(mask_classes=intent.class_id) if intent.task == "t2" else geo.ids()
    if len(targets) == 0:
        raise ValueError(f"no nucleus of intent {intent} in this sample")
    others = geo.ids(exclude_class=intent.class_id) if intent.task == "t2" else np.zeros(0, int)
    k = config.num_sets
    levels = np.linspace(0.0, 1.0, k) if k > 1 else np.ones(1)
    rng.shuffle(levels)
    sets = []
    for q in levels:
        p_amb = (1 - q) * config.p_ambiguous
        p_rim = (1 - q) * config.p_boundary
        n_pos = int(np.clip(1 + round(2 * q + rng.uniform(-0.5, 0.5)), 1, MAX_POSITIVE))
        n_neg = int(np.clip(round(3 * q + rng.uniform(-1.0, 1.0)), 0, MAX_NEGATIVE))
        chosen = rng.choice(targets, size=min(n_pos, len(targets)), replace=False)
        pos = []
        for nucleus in chosen:
            if rng.random() < p_amb:
                if intent.task == "t2" and len(others):
                    pos.append(geo.centre(int(rng.choice(others)), rng, jitter=3))
                    continue
                point = geo.background(rng, min_dist=1, max_dist=3)
                if point is not None:
                    pos.append(point)
                    continue
            if rng.random() < p_rim:
                pos.append(geo.rim(int(nucleus), rng))
            else:
                pos.append(geo.centre(int(nucleus), rng, jitter=int(6 * (1 - q))))
        neg = []
        for _ in range(n_neg):
            if rng.random() < p_amb:
                neg.append(geo.rim(int(rng.choice(targets)), rng))
            elif intent.task == "t2" and len(others) and rng.random() < 0.7:
                neg.append(geo.centre(int(rng.choice(others)), rng, jitter=3))
            else:
                point = geo.background(rng)
                if point is not None:
                    neg.append(point)
        points = _to_xy(pos + neg)
        labels = np.array([1] * len(pos) + [0] * len(neg), np.int64)
        sets.append(PromptSet(points, labels))
    return sets


def eval_seed(seed: int, sample_name: str, intent: Intent, repeat: int = 0) -> int:
    """A stable seed for the evaluation prompts of one (sample, intent): same for every method."""
    return zlib.crc32(f"{seed}|{sample_name}|{intent.task}|{intent.class_id}|{repeat}".encode())


def sample_eval_prompts(
    inst: np.ndarray,
    cls: np.ndarray | None,
    intent: Intent,
    rng: np.random.Generator,
    num_positive: int = MAX_POSITIVE,
    num_negative: int = MAX_NEGATIVE,
) -> PromptSet:
    """The evaluation prompt set: ``num_positive`` centres of distinct target nuclei (repeating
    nuclei only when there are too few) and ``num_negative`` negatives — on nuclei of other
    classes first for T2, then on background at least 4 px from any nucleus."""
    geo = _Geometry(inst, cls)
    targets = geo.ids(mask_classes=intent.class_id) if intent.task == "t2" else geo.ids()
    if len(targets) == 0:
        raise ValueError(f"no nucleus of intent {intent} in this sample")
    chosen = rng.choice(targets, size=num_positive, replace=len(targets) < num_positive)
    pos = [geo.centre(int(n), rng, jitter=2) for n in chosen]
    neg: list[np.ndarray] = []
    if intent.task == "t2":
        others = geo.ids(exclude_class=intent.class_id)
        if len(others):
            picked = rng.choice(others, size=min(num_negative, len(others)), replace=False)
            neg += [geo.centre(int(n), rng, jitter=2) for n in picked]
    while len(neg) < num_negative:
        point = geo.background(rng)
        if point is None:
            break
        neg.append(point)
    points = _to_xy(pos + neg)
    labels = np.array([1] * len(pos) + [0] * len(neg), np.int64)
    return PromptSet(points, labels)
