"""Few-shot T2 by nucleus (docs/exemplars.md): how well 3 + 3 clicks pick a cell type.

For every held-out whole image and every class it holds, seeded clicks — 3 positives on nuclei of
the class, 3 negatives on nuclei of other classes — are answered by:

- nucleus sources: the true instances (``gt``, CoNSeP only: the classifier's ceiling), the
  classical floor's hematoxylin nuclei (``classical``), and a model's T1 nuclei (``model``,
  with ``--checkpoint``/``--adapter``): the predictor's own exemplar T2 path;
- T2 rules: the few-shot classifiers (``logreg``, ``spreading``, ``nearest``) and, for the model,
  its decoder (``decoder``) and the hybrid.

Scores: CoNSeP (instance masks): per-class nucleus F1 by centroid within 12 px (3 µm at 40×,
HoVer-Net's classification F1 matching), T2 Dice. Point sets (BRCA-M2C, CRCHistoPhenotypes val
images, 20×; dots, no masks): of the predicted nuclei holding a classified dot, the share of the
clicked class (precision), and the share of that class's dots inside a predicted nucleus
(coverage). The model sees the 20× images resampled to 40× (what it was trained at).

Usage::

    python tools/exemplar_study.py --out runs/exemplar_study                       # floor + gt
    python tools/exemplar_study.py --out runs/exemplar_study --model small \\
        --checkpoint runs/base_both/base/base.pth --tag model                      # + a model

``--classes`` also scores several classes at once (``--task classes``, the dock's Classes): 3
dots (CoNSeP: 3 nuclei' centroids) of every class clicked as that class, every nucleus labelled
with one of them (rules ``<source>-classes``, the ``blend`` classifier); per class, the nuclei
labelled with it are scored as a T2 answer would be (precision and coverage on the point sets;
nucleus F1 and Dice on CoNSeP, where HoVer-Net's classification F1 is of such a labelling).

Writes ``<out>/rows.csv`` (one row per image × class × seed × source × rule) and
``<out>/summary.md`` (means per dataset, class, source and rule, with the seed spread).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from sampo_engine.data.points import read_class_points
from sampo_engine.eval.nucleus_match import centroid_f1, label_centroids, point_agreement
from sampo_engine.scoring.metrics import dice

CONSEP_HELD_OUT = ("train_11", "train_14", "train_19", "train_21", "train_26")
POINT_SETS = ("brca_m2c_points", "crchisto_points")
CLASSIFIERS = ("logreg", "spreading", "nearest")
#: the classifiers that read a type head's general types (scored when one is given)
TYPE_CLASSIFIERS = ("types", "blend")


def point_clicks(xy, cls, target: int, seed: int, name: str):
    """3 dots of ``target`` and 3 of other classes, seeded by (seed, image, class)."""
    import zlib

    rng = np.random.default_rng(zlib.crc32(f"{seed}|{name}|{target}".encode()))
    pos = np.flatnonzero(cls == target)
    neg = np.flatnonzero(cls != target)
    if len(pos) < 3 or len(neg) < 1:
        return None
    p = rng.choice(pos, 3, replace=False)
    n = rng.choice(neg, min(3, len(neg)), replace=False)
    return np.concatenate([xy[p], xy[n]]).astype(np.float32), np.array([1] * 3 + [0] * len(n))


def class_clicks(xy, cls, seed: int, name: str):
    """3 dots of every class with at least 3, seeded by (seed, image): ((P, 2) float32 (x, y),
    (P,) index into the returned class ids, class ids), or None with fewer than two classes."""
    import zlib

    rng = np.random.default_rng(zlib.crc32(f"{seed}|{name}|classes".encode()))
    ids = [c for c in sorted(set(cls.tolist())) if (cls == c).sum() >= 3]
    if len(ids) < 2:
        return None
    picks = [rng.choice(np.flatnonzero(cls == c), 3, replace=False) for c in ids]
    index = np.repeat(np.arange(len(ids)), 3)
    return np.asarray(xy)[np.concatenate(picks)].astype(np.float32), index, ids


def _class_answers(
    sources, index, model_image, pts, pclasses, k: int, fresh: bool, scale: int = 2,
    model: bool = True, source: str = "classical",
) -> dict:  # fmt: skip
    """Every nucleus labelled with one of ``k`` classes from the clicks: {rule: [(H, W) labels of
    the nuclei given class j, for j < k], scale of the maps relative to the dots}.

    ``index``: ``source``'s nuclei (the floor's or the true ones), scored with
    ``score_classes`` as rule ``<source>-classes`` (None: not scored). The model (``model``)
    sees ``model_image``: the image ×``scale`` (the point sets' 20× images at the model's 40×;
    CoNSeP as it is). A refused query (e.g. clicks of two classes on one merged nucleus) is
    scored as an empty answer."""
    from sampo_engine.errors import DataError
    from sampo_engine.predict.nucleus_classes import only_ids, score_classes

    names = [f"c{j}" for j in range(k)]
    out = {}
    if index is not None:
        try:
            res = score_classes(index, pts, pclasses, names, method="blend")
            maps = [index.keep(np.flatnonzero(res.classes == j)) for j in range(k)]
        except DataError:
            maps = [np.zeros_like(index.labels)] * k
        out[f"{source}-classes"] = (maps, 1)
    predictor = sources.predictor
    if predictor is not None and model:
        if fresh:
            predictor.set_image(model_image)
            predictor.forget_nuclei()
        predictor.config.classifier = "blend"
        try:
            got = predictor.classify(pts * scale + (scale - 1) / 2, pclasses, names)
            ids, classes = got.nucleus.ids, got.nucleus.classes
            maps = [only_ids(got.labels, ids[classes == j]) for j in range(k)]
        except DataError:
            maps = [np.zeros(model_image.shape[:2], np.int32)] * k
        finally:
            predictor.config.classifier = "logreg"
        out["model-classes"] = (maps, scale)
    return out


class Sources:
    """Nuclei maps per (image, source) and the model predictor, built lazily."""

    def __init__(self, args):
        self.args = args
        self.predictor = None
        if args.model:
            from sampo_engine.predict.predictor import PredictConfig, TilePredictor

            cfg = PredictConfig(
                model=args.model, checkpoint=args.checkpoint or "", adapter=args.adapter or "",
                device="cpu", type_head=args.type_head or "off",
            )  # fmt: skip
            self.predictor = TilePredictor(cfg)
        self.type_net = None
        if args.type_head:
            from sampo_engine.models.type_head import load_type_head

            self.type_net = load_type_head(args.type_head)
        from sampo_engine.predict import nucleus_classes

        if args.type_weight is not None:
            nucleus_classes.GROUP_WEIGHTS["type"] = args.type_weight
        for item in filter(None, args.group_weights.split(",")):
            group, weight = item.split("=")
            nucleus_classes.GROUP_WEIGHTS[group] = float(weight)

    def types(self, um_per_px: float):
        """The type head's descriptor columns for an image of ``um_per_px`` (None: no head)."""
        if self.type_net is None:
            return None
        from sampo_engine.predict.nucleus_classes import type_head_columns

        return type_head_columns(self.type_net, um_per_px)


