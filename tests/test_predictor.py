"""Whole-tile prediction: tiling, blending, the embedding cache, prompt propagation, the predictor.

A random ``tiny`` SAM predicts garbage masks, so these tests check the mechanism: which tiles get
prompts, where probability is zero, how often the encoder runs. One test swaps the image encoder
for a fixed colour encoder (mean colour of each 16 px cell, projected) so that similarity is
meaningful and propagation must find exactly the tiles that hold the clicked kind of object.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sampo_engine.errors import Cancelled, ConfigError, DataError, SampoError
from sampo_engine.predict import propagation, tiling
from sampo_engine.predict.cache import EmbeddingCache, image_digest
from sampo_engine.predict.predictor import PredictConfig, Prediction, TilePredictor

S = 224  # tiny's input size
OVERLAP = 32
THREE = S + 2 * (S - OVERLAP)  # 608 px: exactly 3 × 3 tiles


def _tiny():
    from sampo_engine.models.build import build_sam
    from sampo_engine.models.lora import frozen

    torch.manual_seed(0)
    adapted = frozen(build_sam("tiny"))
    adapted.image_size, adapted.model_type, adapted.info = S, "tiny", None
    return adapted


@pytest.fixture(scope="module")
def tiny():
    return _tiny()


def _config(**kw) -> PredictConfig:
    kw.setdefault("device", "cpu")
    # the untrained tiny model's probabilities hover near 0.45: at the shipped threshold (0.4,
    # docs/instances.md) the whole image would be one nucleus, so these tests cut at 0.5
    kw.setdefault("threshold", 0.5)
    kw.setdefault("overlap", OVERLAP)
    return PredictConfig(**kw)


def _image(size=THREE, seed=0) -> np.ndarray:
    from sampo_engine.data.synthetic import make_synthetic_sample

    return make_synthetic_sample((size, size) if np.isscalar(size) else size, seed=seed).image


# ------------------------------------------------------------------------------------ tiling


@pytest.mark.parametrize("length", [1, 100, 224, 225, 608, 1000, 2048])
def test_tiles_cover_the_axis_with_at_least_the_overlap(length):
    starts = tiling.axis_starts(length, S, OVERLAP)
    assert starts[0] == 0 and starts[-1] == max(length - S, 0)
    if len(starts) > 1:
        assert np.all(np.diff(starts) <= S - OVERLAP)  # overlap ≥ requested
        assert np.all(np.diff(starts) > 0)


def test_grid_of_three_by_three_and_small_images():
    grid = tiling.make_grid(THREE, THREE, S, OVERLAP)
    assert len(grid) == 9 and set(grid.y0.tolist()) == {0, 192, 384}
    small = tiling.make_grid(100, 150, S, OVERLAP)
    assert len(small) == 1 and small.padded_shape == (S, S)
    with pytest.raises(ConfigError, match="overlap"):
        tiling.make_grid(500, 500, S, 200)
    with pytest.raises(DataError, match="empty"):
        tiling.make_grid(0, 10, S, OVERLAP)


def test_blend_window_is_flat_inside_and_floored_at_the_edge():
    w = tiling.blend_window(S, OVERLAP)
    assert w.shape == (S, S) and np.allclose(w, w.T) and np.allclose(w, w[::-1, ::-1])
    assert w[S // 2, S // 2] == pytest.approx(1.0)
    assert w.min() >= tiling.WINDOW_FLOOR * tiling.WINDOW_FLOOR - 1e-6
    assert np.all(np.diff(w[S // 2, : S // 2]) >= 0)  # rises monotonically towards the core


def test_blender_reproduces_a_constant_and_abstains_outside_decoded_tiles():
    grid = tiling.make_grid(500, 430, S, OVERLAP)
    window = torch.from_numpy(tiling.blend_window(S, OVERLAP))
    blender = tiling.ProbabilityBlender(grid, window)
    decoded = [i for i in range(len(grid)) if i != len(grid) - 1]  # the last tile abstains
    blender.add(decoded, torch.full((len(decoded), S, S), 0.7))
    prob = blender.result()
    assert prob.shape == (500, 430) and prob.dtype == np.float32
    covered = prob > 0
    assert np.allclose(prob[covered], 0.7, atol=1e-5)  # a constant blends to itself
    last_y, last_x = grid.y0[-1], grid.x0[-1]
    assert not covered[-1, -1] and covered[last_y - 1, last_x - 1]


def test_pad_image_keeps_content_and_reaches_one_tile():
    image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    grid = tiling.make_grid(5, 7, S, OVERLAP)
    padded = tiling.pad_image(image, grid)
    assert padded.shape == (S, S, 3) and np.array_equal(padded[:5, :7], image)
    one = tiling.pad_image(np.zeros((1, 1, 3), np.uint8), tiling.make_grid(1, 1, S, OVERLAP))
    assert one.shape == (S, S, 3)


# ------------------------------------------------------------------------------- propagation


def test_pick_cells_takes_the_best_spaced_apart_at_most_k():
    score = np.zeros((14, 14), np.float32)
    score[3, 3], score[3, 4], score[10, 10], score[0, 13] = 0.9, 0.95, 0.8, 0.7
    picked = propagation.pick_cells(score, score > 0.5, 3, min_spacing=2)
    assert picked == [(3, 4), (10, 10), (0, 13)]  # (3, 3) is suppressed next to (3, 4)
    assert propagation.pick_cells(score, score > 0.85, 3, 2) == [(3, 4)]
    assert propagation.pick_cells(score, score > 2, 3, 2) == []


def test_propagate_prompts_only_tiles_holding_the_exemplar_feature():
    g, c = 14, 8
    rng = np.random.default_rng(0)
    background, target = rng.normal(size=c), rng.normal(size=c)
    emb = np.tile(background[None, :, None, None], (4, 1, g, g)).astype(np.float32)
    emb += 0.05 * rng.normal(size=emb.shape).astype(np.float32)
    for tile, cells in {
        0: [(2, 2)],
        1: [(5, 5), (5, 6), (9, 9), (1, 12), (12, 1)],
        3: [(7, 7)],
    }.items():
        for r, col in cells:
            emb[tile, :, r, col] = target
    emb = torch.from_numpy(emb)
    exemplar = propagation.features_at(emb[0], np.array([[2 * 16 + 7.5, 2 * 16 + 7.5]]), S)
    assert torch.allclose(exemplar[0], torch.from_numpy(target.astype(np.float32)), atol=1e-5)
    negative = propagation.features_at(emb[0], np.array([[100.0, 180.0]]), S)
    protos = propagation.build_prototypes(exemplar, negative, emb.mean(dim=(0, 2, 3)))
    valid = np.ones((3, g, g), bool)
    out = propagation.propagate(emb, np.array([1, 2, 3]), protos, valid, min_similarity=0.5)
    assert set(out) == {1, 3}  # tile 2 has no target cell: no prompt at all
    p1 = out[1]
    assert p1.propagated and p1.num_positive == 3  # five candidates, at most three
    xy = p1.points[p1.labels == 1]
    assert ((xy - 7.5) % 16 == 0).all()  # cell centres
    cells = {(int(y // 16), int(x // 16)) for x, y in xy}
    assert cells <= {(5, 5), (5, 6), (9, 9), (1, 12), (12, 1)}
    assert not {(5, 5), (5, 6)} <= cells  # neighbours are not both taken
    assert out[3].num_positive == 1
    # padding cells are never prompted
    valid[2 - 1, 7, 7] = False
    out = propagation.propagate(emb, np.array([1, 3]), protos, valid[:2], min_similarity=0.5)
    assert set(out) == {1}


def test_limits_match_the_training_prompts():
    from sampo_engine import prompts

    assert propagation.MAX_POSITIVE == prompts.MAX_POSITIVE
    assert propagation.MAX_NEGATIVE == prompts.MAX_NEGATIVE


# -------------------------------------------------------------------------------- predictor


def test_clicks_in_one_tile_give_labels_over_the_whole_image(tiny):
    predictor = TilePredictor(_config(similarity=-1.0), model=tiny)
    image = _image()
    predictor.set_image(image)
    assert predictor.num_tiles == 9 and predictor.encoder_calls == 2  # batches of 8
    seen = []
    pred = predictor.predict(
        np.array([[60.0, 70.0], [100.0, 20.0], [30.0, 150.0]]),
        np.array([1, 1, 0]),
        progress=lambda d, t: seen.append((d, t)),
    )
    assert isinstance(pred, Prediction)
    assert pred.tiles_with_prompts == 1 and pred.tiles_propagated == 8 and pred.num_tiles == 9
    assert pred.prob.shape == pred.mask.shape == pred.labels.shape == image.shape[:2]
    assert pred.prob.dtype == np.float32 and pred.mask.dtype == bool
    assert pred.labels.dtype == np.int32
    for r in (100, 300, 500):  # every tile's core got a probability from its own prompts
        for c in (100, 300, 500):
            assert pred.prob[r - 20 : r + 20, c - 20 : c + 20].max() > 0
    ids = np.unique(pred.labels)
    ids = ids[ids > 0]  # (an untrained model may leave no background at all)
    assert pred.num_nuclei == len(ids) and np.array_equal(ids, np.arange(1, pred.num_nuclei + 1))
    if pred.num_nuclei:
        assert np.bincount(pred.labels.ravel())[1:].min() >= predictor.config.min_size
    assert np.array_equal(pred.mask, pred.prob > predictor.config.threshold)
    assert seen[-1][0] == seen[-1][1] and pred.task == "t1" and pred.class_name is None


def test_without_propagation_only_clicked_tiles_are_segmented(tiny):
    # T2 by the decoder (the by-nucleus mode decodes no tile: tests/test_exemplars.py)
    predictor = TilePredictor(_config(propagate=False, t2_mode="decoder"), model=tiny)
    predictor.set_image(_image())
    pred = predictor.predict(np.array([[60.0, 70.0]]), np.array([1]), task="t2")
    assert pred.tiles_with_prompts == 1 and pred.tiles_propagated == 0
    assert pred.prob[:190, :190].max() > 0
    assert pred.prob[:, 230:].max() == 0 and pred.prob[230:].max() == 0  # other tiles: nothing
    assert pred.class_name == "T2 target"


class ColourEncoder(nn.Module):
    """A fixed 'image encoder': mean normalised colour of each 16 px cell, projected to C."""

    def __init__(self, channels: int):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("proj", torch.randn(channels, 3, generator=gen))
        self.register_buffer("bias", torch.randn(channels, generator=gen))

    def forward(self, x):
        cells = nn.functional.avg_pool2d(x, 16)  # (B, 3, g, g)
        return torch.einsum("kc,bchw->bkhw", self.proj, cells) + self.bias[None, :, None, None]


def test_propagation_finds_the_tiles_holding_the_clicked_kind_of_object():
    model = _tiny()
    model.sam.image_encoder = ColourEncoder(64)
    image = np.full((THREE, THREE, 3), 235, np.uint8)  # pale background everywhere
    yy, xx = np.mgrid[:THREE, :THREE]
    centres = [(60, 60), (80, 140), (520, 520), (540, 450)]  # tiles 0 and 8 only
    for cy, cx in centres:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 14**2] = (60, 30, 110)  # dark purple "nuclei"
    predictor = TilePredictor(_config(similarity=0.5, t2_mode="decoder"), model=model)
    predictor.set_image(image)
    prompts, clicked = predictor.tile_prompts(
        np.array([[60.0, 60.0], [150.0, 40.0]]), np.array([1, 0])
    )
    assert clicked == {0}
    assert set(prompts) == {0, 8}  # tile 8 holds the same kind of object; 1–7 hold none
    assert prompts[8].propagated and prompts[8].num_positive >= 1
    pos = prompts[8].points[prompts[8].labels == 1] + [384, 384]
    near = [min(np.hypot(x - cx, y - cy) for cy, cx in centres) for x, y in pos]
    assert max(near) < 16  # the propagated positives sit on the objects
    pred = predictor.predict(np.array([[60.0, 60.0], [150.0, 40.0]]), np.array([1, 0]), task="t2")
    assert pred.tiles_propagated == 1
    assert pred.prob[250:350, 250:350].max() == 0  # the centre tile got no prompt: empty
    assert pred.prob[450:600, 450:600].max() > 0


def test_cache_reprompt_and_same_image_skip_the_encoder(tiny, tmp_path):
    predictor = TilePredictor(_config(similarity=-1.0), model=tiny)
    image = _image(seed=3)
    predictor.set_image(image)
    calls = predictor.encoder_calls
    a = predictor.predict(np.array([[50.0, 50.0]]), np.array([1]))
    b = predictor.predict(np.array([[400.0, 300.0], [10.0, 10.0]]), np.array([1, 0]))
    assert predictor.encoder_calls == calls  # new clicks: decoder only
    assert not np.array_equal(a.prob, b.prob)
    progress = []
    predictor.set_image(image.copy(), progress=lambda d, t: progress.append((d, t)))
    assert predictor.encoder_calls == calls and progress == [(9, 9)]  # cache hit
    predictor.set_image(_image(seed=4))
    assert predictor.encoder_calls == 2 * calls  # another image: encoded
    predictor.set_image(image)
    assert predictor.encoder_calls == 2 * calls  # LRU still holds the first
    again = predictor.predict(np.array([[50.0, 50.0]]), np.array([1]))
    assert np.array_equal(again.prob, a.prob)


def test_changed_weights_or_tiling_miss_the_cache(tiny):
    model = _tiny()
    predictor = TilePredictor(_config(), model=model)
    image = _image(seed=5)
    predictor.set_image(image)
    calls = predictor.encoder_calls
    with torch.no_grad():
        model.sam.image_encoder.neck[0].weight.mul_(1.01)  # fine-tuned in place
    predictor.set_image(image)
    assert predictor.encoder_calls == 2 * calls
    predictor.config.overlap = 48
    predictor.set_image(image)
    assert predictor.encoder_calls > 2 * calls


def test_disk_cache_serves_a_new_predictor(tiny, tmp_path):
    image = _image(seed=6)
    first = TilePredictor(_config(cache_dir=str(tmp_path)), model=tiny)
    first.set_image(image)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
    second = TilePredictor(_config(cache_dir=str(tmp_path)), model=tiny)
    second.set_image(image)
    assert second.encoder_calls == 0 and second.cache.disk_hits == 1
    assert torch.equal(first._entry.embeddings, second._entry.embeddings)
    files[0].write_bytes(b"garbage")  # a damaged file is ignored and re-encoded
    third = TilePredictor(_config(cache_dir=str(tmp_path)), model=tiny)
    third.set_image(image)
    assert third.encoder_calls > 0


def test_memory_cache_is_bounded():
    cache = EmbeddingCache(max_items=2)
    grid = tiling.make_grid(10, 10, S, OVERLAP)
    from sampo_engine.predict.cache import TileEmbeddings

    for key in "abc":
        cache.put(TileEmbeddings(key, grid, torch.zeros(1, 4, 14, 14)))
    assert len(cache) == 2 and "a" not in cache and cache.get("c", grid) is not None
    assert image_digest(np.zeros((2, 2))) != image_digest(np.zeros((2, 2), np.float32))


def test_any_image_kind_and_size(tiny):
    predictor = TilePredictor(_config(similarity=-1.0), model=tiny)
    rng = np.random.default_rng(0)
    for image in (
        rng.integers(0, 65535, (100, 150), dtype=np.uint16),  # 16-bit gray, smaller than a tile
        rng.integers(0, 255, (230, 300, 4), dtype=np.uint8),  # RGBA
    ):
        predictor.set_image(image)
        pred = predictor.predict(np.array([[5.0, 7.0]]), np.array([1]))
        assert pred.labels.shape == image.shape[:2]


def test_cancel_and_bad_input(tiny):
    predictor = TilePredictor(_config(), model=tiny)
    with pytest.raises(SampoError, match="set_image"):
        predictor.predict(np.array([[1.0, 1.0]]), np.array([1]))
    with pytest.raises(Cancelled):
        predictor.set_image(_image(seed=7), should_stop=lambda: True)
    assert predictor.encoder_calls == 0
    predictor.set_image(_image(size=(300, 400), seed=7))
    with pytest.raises(DataError, match=r"#1 \(x=400, y=3\)") as err:
        predictor.predict(np.array([[5.0, 5.0], [400.0, 3.0]]), np.array([1, 1]))
    assert "400 × 300" in str(err.value)
    with pytest.raises(DataError, match="no positive"):
        predictor.predict(np.array([[5.0, 5.0]]), np.array([0]))
    with pytest.raises(DataError, match="labels"):
        predictor.predict(np.array([[5.0, 5.0]]), np.array([2]))
    with pytest.raises(ConfigError, match="task"):
        predictor.predict(np.array([[5.0, 5.0]]), np.array([1]), task="t3")
    with pytest.raises(Cancelled):
        predictor.predict(np.array([[5.0, 5.0]]), np.array([1]), should_stop=lambda: True)
    with pytest.raises(ConfigError, match="image_size"):
        TilePredictor(_config(image_size=256), model=tiny)
    with pytest.raises(ConfigError, match="threshold"):
        TilePredictor(_config(threshold=1.5), model=tiny)


def test_points_from_napari_swaps_row_and_column():
    rc = np.array([[10.0, 20.0], [3.5, 7.25]])
    assert np.array_equal(TilePredictor.points_from_napari(rc), [[20.0, 10.0], [7.25, 3.5]])
    nd = np.array([[0.0, 10.0, 20.0]])  # (plane, row, col) of a 3-D layer
    assert np.array_equal(TilePredictor.points_from_napari(nd), [[20.0, 10.0]])


def test_clicked_tiles_use_at_most_three_nearest_clicks(tiny):
    predictor = TilePredictor(_config(propagate=False), model=tiny)
    predictor.set_image(_image())
    pts = np.array(
        [[112, 112], [100, 100], [120, 110], [5, 5], [200, 200], [111, 113], [200, 100]], float
    )
    prompts, clicked = predictor.tile_prompts(pts, np.array([1, 1, 1, 1, 0, 1, 1]))
    assert clicked == {0, 1}  # (200, 100) lies in the overlap of tiles 0 and 1
    p0 = prompts[0]
    assert p0.num_positive == 3 and (p0.labels == 0).sum() == 1
    kept = p0.points[p0.labels == 1].tolist()
    assert [5.0, 5.0] not in kept and [200.0, 100.0] not in kept  # the farthest are dropped
    p1 = prompts[1]  # tile-local coordinates: tile 1 starts at x = 192
    assert p1.points[p1.labels == 1].tolist() == [[8.0, 100.0]]
    assert p1.points[p1.labels == 0].tolist() == [[8.0, 200.0]]


def test_the_task_is_part_of_the_config_and_validated():
    from sampo_engine.errors import ConfigError
    from sampo_engine.predict.config import PREDICT_TASKS, PredictConfig

    assert PREDICT_TASKS == ("t1", "t2", "classes") and PredictConfig().task == "t1"
    with pytest.raises(ConfigError, match="--task must be one of t1, t2, classes, not 'all'"):
        PredictConfig(task="all").validate()


def test_the_instance_split_follows_the_config_and_refuses_impossible_settings(tiny):
    """The predictor cuts its foreground into nuclei with the config's seed distance, smoothing
    and minimum size (the defaults chosen in docs/instances.md); nonsense is refused by name."""
    from sampo_engine.errors import ConfigError
    from sampo_engine.predict.instances import split_instances

    clicks = np.array([[60.0, 70.0], [100.0, 20.0]]), np.array([1, 1])
    image, counts = _image(), []
    for kw in ({}, {"seed_distance": 3, "seed_sigma": 1.0, "min_size": 16}):
        predictor = TilePredictor(_config(similarity=-1.0, **kw), model=tiny)
        predictor.set_image(image)
        pred = predictor.predict(*clicks)
        cfg = predictor.config
        expected = split_instances(
            pred.prob,
            threshold=cfg.threshold,
            min_size=cfg.min_size,
            min_distance=cfg.seed_distance,
            sigma=cfg.seed_sigma,
        )
        assert np.array_equal(pred.labels, expected)
        counts.append(pred.num_nuclei)
    assert 0 < counts[0] < counts[1]  # closer seeds, less smoothing: more, smaller pieces
    defaults = PredictConfig()
    assert (defaults.threshold, defaults.seed_distance, defaults.seed_sigma) == (0.4, 8, 3.0)
    assert defaults.min_size == 48
    with pytest.raises(ConfigError, match="--seed-distance must be ≥ 1 px, got 0"):
        PredictConfig(seed_distance=0).validate()
    with pytest.raises(ConfigError, match="--seed-sigma must be ≥ 0 px"):
        PredictConfig(seed_sigma=-1).validate()


def test_the_model_may_see_the_image_resampled_while_clicks_and_results_keep_its_size(tiny):
    """``resample``: the model sees the image ×1.5 (more tiles), the clicks are mapped onto it,
    and every result — probability, mask, nuclei, exemplar T2, named classes — comes back at
    the image's own size; 0 takes the model's own factor (1.5 for nuclei-small)."""
    from sampo_engine.errors import ConfigError
    from sampo_engine.predict.resample import labels_to_shape, points_to_model

    image = _image(300)
    clicks = np.array([[60.0, 70.0], [100.0, 20.0], [200.0, 240.0]]), np.array([1, 1, 0])
    plain = TilePredictor(_config(similarity=-1.0, resample=1.0), model=tiny)
    plain.set_image(image)
    scaled = TilePredictor(_config(similarity=-1.0, resample=1.5), model=tiny)
    scaled.set_image(image)
    assert scaled.resample == 1.5 and scaled.image_shape == plain.image_shape == (300, 300)
    assert scaled.tile_grid.shape == (450, 450) and scaled.num_tiles > plain.num_tiles
    for task in ("t1", "t2"):
        for mode in ("decoder", "exemplar", "hybrid"):
            scaled.config.t2_mode = mode
            pred = scaled.predict(*clicks, task=task)
            assert pred.prob.shape == pred.mask.shape == pred.labels.shape == (300, 300)
            if pred.nucleus is not None:
                assert pred.nucleus.nuclei.shape == (300, 300)
    named = scaled.classify(clicks[0], np.array([0, 0, 1]), ["a", "b"])
    assert named.labels.shape == named.nucleus.nuclei.shape == (300, 300)
    # an edited nuclei map of the image's size is accepted; one of the model's size is not
    truth = np.zeros((300, 300), np.int32)
    truth[50:80, 50:80], truth[200:230, 190:220] = 1, 2
    scaled.nuclei_from_labels(truth)
    with pytest.raises(DataError, match="the nuclei map is"):
        scaled.nuclei_from_labels(np.zeros((450, 450), np.int32))
    # pixel centres map onto pixel centres; nearest-neighbour maps keep their ids
    assert np.allclose(
        points_to_model(np.array([[0.0, 0.0], [10.0, 4.0]]), 2.0), [[0.5, 0.5], [20.5, 8.5]]
    )
    assert set(np.unique(labels_to_shape(labels_to_shape(truth, (450, 450)), (300, 300)))) == {
        0,
        1,
        2,
    }
    # 0 = the model's own factor
    from sampo_engine.models.registry import SPECS

    assert SPECS["nuclei-small"].resample == 1.5 and SPECS["tiny"].resample == 1.0
    assert TilePredictor(_config(resample=0), model=tiny).resample == 1.0
    with pytest.raises(ConfigError, match="--resample must be 0"):
        PredictConfig(resample=10).validate()
