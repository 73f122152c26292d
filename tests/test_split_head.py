"""The nucleus split head (docs/split_head.md): its targets, the split along its distance map, its
weights file, and a few training steps that learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sampo_engine.errors import ConfigError, DataError
from sampo_engine.models.split_head import (
    SplitHead,
    load_split_head,
    predict_split_maps,
    save_split_head,
)
from sampo_engine.predict.instances import split_by_distance
from sampo_engine.train.split_head import (
    SplitExample,
    SplitHeadConfig,
    normalised_distance,
    train_split_head,
)


def _two_touching_disks(side: int = 64, r: int = 10, gap: int = 17):
    """(H, W) int32 map of two overlapping disks (centres ``gap`` px apart, row 32)."""
    rr, cc = np.mgrid[:side, :side]
    inst = np.zeros((side, side), np.int32)
    c0 = side // 2 - gap // 2
    inst[(rr - 32) ** 2 + (cc - c0) ** 2 <= r**2] = 1
    second = (rr - 32) ** 2 + (cc - c0 - gap) ** 2 <= r**2
    inst[second & (inst == 0)] = 2
    return inst


def test_normalised_distance_is_one_at_each_centre_and_zero_outside():
    inst = _two_touching_disks()
    d = normalised_distance(inst)
    assert d[inst == 0].max() == 0
    for label in (1, 2):
        assert d[inst == label].max() == pytest.approx(1.0)
        assert d[inst == label].min() > 0
    # each nucleus has its own peak (the touching line is low)
    assert d[32, 32] < 0.5


def test_split_by_distance_cuts_touching_nuclei_along_the_distance():
    inst = _two_touching_disks(gap=14)
    fg = inst > 0
    d = normalised_distance(inst)
    labels = split_by_distance(fg, d, core_level=0.5, min_size=10)
    assert labels.max() == 2
    # each true nucleus is (mostly) one predicted nucleus, a different one each
    majority = [np.bincount(labels[inst == k]).argmax() for k in (1, 2)]
    assert 0 not in majority and majority[0] != majority[1]
    # one core only (a low level joins them): one nucleus
    assert split_by_distance(fg, d, core_level=0.05, min_size=10).max() == 1


def test_split_by_distance_keeps_coreless_pieces_and_drops_small_ones():
    fg = np.zeros((40, 40), bool)
    fg[5:15, 5:15] = True  # 100 px, no core in the distance map
    fg[30:33, 30:33] = True  # 9 px: dropped
    labels = split_by_distance(fg, np.zeros(fg.shape, np.float32), 0.5, min_size=20)
    assert labels.max() == 1 and (labels[5:15, 5:15] == 1).all() and labels[31, 31] == 0


def test_split_by_distance_refuses_bad_input():
    with pytest.raises(DataError, match="one size"):
        split_by_distance(np.ones((4, 4), bool), np.ones((5, 4)))
    with pytest.raises(DataError, match="core_level"):
        split_by_distance(np.ones((4, 4), bool), np.ones((4, 4)), core_level=1.0)
    assert split_by_distance(np.zeros((4, 4), bool), np.zeros((4, 4))).max() == 0


@pytest.mark.parametrize("depth", [2, 3])
def test_head_runs_on_any_size_and_in_windows(monkeypatch, depth):
    import sampo_engine.models.split_head as sh

    torch.manual_seed(0)
    head = SplitHead(4, depth=depth).eval()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)
    prob = rng.random((70, 90)).astype(np.float32)
    fg, dist = predict_split_maps(head, rgb, prob)
    assert fg.shape == dist.shape == (70, 90)
    assert 0 <= fg.min() and fg.max() <= 1
    # in windows with a halo covering the receptive field: the same maps (batch norm is in
    # eval mode, so each pixel depends on its neighbourhood only)
    monkeypatch.setattr(sh, "WINDOW", 32)
    monkeypatch.setattr(sh, "HALO", 24 if depth == 2 else 32)  # the deeper head reaches farther
    assert sh.halo(head) == (24 if depth == 2 else 64)
    fg_w, dist_w = predict_split_maps(head, rgb, prob)
    assert np.abs(fg_w - fg).max() < 1e-4 and np.abs(dist_w - dist).max() < 1e-4
    with pytest.raises(DataError, match="same size"):
        predict_split_maps(head, rgb, prob[:10])


def test_flip_averaging_is_equivariant_to_flipping_the_image():
    rng = np.random.default_rng(0)
    head = SplitHead(width=4)
    rgb = rng.integers(0, 255, (40, 56, 3), np.uint8)
    prob = rng.random((40, 56)).astype(np.float32)
    fg, dist = predict_split_maps(head, rgb, prob, flips=True)
    fg_f, dist_f = predict_split_maps(head, rgb[:, ::-1].copy(), prob[:, ::-1].copy(), flips=True)
    assert np.allclose(fg_f[:, ::-1], fg, atol=1e-5) and np.allclose(
        dist_f[:, ::-1], dist, atol=1e-5
    )
    plain, _ = predict_split_maps(head, rgb, prob)
    assert not np.allclose(plain, fg, atol=1e-5)  # it is an average, not the plain pass


def test_weights_round_trip_and_damaged_files_are_refused(tmp_path):
    torch.manual_seed(0)
    head = SplitHead(4).eval()
    path = tmp_path / "head.safetensors"
    save_split_head(head, path, {"trained_on": "test"})
    back = load_split_head(path)
    x = torch.rand(1, 4, 16, 16)
    with torch.no_grad():
        assert torch.allclose(head(x), back(x), atol=2e-2)  # fp16 weights
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DataError, match="not a readable safetensors"):
        load_split_head(bad)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(DataError, match="not a split head"):
        load_split_head(other)
    deep = SplitHead(4, depth=3)
    save_split_head(deep, tmp_path / "deep.safetensors")
    assert load_split_head(tmp_path / "deep.safetensors").depth == 3  # read from the header
    with pytest.raises(DataError, match="depth"):
        SplitHead(4, depth=5)
    with pytest.raises(DataError, match="no split head file"):
        load_split_head(tmp_path / "missing.safetensors")


def test_config_refuses_impossible_settings():
    with pytest.raises(ConfigError, match="crop"):
        SplitHeadConfig(crop=30)
    with pytest.raises(ConfigError, match="multiple of 8"):
        SplitHeadConfig(crop=36, depth=3)  # a multiple of 4 is not enough three levels down
    with pytest.raises(ConfigError, match="depth"):
        SplitHeadConfig(depth=1)
    with pytest.raises(ConfigError, match="steps"):
        SplitHeadConfig(steps=0)
    with pytest.raises(ConfigError, match="lr"):
        SplitHeadConfig(lr=0)


def test_a_few_training_steps_lower_the_loss():
    from sampo_engine.models.split_head import head_input

    inst = _two_touching_disks()
    rgb = np.full((*inst.shape, 3), 230, np.uint8)
    rgb[inst > 0] = (70, 40, 140)
    prob = (inst > 0).astype(np.float32)
    y = np.stack([(inst > 0).astype(np.float32), normalised_distance(inst)])
    example = SplitExample(head_input(rgb, prob)[0], torch.from_numpy(y), "disks")
    cfg = SplitHeadConfig(steps=40, batch_size=2, crop=48, width=4, lr=1e-2)
    head, log = train_split_head([example], cfg)
    assert np.mean(log["losses"][-5:]) < np.mean(log["losses"][:5])
    assert not head.training


# ------------------------------------------------------------------ the shipped head in use


def _flip_a_byte(path):
    with open(path, "r+b") as fh:
        fh.seek(path.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))


def _real_tile_x2():
    from skimage.transform import rescale

    from sampo_engine.samples import brca_tile

    tile = brca_tile()
    image = (rescale(tile.image[:240, :240], 2, order=1, channel_axis=2) * 255).round()
    return image.astype(np.uint8), tile.dots_xy


def test_the_shipped_model_cuts_nuclei_with_its_verified_head_by_default():
    import json

    from sampo_engine.models.availability import shipped_weights_dir
    from sampo_engine.predict.predictor import PredictConfig, TilePredictor

    card = json.loads((shipped_weights_dir() / "nuclei_small.json").read_text())["split_head"]
    assert 0 < card["core_level"] < 1 and card["bytes"] < 1e6
    image, _ = _real_tile_x2()
    results = {}
    for split in ("auto", "head+flips", "watershed"):
        predictor = TilePredictor(PredictConfig(model="nuclei-small", device="cpu", split_by=split))
        assert predictor.splitter.method == ("watershed" if split == "watershed" else "head")
        predictor.set_image(image)
        pts = np.array([[100.0, 100.0], [300.0, 200.0]], np.float32)
        results[split] = predictor.predict(pts, np.ones(2, np.int64), task="t1")
    head, ws = results["auto"], results["watershed"]
    assert head.num_nuclei > 20 and ws.num_nuclei > 20
    assert not np.array_equal(head.labels, ws.labels)  # the head cut them, not the watershed
    assert np.array_equal(head.prob, ws.prob)  # the model's answer is the same
    flips = results["head+flips"]  # the head averaged over four flips: other cuts, same answer
    assert flips.num_nuclei > 20 and np.array_equal(flips.prob, head.prob)
    assert not np.array_equal(flips.labels, head.labels)
    # the decoder's T2 is cut by the watershed whatever the setting
    predictor = TilePredictor(PredictConfig(model="nuclei-small", device="cpu", t2_mode="decoder"))
    predictor.set_image(image)
    t2 = predictor.predict(np.array([[100.0, 100.0]]), np.ones(1, np.int64), task="t2")
    assert t2.mask.sum() == (t2.prob > predictor.config.threshold).sum()


def test_a_damaged_head_falls_back_to_the_watershed_or_is_refused(tmp_path, monkeypatch):
    import shutil

    from sampo_engine.models import availability
    from sampo_engine.predict.predictor import PredictConfig, TilePredictor

    src = availability.shipped_weights_dir()
    folder = tmp_path / "weights"
    shutil.copytree(src, folder)
    _flip_a_byte(folder / "nuclei_small_split_head.safetensors")
    monkeypatch.setattr(availability, "shipped_weights_dir", lambda: folder)
    with pytest.raises(DataError, match="SHA-256 differs.*--split-by watershed"):
        TilePredictor(PredictConfig(model="nuclei-small", device="cpu", split_by="head"))
    predictor = TilePredictor(PredictConfig(model="nuclei-small", device="cpu"))
    assert predictor.splitter.method == "watershed"
    image, _ = _real_tile_x2()
    predictor.set_image(image)
    pred = predictor.predict(np.array([[100.0, 100.0]]), np.ones(1, np.int64), task="t1")
    assert any("split head unusable" in m for m in pred.messages) and pred.num_nuclei > 0


def test_asking_for_a_head_the_model_lacks_is_refused_with_the_remedy():
    from sampo_engine.predict.predictor import PredictConfig, TilePredictor

    with pytest.raises(ConfigError, match="ships no split head.*--split-by watershed"):
        TilePredictor(PredictConfig(model="tiny", device="cpu", split_by="head"))
    with pytest.raises(ConfigError, match="--split-by head\\+flips: model tiny ships no split"):
        TilePredictor(PredictConfig(model="tiny", device="cpu", split_by="head+flips"))
    with pytest.raises(ConfigError, match="--split-by must be one of"):
        PredictConfig(split_by="peaks").validate()


def test_the_head_sees_the_image_at_40x_whatever_the_model_is_shown():
    """--um-per-px 0.5: the head runs on the image ×2 and its nuclei come back at the image's
    size; --resample changes what the model sees, not the image's magnification."""
    from skimage.transform import rescale

    from sampo_engine.predict.predictor import PredictConfig, TilePredictor

    image, _ = _real_tile_x2()
    half = (rescale(image, 0.5, order=1, channel_axis=2) * 255).round().astype(np.uint8)
    at_20x = TilePredictor(PredictConfig(model="nuclei-small", device="cpu", um_per_px=0.5))
    assert at_20x.splitter.head_scale == pytest.approx(2.0)
    at_20x.set_image(half)
    pred = at_20x.predict(np.array([[50.0, 50.0]]), np.ones(1, np.int64), task="t1")
    assert pred.labels.shape == pred.mask.shape == half.shape[:2] and pred.num_nuclei > 5
    shown = TilePredictor(PredictConfig(model="nuclei-small", device="cpu", resample=1.0))
    assert shown.splitter.head_scale == 1.0 and shown.resample == 1.0