def _describe(image, nuclei, types=None):
    """The nuclei of one image and their descriptors (once per image and nucleus source)."""
    from sampo_engine.predict.nucleus_classes import NucleiIndex

    return NucleiIndex.build("study", image, nuclei, nucleus_types=types)


def _classify(index, points, labels) -> dict:
    """Each classifier's T2 answer for one click set (the type classifiers where the index
    holds a type head's columns)."""
    from sampo_engine.predict.nucleus_classes import score_t2

    typed = "general" in index.descriptors.groups
    out = {}
    for method in CLASSIFIERS + (TYPE_CLASSIFIERS if typed else ()):
        res = score_t2(index, points, labels, "exemplar", method=method)
        out[method] = index.keep(np.flatnonzero(res.probability >= 0.5))
    return out


def _model_answers(predictor, image, points, labels, fresh: bool):
    """The model's T2 answers for one click set: exemplar (logreg), hybrid, decoder. A refused
    query (e.g. every click on one merged nucleus) is scored as an empty answer, as
    ``sampo-engine eval`` does."""
    from sampo_engine.errors import DataError

    if fresh:
        predictor.set_image(image)
        predictor.forget_nuclei()

    def answer() -> np.ndarray:
        try:
            return predictor.predict(points, labels, task="t2").labels
        except DataError:
            return np.zeros(image.shape[:2], np.int32)

    out = {}
    for mode in ("exemplar", "hybrid", "decoder"):
        predictor.config.t2_mode = mode
        out[f"model-{mode}"] = answer()
    if predictor.type_head is not None:  # the classifiers that read its general types
        predictor.config.t2_mode = "exemplar"
        for method in TYPE_CLASSIFIERS:
            predictor.config.classifier = method
            out[f"model-exemplar-{method}"] = answer()
        predictor.config.classifier = "logreg"
    return out


