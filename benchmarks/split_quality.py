"""Does the fast instance split segment as well as scikit-image's watershed? (docs/performance.md)

``split_instances`` floods its seeds by steepest ascent (:func:`flood_to_markers`). This script
scores it against the same pipeline with the flood replaced by one
``skimage.segmentation.watershed(-surface, seeds, mask=...)`` call — the reference algorithm —
on probability maps made from expert ground truth: the instance masks of real images (or, when
``--data`` is absent, generated tiles), blurred (σ = 1.5 px) and, for half of the maps, with
smooth noise added, so that touching nuclei merge in the foreground the way a model's output does.

Prints PQ and AJI against the ground truth for both floods, the share of identical label maps
and the time each took (split only).

    python benchmarks/split_quality.py --data ../shared/data --per-folder 6
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

import numpy as np


def _maps(data: str, per_folder: int):
    """Yield (name, ground-truth instances (H, W) int32)."""
    if data and os.path.isdir(data):
        import tifffile

        for folder in sorted(os.listdir(data)):
            files = sorted(glob.glob(os.path.join(data, folder, "*_inst.tif")))[:per_folder]
            for path in files:
                yield f"{folder}/{os.path.basename(path)}", tifffile.imread(path).astype(np.int32)
        return
    from sampo_engine.data.synthetic import synthetic_tile

    for seed in range(per_folder * 4):
        yield f"synthetic/{seed}", synthetic_tile(512, seed=seed).inst.astype(np.int32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="../shared/data", help="folders of *_inst.tif")
    parser.add_argument("--per-folder", type=int, default=6, help="images per folder")
    parser.add_argument("--noise", type=float, default=0.45, help="noise amplitude, noisy maps")
    args = parser.parse_args(argv)

    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    import sampo_engine.predict.instances as instances
    from sampo_engine.scoring.metrics import get_fast_aji, get_fast_pq

    ascent = instances.flood_to_markers

    def reference(surface, markers, mask, reach=3, pieces=None, pool=None):
        return watershed(-surface, markers, mask=mask).astype(np.int32)

    rng = np.random.default_rng(0)
    scores = {"ascent": [], "skimage": []}
    seconds = {"ascent": 0.0, "skimage": 0.0}
    identical = total = 0
    for _name, truth in _maps(args.data, args.per_folder):
        fg = (truth > 0).astype(np.float32)
        for noise in (0.0, args.noise):
            prob = ndi.gaussian_filter(fg, 1.5)
            if noise:
                prob += noise * ndi.gaussian_filter(rng.standard_normal(fg.shape), 2.0)
            prob = np.clip(prob, 0, 1).astype(np.float32)
            labels = {}
            for flood_name, flood in (("ascent", ascent), ("skimage", reference)):
                instances.flood_to_markers = flood
                try:
                    start = time.perf_counter()
                    labels[flood_name] = instances.split_instances(prob)
                    seconds[flood_name] += time.perf_counter() - start
                finally:
                    instances.flood_to_markers = ascent
                pq = get_fast_pq(truth, labels[flood_name])
                scores[flood_name].append((pq.pq, get_fast_aji(truth, labels[flood_name])))
            identical += bool(np.array_equal(labels["ascent"], labels["skimage"]))
            total += 1
    if not total:
        print("no maps found", file=sys.stderr)
        return 1
    print(f"{total} maps ({total // 2} images, clean and noisy)")
    print(f"{'flood':10s} {'PQ':>7s} {'AJI':>7s} {'split s':>8s}")
    for flood_name, rows in scores.items():
        arr = np.array(rows)
        print(
            f"{flood_name:10s} {arr[:, 0].mean():7.4f} {arr[:, 1].mean():7.4f} "
            f"{seconds[flood_name]:8.2f}"
        )
    diff = np.array(scores["ascent"])[:, 0] - np.array(scores["skimage"])[:, 0]
    print(
        f"identical label maps {identical}/{total}; PQ ascent − skimage per map: "
        f"min {diff.min():+.4f}, mean {diff.mean():+.4f}, max {diff.max():+.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
