"""Few-shot T2 by nucleus: descriptors, click snapping, classifiers, the predictor's modes,
nucleus-level scoring and the exports that carry class and probability."""

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from sampo_engine.data.synthetic import make_synthetic_sample
from sampo_engine.errors import ConfigError, DataError
from sampo_engine.eval.nucleus_match import (
    centroid_f1,
    label_centroids,
    point_agreement,
    radius_px,
)
from sampo_engine.nuclei.descriptors import (
    MORPHOLOGY,
    STAIN,
    describe_nuclei,
    hed_optical_density,
    neighbourhood_columns,
    pooled_embeddings,
)
from sampo_engine.nuclei.exemplars import classify_nuclei, snap_clicks, standardise


def _disk_map(shape, centres, radii):
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for i, ((r, c), rad) in enumerate(zip(centres, radii), start=1):
        labels[(rr - r) ** 2 + (cc - c) ** 2 <= rad**2] = i
    return labels


@pytest.fixture(scope="module")
def tile():
    """A synthetic tile whose three classes differ in size, shape and stain, its true nuclei
    and each nucleus' class and (x, y) centre."""
    s = make_synthetic_sample((384, 384), seed=3, density=4.0, class_mix=(0.4, 0.3, 0.3))
    ids = np.unique(s.inst)[1:]
    classes = np.array([np.bincount(s.cls[s.inst == i]).argmax() for i in ids])
    centres = np.array(ndi.center_of_mass(np.ones_like(s.inst), s.inst, ids))[:, ::-1]
    return s, ids, classes, centres.astype(np.float32)


def _clicks(ids, classes, centres, target, per_class=3, seed=0):
    """3 positives on ``target`` nuclei and negatives spread over the other classes."""
    rng = np.random.default_rng(seed)
    pos = rng.choice(np.flatnonzero(classes == target), per_class, replace=False)
    others = [c for c in np.unique(classes) if c != target]
    neg = np.concatenate(
        [rng.choice(np.flatnonzero(classes == c), 2, replace=False) for c in others]
    )
    pts = np.concatenate([centres[pos], centres[neg]])
    return pts, np.array([1] * len(pos) + [0] * len(neg))


# ------------------------------------------------------------------------------ descriptors


def test_descriptors_measure_size_shape_and_stain():
    labels = _disk_map((64, 96), [(20, 20), (40, 70)], [4, 9])
    image = np.full((64, 96, 3), 235, np.uint8)
    image[labels == 1] = (60, 40, 120)  # dark blue small nucleus
    image[labels == 2] = (170, 140, 200)  # pale large one
    d = describe_nuclei(image, labels, neighbours=0)
    assert d.names == MORPHOLOGY + STAIN and d.features.shape == (2, len(d.names))
    assert d.ids.tolist() == [1, 2]
    assert np.allclose(d.centroids, [[20, 20], [40, 70]], atol=0.01)  # (row, col)
    col = {n: d.features[:, i] for i, n in enumerate(d.names)}
    assert np.allclose(np.expm1(col["log_area"]), [(labels == 1).sum(), (labels == 2).sum()])
    assert col["eccentricity"].max() < 0.3  # disks are round
    assert col["h_mean"][0] > col["h_mean"][1]  # the dark one holds more hematoxylin
    assert col["ring_h_mean"][0] < col["h_mean"][0]  # its surroundings are background
    assert d.index_of([2, 1, 7]).tolist() == [1, 0, -1]
    empty = describe_nuclei(image, np.zeros((64, 96), np.int32))
    full = describe_nuclei(image, labels)  # with the neighbourhood columns
    assert full.names[: len(d.names)] == d.names and "nb_log_distance" in full.names
    assert len(empty) == 0 and empty.features.shape == (0, len(full.names))
    assert empty.names == full.names
    with pytest.raises(DataError, match="differ in size"):
        describe_nuclei(image, labels[:10])


def test_stain_matches_scikit_image_and_neighbourhood_is_the_company_kept():
    from skimage.color import rgb2hed

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    assert np.allclose(hed_optical_density(rgb), rgb2hed(rgb), atol=1e-5)
    centroids = np.array([[0, 0], [0, 1], [10, 10], [10, 11]], float)
    feats = np.array([[1.0], [3.0], [5.0], [7.0]])
    ctx = neighbourhood_columns(centroids, feats, k=1)
    assert ctx[:, 0].tolist() == [3.0, 1.0, 7.0, 5.0]  # each one's nearest other nucleus
    assert np.allclose(ctx[:, 1], np.log1p(1.0))