def run_consep(args, sources, writer) -> None:
    import tifffile
    from skimage.io import imread

    from sampo_engine.eval.classical import hematoxylin_instances
    from sampo_engine.eval.whole import one_tile_clicks
    from sampo_engine.predict.tiling import make_grid
    from sampo_engine.prompts import Intent

    folder = Path(args.shared) / "consep_train"
    for name in CONSEP_HELD_OUT:
        image = imread(folder / f"{name}_image.png")[..., :3]
        inst = tifffile.imread(folder / f"{name}_inst.tif").astype(np.int32)
        cls_map = tifffile.imread(folder / f"{name}_class.tif")
        grid = make_grid(*inst.shape, 224, 32)
        boxes = [(int(y), int(y) + 224, int(x), int(x) + 224) for y, x in zip(grid.y0, grid.x0)]
        nuclei = {"gt": inst}
        if "classical" in args.sources:
            nuclei["classical"] = hematoxylin_instances(image)
        indices = {src: _describe(image, nuc, sources.types(0.25)) for src, nuc in nuclei.items()
                   if src != "gt" or "gt" in args.sources}  # fmt: skip
        first_model = True
        truths = {}
        for c in (1, 2, 3, 4):
            intent = Intent("t2", c)
            truth = np.where(np.isin(inst, np.unique(inst[cls_map == c])), inst, 0)
            if not truth.any():
                continue
            _, true_centroids = label_centroids(truth)
            truths[c] = (truth, true_centroids)
            for seed in args.seeds:
                clicks = one_tile_clicks(inst, cls_map, intent, boxes, seed, name)
                if clicks is None:
                    continue
                pts, lab = clicks
                answers = {}
                for src, index in indices.items():
                    for method, ans in _classify(index, pts, lab).items():
                        answers[f"{src}-{method}"] = ans
                if "classical" in nuclei:
                    from sampo_engine.eval.classical import clicked_selection

                    sel = clicked_selection(image, nuclei["classical"], pts, lab)
                    answers["classical-floor"] = np.where(sel, nuclei["classical"], 0)
                if sources.predictor is not None:
                    answers.update(_model_answers(sources.predictor, image, pts, lab, first_model))
                    first_model = False
                for rule, ans in answers.items():
                    m = centroid_f1(label_centroids(ans)[1], true_centroids, 12.0)
                    writer.writerow(
                        {"dataset": "consep", "image": name, "class": c, "seed": seed,
                         "rule": rule, "f1": m["f1"], "precision": m["precision"],
                         "recall": m["recall"], "dice": dice(ans > 0, truth > 0)}
                    )  # fmt: skip
        if args.classes:
            fresh = first_model  # else the T2 rules have set this image and its nuclei
            _score_consep_classes(args, sources, writer, name, image, inst, cls_map, indices,
                                  truths, fresh)  # fmt: skip
        print(f"consep {name} done", flush=True)


def nucleus_classes_of(inst: np.ndarray, cls_map: np.ndarray):
    """(ids (N,), centroids (N, 2) (row, col), class (N,): the majority class of its pixels)
    of the nuclei of an instance map."""
    ids, centroids = label_centroids(inst)
    flat_i, flat_c = inst.ravel(), cls_map.ravel().astype(np.int64)
    inside = flat_i > 0
    counts = np.zeros((int(flat_i.max()) + 1, int(flat_c.max()) + 1), np.int64)
    np.add.at(counts, (flat_i[inside], flat_c[inside]), 1)
    return ids, centroids, counts[ids].argmax(1)


