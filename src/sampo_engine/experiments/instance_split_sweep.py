"""The split of a whole-image foreground probability into nuclei, scored over a grid of
settings: the computation of the instance study (docs/instances.md; the driver is
:mod:`sampo_engine.experiments.instance_study`).

The whole-tile predictor answers T1 with a foreground probability and splits it into nuclei
with a distance-transform watershed (:func:`~sampo_engine.predict.instances.split_instances`:
threshold, Gaussian ``sigma`` of the distance, ``min_distance`` between seeds, ``min_size``).
Whole-image PQ is far below crop Dice (docs/model.md), so this study asks how much of that is
the split: for every image, the model's T1 probability from the evaluation's 3 + 3 clicks in one
tile (:func:`~sampo_engine.eval.whole.one_tile_clicks`, prompt propagation for the rest) is
computed once and cached; every split setting of a grid is then scored against the true nuclei
(PQ, its detection and segmentation qualities, nucleus F1 by centroid, predicted / true count).

The setting is **chosen on training images** (macro mean PQ over the datasets) and **reported on
the held-out whole images** beside the predictor's default; the held-out best is shown too, to
say how much choosing on other images costs.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sampo_engine.predict.instances import (
    DEFAULT_MIN_DISTANCE,
    DEFAULT_MIN_SIZE,
    DEFAULT_SIGMA,
    split_instances,
)


@dataclass(frozen=True)
class SplitSetting:
    """One way to cut whole-image nuclei out of the model: the split of the foreground
    probability (see ``split_instances``; sizes in px of the image as given) and ``scale``, the
    factor the image was resampled by before the model saw it (the probability is brought back
    to the image's size before the split)."""

    threshold: float = 0.5
    sigma: float = DEFAULT_SIGMA
    min_distance: int = DEFAULT_MIN_DISTANCE
    min_size: int = DEFAULT_MIN_SIZE
    scale: float = 1.0

    @property
    def key(self) -> str:
        return (
            f"x{self.scale:g}_t{self.threshold:g}_s{self.sigma:g}_d{self.min_distance}"
            f"_m{self.min_size}"
        )

    def split(self, prob: np.ndarray) -> np.ndarray:
        """(H, W) int32 nuclei of the (H, W) float probability ``prob``."""
        return split_instances(
            prob,
            threshold=self.threshold,
            min_size=self.min_size,
            min_distance=self.min_distance,
            sigma=self.sigma,
        )


#: ``split_instances``' own defaults: the predictor's setting until this study, and still the
#: classical floor's and the crop scoring's
BASELINE = SplitSetting()


def predictor_setting(model: str = "nuclei-small") -> SplitSetting:
    """The whole-tile predictor's setting now for ``model`` (``PredictConfig``'s defaults; the
    model's own resampling factor when ``resample`` is 0)."""
    from sampo_engine.predict.config import PredictConfig
    from sampo_engine.predict.resample import resample_factor

    cfg = PredictConfig()
    scale = resample_factor(model, cfg.resample, cfg.um_per_px)
    return SplitSetting(cfg.threshold, cfg.seed_sigma, cfg.seed_distance, cfg.min_size, scale)


def grid(
    thresholds: Iterable[float] = (0.3, 0.4, 0.5, 0.6),
    sigmas: Iterable[float] = (1.0, 2.0, 3.0),
    min_distances: Iterable[int] = (3, 5, 8, 12),
    min_sizes: Iterable[int] = (16, 32, 48),
    scales: Iterable[float] = (1.0,),
    model: str = "nuclei-small",
) -> list[SplitSetting]:
    """Every combination, the baseline and the predictor's setting (for ``model``) first."""
    settings = [
        SplitSetting(float(t), float(s), int(d), int(m), float(x))
        for x, t, s, d, m in itertools.product(scales, thresholds, sigmas, min_distances, min_sizes)
    ]
    first = list(dict.fromkeys([BASELINE, predictor_setting(model)]))
    return first + [s for s in settings if s not in first]


def probability_maps(
    model,
    folder: str | Path,
    out_dir: Path,
    seed: int = 0,
    limit: int | None = None,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
    scale: float = 1.0,
) -> list[Path]:
    """The model's whole-image T1 probability for each image of ``folder`` (the first
    ``limit``), cached in ``out_dir/<image>.npz`` as ``prob`` (H, W) float16 and ``inst`` (H, W)
    int32 true nuclei. An image whose file exists is not computed again.

    The clicks are the evaluation's (3 in the tile of the image's own grid holding the most
    nuclei). The predictor resamples the image by ``scale`` before the model sees it
    (``PredictConfig.resample``: nuclei span ``scale``× more of its 1/4-resolution logits) and
    returns the probability at (H, W)."""
    from sampo_engine.data.folder import read_folder
    from sampo_engine.eval.whole import one_tile_clicks
    from sampo_engine.predict.predictor import PredictConfig, TilePredictor
    from sampo_engine.predict.tiling import make_grid
    from sampo_engine.prompts import available_intents
    from sampo_engine.utils.atomic import atomic_path

    dataset = read_folder(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = PredictConfig(device=device, slot_rule="auto", resample=scale)
    predictor = TilePredictor(config, model=model)
    paths = []
    for i in range(len(dataset) if limit is None else min(limit, len(dataset))):
        sample = dataset[i]
        path = out_dir / f"{sample.name}.npz"
        paths.append(path)
        if path.exists():
            continue
        inst = sample.inst.astype(np.int32, copy=False)
        intents = available_intents(inst, None, "t1")
        if not intents:
            paths.pop()
            continue
        g = make_grid(*inst.shape, predictor.image_size, predictor.config.overlap)
        boxes = [(int(y), int(y) + g.tile, int(x), int(x) + g.tile) for y, x in zip(g.y0, g.x0)]
        points, labels = one_tile_clicks(inst, None, intents[0], boxes, seed, sample.name)
        predictor.set_image(sample.image)  # resampled by ``scale`` inside the predictor
        prob = predictor.predict(points, labels, task="t1").prob  # back at (H, W)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, prob=prob.astype(np.float16), inst=inst)
        if progress is not None:
            progress(sample.name)
    return paths


def score_setting(prob: np.ndarray, truth: np.ndarray, setting: SplitSetting) -> dict:
    """Dice of the foreground (``prob > threshold``, the predictor's mask), PQ, DQ (detection F1
    at IoU 0.5), SQ, nucleus F1 by centroid within 12 px, and the predicted / true nucleus
    counts of ``setting`` on one image (values in [0, 1])."""
    prob = prob.astype(np.float32)
    return score_instances(setting.split(prob), prob > setting.threshold, truth)


def score_instances(labels: np.ndarray, foreground: np.ndarray, truth: np.ndarray) -> dict:
    """Dice of the (H, W) bool ``foreground``, PQ, DQ, SQ, nucleus F1 by centroid within 12 px
    and the predicted / true nucleus count of the (H, W) int nuclei ``labels`` against the
    (H, W) int true nuclei ``truth`` (values in [0, 1])."""
    from sampo_engine.eval.nucleus_match import centroid_f1, label_centroids
    from sampo_engine.scoring.metrics import dice, get_fast_pq

    pq = get_fast_pq(truth, labels)
    match = centroid_f1(label_centroids(labels)[1], label_centroids(truth)[1], 12.0)
    n_true = len(np.unique(truth)) - (1 if (truth == 0).any() else 0)
    return {
        "dice": dice(foreground, truth > 0),
        "pq": pq.pq,
        "dq": pq.dq,
        "sq": pq.sq,
        "centroid_f1": match["f1"],
        "count_ratio": int(labels.max()) / max(1, n_true),
    }


def sweep(
    maps: dict[tuple[str, str, float], Sequence[Path]],
    settings: Sequence[SplitSetting],
    progress: Callable[[], None] | None = None,
) -> list[dict]:
    """One row per (split, dataset, image, setting); ``maps`` maps (split, dataset, scale) to
    the cached ``.npz`` files of :func:`probability_maps` at that scale, which the settings of
    that scale split."""
    rows = []
    for (split, dataset, scale), paths in maps.items():
        for path in paths:
            with np.load(path) as data:
                prob, truth = data["prob"], data["inst"]
            for setting in (s for s in settings if s.scale == scale):
                row = {"split": split, "dataset": dataset, "image": path.stem}
                row.update(asdict(setting), setting=setting.key)
                row.update(score_setting(prob, truth, setting))
                rows.append(row)
            if progress is not None:
                progress()
    return rows


def write_rows(rows: Sequence[dict], path: Path) -> None:
    from sampo_engine.utils.atomic import write_text_atomic

    if not rows:
        raise ValueError("no rows to write: no probability maps were found")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for key in (
            "threshold",
            "sigma",
            "scale",
            "dice",
            "pq",
            "dq",
            "sq",
            "centroid_f1",
            "count_ratio",
        ):
            row[key] = float(row[key])
        for key in ("min_distance", "min_size"):
            row[key] = int(row[key])
    return rows


def means(rows: Sequence[dict], split: str, measure: str = "pq") -> dict[str, dict[str, float]]:
    """``{setting key: {dataset: mean over images, "macro": mean over datasets}}`` for one
    split."""
    table: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        if row["split"] == split:
            table.setdefault(row["setting"], {}).setdefault(row["dataset"], []).append(
                float(row[measure])
            )
    out = {}
    for key, per_ds in table.items():
        values = {ds: float(np.mean(v)) for ds, v in per_ds.items()}
        values["macro"] = float(np.mean(list(values.values())))
        out[key] = values
    return out