def test_embeddings_are_pooled_over_the_cells_a_nucleus_covers():
    from sampo_engine.predict.tiling import make_grid

    grid = make_grid(32, 32, 32, 0)  # one tile of 2 × 2 cells of 16 px
    emb = np.zeros((1, 3, 2, 2), np.float32)
    emb[0, :, 0, 0] = (1, 0, 0)
    emb[0, :, 0, 1] = (0, 1, 0)
    labels = np.zeros((32, 32), np.int64)
    labels[4:8, 4:8] = 1  # 16 px in cell (0, 0)
    labels[4:8, 12:20] = 2  # 16 px in cell (0, 0), 16 in cell (0, 1)
    ids = np.array([1, 2])
    centroids = np.array([[5.5, 5.5], [5.5, 15.5]])
    pooled = pooled_embeddings(labels, ids, centroids, emb, grid)
    assert np.allclose(pooled, [[1, 0, 0], [0.5, 0.5, 0]])


# ----------------------------------------------------------------------------- clicks


def test_clicks_snap_to_the_nearest_nucleus_or_are_reported():
    labels = _disk_map((64, 64), [(20, 20), (45, 45)], [5, 5])
    d = describe_nuclei(np.full((64, 64, 3), 200, np.uint8), labels)
    snap = snap_clicks(labels, [[20, 20], [27, 20], [2, 60]], d, snap_radius=4)
    assert snap.rows.tolist() == [0, 0, -1]  # inside; 2 px off the rim; far away
    assert snap.distance[0] == 0 and 0 < snap.distance[1] <= 4 and np.isinf(snap.distance[2])
    assert len(snap.messages) == 1 and "click 3 (x=2, y=60) is on background" in snap.messages[0]


def test_classifier_separates_two_kinds_from_three_plus_three_examples():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (60, 4))
    b = rng.normal(0, 1, (40, 4)) + [4, -3, 0, 0]
    feats = np.concatenate([a, b]).astype(np.float32)
    truth = np.array([0] * 60 + [1] * 40)

    class D:  # the descriptor interface classify_nuclei reads
        features = feats
        groups = ("morphology",) * 4

        def __len__(self):
            return len(feats)

        def select(self, groups):
            return feats

    snap = type("S", (), {"rows": np.array([0, 1, 2, 60, 61, 62]), "messages": []})()
    for method in ("logreg", "spreading", "nearest"):
        scores = classify_nuclei(D(), snap, [0, 0, 0, 1, 1, 1], 2, method=method)
        assert scores.probabilities.shape == (100, 2)
        assert np.allclose(scores.probabilities.sum(1), 1, atol=1e-5)
        assert (scores.classes == truth).mean() > 0.95, method
        assert scores.probabilities[0, 0] == 1.0  # the user's examples are what they said
    # only positives: the least similar nuclei stand in as negatives, and the user is told
    only = type("S", (), {"rows": np.array([0, 1, 2]), "messages": []})()
    scores = classify_nuclei(D(), only, [0, 0, 0], 2)
    assert (scores.classes == truth).mean() > 0.9
    assert any("only one kind" in m for m in scores.messages)

    # every nucleus found was clicked, all as one kind (e.g. a tile segmented into one blob):
    # each is answered as that kind, with a message, for every classifier
    class Three(D):
        def __len__(self):
            return 3

        def select(self, groups):
            return feats[:3]

    for method in ("logreg", "spreading", "nearest"):
        scores = classify_nuclei(Three(), only, [0, 0, 0], 2, method=method)
        assert (scores.classes == 0).all() and (scores.probabilities[:, 0] == 1).all()
        assert any("every nucleus found was clicked" in m for m in scores.messages)
    # a nucleus clicked both ways is left out, with a message
    both = type("S", (), {"rows": np.array([0, 0, 60]), "messages": []})()
    scores = classify_nuclei(D(), both, [0, 1, 1], 2)
    assert 0 not in scores.exemplar_rows.tolist() and any(
        "two different" in m for m in scores.messages
    )
    # every click on background: a clear error naming them, never an empty answer
    none = type("S", (), {"rows": np.array([-1, -1]), "messages": ["click 1 ... background"]})()
    with pytest.raises(DataError, match="none of the clicks names a nucleus"):
        classify_nuclei(D(), none, [0, 1], 2)


def test_standardise_is_robust_and_bounded():
    x = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0], [1000.0, 1.0]])
    z = standardise(x)
    assert np.abs(z).max() <= 5 and np.isfinite(z).all() and (z[:, 1] == 0).all()


# ------------------------------------------------------------------------------ predictor