def _score_consep_classes(args, sources, writer, name, image, inst, cls_map, indices, truths,
                          fresh: bool) -> None:  # fmt: skip
    """Rows of several classes at once on one CoNSeP image (``--classes``): 3 nuclei of every
    class clicked at their centroids, every nucleus labelled; per class, the nucleus F1 (12 px)
    and Dice of the nuclei given that class against the true nuclei of it — HoVer-Net's
    classification F1 is of such a labelling."""
    _, centroids, classes = nucleus_classes_of(inst, cls_map)
    for seed in args.seeds:
        clicks = class_clicks(centroids[:, ::-1], classes, seed, name)
        if clicks is None:
            continue
        pts, pclasses, ids = clicks
        answers = _class_answers(sources, None, image, pts, pclasses, len(ids), fresh, scale=1)
        fresh = False
        for src, index in indices.items():
            answers.update(_class_answers(sources, index, None, pts, pclasses, len(ids), False,
                                          scale=1, model=False, source=src))  # fmt: skip
        for rule, (maps, _) in answers.items():
            for j, c in enumerate(ids):
                if c not in truths:
                    continue
                truth, true_centroids = truths[c]
                m = centroid_f1(label_centroids(maps[j])[1], true_centroids, 12.0)
                writer.writerow(
                    {"dataset": "consep", "image": name, "class": c, "seed": seed, "rule": rule,
                     "f1": m["f1"], "precision": m["precision"], "recall": m["recall"],
                     "dice": dice(maps[j] > 0, truth > 0)}
                )  # fmt: skip


def run_points(args, sources, writer, dataset: str) -> None:
    from skimage.io import imread
    from skimage.transform import rescale

    from sampo_engine.eval.classical import clicked_selection, hematoxylin_instances

    folder = Path(args.shared) / dataset
    meta = json.loads((folder / "meta.json").read_text())
    held = [m["id"] for m in meta["images"] if m.get("split") in ("val", "validation")]
    for name in held[: args.max_point_images]:
        image = imread(folder / f"{name}_image.png")[..., :3]
        xy, cls = read_class_points(folder / f"{name}_points.csv")
        classical = hematoxylin_instances(image) if "classical" in args.sources else None
        index = None if classical is None else _describe(image, classical, sources.types(0.5))
        big = None
        first_model = True
        for c in sorted(set(cls.tolist())):
            for seed in args.seeds:
                clicks = point_clicks(xy, cls, c, seed, name)
                if clicks is None:
                    continue
                pts, lab = clicks
                answers = {}  # (labels, scale of the map relative to the dots)
                if classical is not None:
                    for method, ans in _classify(index, pts, lab).items():
                        answers[f"classical-{method}"] = (ans, 1)
                    sel = clicked_selection(image, classical, pts, lab)
                    answers["classical-floor"] = (np.where(sel, classical, 0), 1)
                if sources.predictor is not None:
                    if big is None:
                        big = (rescale(image, 2, order=1, channel_axis=2) * 255).round()
                        big = big.astype(np.uint8)
                    got = _model_answers(sources.predictor, big, pts * 2 + 0.5, lab, first_model)
                    first_model = False
                    answers.update({k: (v, 2) for k, v in got.items()})
                for rule, (ans, scale) in answers.items():
                    m = point_agreement(ans, xy * scale + (scale - 1) / 2, cls, c)
                    writer.writerow(
                        {"dataset": dataset, "image": name, "class": c, "seed": seed,
                         "rule": rule, "precision": m["precision"], "coverage": m["coverage"],
                         "held": m["held"]}
                    )  # fmt: skip
        if args.classes:
            _score_classes(args, sources, writer, dataset, name, image, xy, cls, index, big)
        print(f"{dataset} {name} done", flush=True)