@pytest.fixture(scope="module")
def predictor(tile):
    import torch

    from sampo_engine.models.loading import load_model
    from sampo_engine.predict.predictor import PredictConfig, TilePredictor

    s = tile[0]
    torch.manual_seed(0)  # random weights: their pooled features are noise the classifier sees
    model = load_model("tiny", allow_random=True, image_size=224)
    # the descriptors' classifier alone: no type head (generated nuclei have no real types)
    cfg = PredictConfig(model="tiny", device="cpu", type_head="off", classifier="logreg")
    p = TilePredictor(cfg, model=model)
    p.set_image(s.image)
    return p


def test_exemplar_t2_picks_the_clicked_type_on_the_true_nuclei(tile, predictor, monkeypatch):
    from sampo_engine.predict import nucleus_classes

    s, ids, classes, centres = tile
    # generated tiles scatter the types at random: their neighbourhood carries no information
    monkeypatch.setitem(nucleus_classes.GROUP_WEIGHTS, "neighbourhood", 0.0)
    # the true nuclei, by morphology and stain (a random model's features are noise): this
    # tests the classifier alone
    predictor.nuclei_from_labels(s.inst, embeddings=False)
    predictor.config.t2_mode = "exemplar"
    for target in (1, 2, 3):
        pts, lab = _clicks(ids, classes, centres, target)
        result = predictor.predict(pts, lab, task="t2")
        kept = np.isin(ids, np.unique(result.labels))
        precision = (classes[kept] == target).mean()
        recall = kept[classes == target].mean()
        assert precision > 0.85 and recall > 0.85, (target, precision, recall)
        assert result.nucleus is not None and result.nucleus.mode == "exemplar"
        assert result.num_nuclei == kept.sum()
        # each nucleus of the answer carries its probability; the answer = those ≥ threshold
        prob = dict(zip(result.nucleus.ids.tolist(), result.nucleus.probability.tolist()))
        assert all(prob[i] >= 0.5 for i in np.unique(result.labels)[1:])
    # the threshold decides without recomputing the nuclei
    predictor.config.class_threshold = 0.99
    strict = predictor.predict(pts, lab, task="t2")
    predictor.config.class_threshold = 0.5
    assert strict.num_nuclei <= result.num_nuclei


def test_hybrid_and_decoder_modes_and_classes(tile, predictor):
    s, ids, classes, centres = tile
    predictor.nuclei_from_labels(s.inst)
    pts, lab = _clicks(ids, classes, centres, 1)
    predictor.config.t2_mode = "hybrid"
    hybrid = predictor.predict(pts, lab, task="t2")
    assert hybrid.nucleus.mode == "hybrid" and hybrid.tiles_with_prompts >= 1
    predictor.config.t2_mode = "decoder"
    decoder = predictor.predict(pts, lab, task="t2")
    assert decoder.nucleus is None and decoder.prob.shape == s.inst.shape
    predictor.config.t2_mode = "exemplar"
    # several named classes at once: every nucleus gets one, with its probability
    rng = np.random.default_rng(1)
    picks = np.concatenate(
        [rng.choice(np.flatnonzero(classes == c), 3, replace=False) for c in (1, 2, 3)]
    )
    result = predictor.classify(
        centres[picks], np.repeat([0, 1, 2], 3), ["lymph", "epi", "spindle"]
    )
    assert result.task == "classes" and result.num_nuclei == len(ids)
    row = result.nucleus.classes
    assert (row + 1 == classes).mean() > 0.85
    assert result.nucleus.class_names == ["lymph", "epi", "spindle"]
    with pytest.raises(DataError, match="at least two classes"):
        predictor.classify(centres[:3], [0, 0, 0], ["only"])


def test_clicks_on_background_are_named_and_exemplar_t2_segments_nuclei_itself(tile, predictor):
    s, ids, classes, centres = tile
    predictor.forget_nuclei()  # exemplar T2 now segments the nuclei itself (T1 from the clicks)
    pts, lab = _clicks(ids, classes, centres, 2)
    pts = np.concatenate([pts, [[1.0, 1.0]]]).astype(np.float32)
    lab = np.concatenate([lab, [0]])
    # a model with random weights finds no nuclei, or some: either way a clear outcome
    try:
        result = predictor.predict(pts, lab, task="t2")
    except DataError as err:
        assert "nucle" in str(err)
    else:
        assert result.nucleus is not None
        if not any("click 8 (x=1, y=1) is on background" in m for m in result.messages):
            assert (result.nucleus.nuclei[:8, :8] > 0).any()  # it was snapped to a nucleus
    predictor.nuclei_from_labels(s.inst)
    with pytest.raises(DataError, match="none of the clicks names a nucleus"):
        predictor.predict(np.array([[1.0, 1.0], [2.0, 380.0]], np.float32), [1, 0], task="t2")
    with pytest.raises(DataError, match="labels of this image"):
        predictor.nuclei_from_labels(s.inst[:10])


def test_predict_config_refuses_bad_t2_settings():
    from sampo_engine.predict.predictor import PredictConfig

    with pytest.raises(ConfigError, match="probability"):
        PredictConfig(class_threshold=1.5).validate()
    with pytest.raises(ConfigError, match="snap-radius"):
        PredictConfig(snap_radius=-1).validate()


# ---------------------------------------------------------------------- scoring by nucleus


def test_centroid_f1_matches_one_to_one_within_the_radius():
    true = np.array([[10, 10], [10, 40], [40, 40]], float)
    pred = np.array([[12, 11], [11, 12], [40, 47], [80, 80]], float)  # two near the first
    m = centroid_f1(pred, true, radius=5.0)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 3, 2)
    assert m["f1"] == pytest.approx(2 / (2 + 3 + 2))
    assert centroid_f1(pred, true, radius=8.0)["tp"] == 2
    assert np.isnan(centroid_f1(np.zeros((0, 2)), np.zeros((0, 2)), 5.0)["f1"])
    assert radius_px(0.25) == 12.0 and radius_px(0.5) == 6.0
    labels = _disk_map((50, 50), [(10, 12), (30, 30)], [3, 4])
    ids, cents = label_centroids(labels)
    assert ids.tolist() == [1, 2] and np.allclose(cents, [[10, 12], [30, 30]])


def test_point_agreement_counts_nuclei_holding_dots():
    labels = _disk_map((50, 50), [(10, 10), (30, 30), (40, 10)], [4, 4, 4])
    dots = np.array([[10, 10], [30, 30], [10, 40], [45, 45]], float)  # (x, y)
    cls = np.array([1, 2, 1, 1])
    m = point_agreement(labels, dots, cls, target_class=1)
    # nuclei 1 and 3 hold class-1 dots, nucleus 2 a class-2 dot; the 4th dot is in none
    assert (m["held"], m["right"], m["covered"], m["class_points"]) == (3, 2, 2, 3)
    assert m["precision"] == pytest.approx(2 / 3) and m["coverage"] == pytest.approx(2 / 3)


# ------------------------------------------------------------------------------- exports


def test_cli_predict_t2_and_classes_write_class_and_probability(tile, tmp_path):
    import csv

    from sampo_engine.cli import main
    from sampo_engine.models.build import build_sam, save_base_checkpoint

    s, ids, classes, centres = tile
    import tifffile
    from skimage.io import imsave

    imsave(tmp_path / "tile.png", s.image, check_contrast=False)
    import torch

    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pth"
    save_base_checkpoint(build_sam("tiny", None, 224), ckpt)
    rng = np.random.default_rng(2)
    picks = np.concatenate(
        [rng.choice(np.flatnonzero(classes == c), 2, replace=False) for c in (1, 2)]
    )
    with open(tmp_path / "classes.csv", "w") as fh:
        fh.write("x,y,class\n")
        for i, name in zip(picks, ["lymph", "lymph", "epi", "epi"]):
            fh.write(f"{centres[i, 0]:.1f},{centres[i, 1]:.1f},{name}\n")
    args = ["predict", str(tmp_path / "tile.png"), "--points", str(tmp_path / "classes.csv")]
    args += ["--task", "classes", "--model", "tiny", "--checkpoint", str(ckpt), "--quiet"]
    args += ["--out", str(tmp_path / "out" / "tile"), "--device", "cpu"]
    code = main(args)
    if code == 0:  # random weights may find no nucleus at all: then a clear refusal (code 2)
        with open(tmp_path / "out" / "tile.csv") as fh:
            rows = list(csv.DictReader(fh))
        assert rows and {r["class"] for r in rows} <= {"lymph", "epi"}
        assert all(0 <= float(r["probability"]) <= 1 for r in rows)
        geo = json.loads((tmp_path / "out" / "tile.geojson").read_text())
        props = geo["features"][0]["properties"]
        assert props["classification"]["name"] in ("lymph", "epi")
        assert "probability" in props["measurements"]
        assert tifffile.imread(tmp_path / "out" / "tile_labels.tif").max() > 0
    else:
        assert code == 2
    with open(tmp_path / "one.csv", "w") as fh:
        fh.write("x,y,class\n10,10,a\n20,20,a\n")
    args[3] = str(tmp_path / "one.csv")
    assert main(args + ["--overwrite"]) == 2  # one class named: refused with the remedy