def _score_classes(args, sources, writer, dataset, name, image, xy, cls, index, big) -> None:
    """Rows of several classes at once on one point-set image (``--classes``)."""
    from skimage.transform import rescale

    fresh = big is None  # else the T2 rules have set this image and segmented its nuclei
    if sources.predictor is not None and big is None:
        big = (rescale(image, 2, order=1, channel_axis=2) * 255).round().astype(np.uint8)
    for seed in args.seeds:
        clicks = class_clicks(xy, cls, seed, name)
        if clicks is None:
            continue
        pts, pclasses, ids = clicks
        answers = _class_answers(sources, index, big, pts, pclasses, len(ids), fresh)
        fresh = False
        for rule, (maps, scale) in answers.items():
            for j, c in enumerate(ids):
                m = point_agreement(maps[j], xy * scale + (scale - 1) / 2, cls, c)
                writer.writerow(
                    {"dataset": dataset, "image": name, "class": c, "seed": seed, "rule": rule,
                     "precision": m["precision"], "coverage": m["coverage"], "held": m["held"]}
                )  # fmt: skip


def summarise(rows: list[dict]) -> str:
    """Markdown: per dataset, rule × class means (over images), ± the spread over seeds."""
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        sel = [r for r in rows if r["dataset"] == dataset]
        metric = ["f1", "dice"] if dataset == "consep" else ["precision", "coverage"]
        classes = sorted({int(r["class"]) for r in sel})
        rules = list(dict.fromkeys(r["rule"] for r in sel))
        lines += [f"## {dataset}", ""]
        for key in metric:
            header = ["rule"] + [f"class {c}" for c in classes] + ["mean"]
            lines += [
                f"**{key}** (mean over images, ± std over click seeds)",
                "",
                "| " + " | ".join(header) + " |",
                "|" + "---|" * len(header),
            ]
            for rule in rules:
                cells, per_seed = [], []
                seeds = sorted({int(r["seed"]) for r in sel})
                for c in classes:
                    vals = [
                        [float(r[key]) for r in sel
                         if r["rule"] == rule and int(r["class"]) == c and int(r["seed"]) == s
                         and r[key] not in ("", "nan")]
                        for s in seeds
                    ]  # fmt: skip
                    means = [np.nanmean(v) for v in vals if v]
                    per_seed.append(means)
                    cells.append(
                        f"{100 * np.mean(means):.1f} ± {100 * np.std(means):.1f}" if means else "–"
                    )
                overall = [
                    np.mean([m[i] for m in per_seed if len(m) > i]) for i in range(len(seeds))
                ]
                cells.append(f"{100 * np.mean(overall):.1f} ± {100 * np.std(overall):.1f}")
                lines.append(f"| {rule} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def main(argv=None, repo: Path | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    repo = Path.cwd() if repo is None else Path(repo)
    parser.add_argument("--shared", default=str(repo.parent / "shared" / "data"))
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sources", nargs="+", default=["gt", "classical"])
    parser.add_argument("--datasets", nargs="+", default=["consep", *POINT_SETS])
    parser.add_argument("--max-point-images", type=int, default=10)
    parser.add_argument("--model", default="")
    parser.add_argument("--checkpoint", default="")
    parser.add_argument("--adapter", default="")
    parser.add_argument("--tag", default="floor")
    parser.add_argument(
        "--type-head", default="", help="a type head .safetensors (docs/type_head.md)"
    )
    parser.add_argument("--type-weight", type=float, default=None, help="weight of its columns")
    parser.add_argument("--group-weights", default="", help="e.g. stain=0,morphology=0.5")
    parser.add_argument(
        "--classes", action="store_true", help="point sets: also several classes at once"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sources = Sources(args)
    path = out / f"rows_{args.tag}.csv"
    fields = ["dataset", "image", "class", "seed", "rule", "f1", "precision", "recall", "dice",
              "coverage", "held"]  # fmt: skip
    t0 = time.perf_counter()
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        if "consep" in args.datasets:
            run_consep(args, sources, writer)
        for dataset in POINT_SETS:
            if dataset in args.datasets:
                run_points(args, sources, writer, dataset)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    text = summarise(rows)
    (out / f"summary_{args.tag}.md").write_text(text + "\n")
    print(text)
    print(f"{time.perf_counter() - t0:.0f} s; rows in {path}")
    return 0
