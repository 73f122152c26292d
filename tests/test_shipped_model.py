"""The model shipped inside the package (``nuclei-small``, docs/model.md): found without a
download, the default where no official checkpoint is cached, verified before it is loaded, and
it finds nuclei on the real H&E sample tile."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from sampo_engine.errors import CheckpointError
from sampo_engine.models import availability
from sampo_engine.models.registry import SPECS, must_train_in_full

NAME = "nuclei-small"


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMPO_CACHE_DIR", str(tmp_path / "cache"))  # nothing downloaded


def test_shipped_model_is_listed_and_is_the_default_offline(offline):
    state = availability.model_state(NAME)
    assert state.state == availability.SHIPPED and state.usable and state.path.is_file()
    assert availability.default_model() == NAME
    assert not must_train_in_full(NAME)  # LoRA starts from it
    card = json.loads(state.path.with_suffix(".json").read_text())
    assert card["architecture"] == SPECS[NAME].architecture == "small"
    assert card["input_size"] == 224 and card["um_per_px"] == 0.25
    assert "CC BY-NC-SA" in card["licence"] and "non-commercial" in card["licence"]
    assert state.path.stat().st_size <= 20e6  # fp16 safetensors, ≤ 20 MB


def test_predict_defaults_to_it_and_finds_nuclei_on_the_real_tile(offline):
    from skimage.transform import rescale

    from sampo_engine.predict.predictor import PredictConfig, TilePredictor
    from sampo_engine.samples import brca_tile

    tile = brca_tile()
    # the sample is 20×, the model 40×: resample by 2 as docs/model.md says
    image = (rescale(tile.image, 2, order=1, channel_axis=2) * 255).round().astype(np.uint8)
    predictor = TilePredictor(PredictConfig(device="cpu"))
    assert predictor.model_type == NAME
    predictor.set_image(image)
    dots = tile.dots_xy * 2 + 0.5
    pred = predictor.predict(dots[:3], np.ones(3, np.int64), task="t1")
    assert pred.num_nuclei > 100
    rows = np.clip(dots[:, 1].round().astype(int), 0, image.shape[0] - 1)
    cols = np.clip(dots[:, 0].round().astype(int), 0, image.shape[1] - 1)
    assert (pred.labels[rows, cols] > 0).mean() > 0.5  # most experts' dots lie in a nucleus


def test_a_damaged_shipped_file_is_refused_before_loading(offline, tmp_path, monkeypatch):
    from sampo_engine.models.loading import load_model

    src = availability.shipped_weights_path(NAME)
    folder = tmp_path / "weights"
    folder.mkdir()
    copy = folder / src.name
    shutil.copy(src, copy)
    shutil.copy(src.with_suffix(".json"), folder / src.with_suffix(".json").name)
    with open(copy, "r+b") as fh:  # flip one byte in the middle of the tensors
        fh.seek(copy.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(availability, "shipped_weights_dir", lambda: folder)
    with pytest.raises(CheckpointError, match="does not match its model card"):
        load_model(NAME)
    copy.unlink()
    with pytest.raises(CheckpointError, match="missing from this install"):
        load_model(NAME)


def test_weights_list_shows_it(offline, capsys):
    from sampo_engine.cli import main

    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith(NAME))
    assert "shipped" in line and "nuclei_small.safetensors" in line


def test_main_job_starts_with_the_real_tile(offline, tmp_path):
    """Stage 0 of `sampo-engine demo`: the shipped tile, the shipped model, T1 and T2 from three
    clicks each, the exports and an overlay, and numbers against the experts' dots."""
    import tifffile

    from sampo_engine.real_tile import finetune_on_real_tile, segment_real_tile

    numbers = segment_real_tile(tmp_path, "cpu")
    assert numbers["model"] == NAME
    assert numbers["t1_nuclei"] > 100 and numbers["dots_inside_t1"] > 0.8
    assert 0 < numbers["t2_nuclei"] < numbers["t1_nuclei"]  # T2 keeps a part of the nuclei
    assert numbers["t2_coverage"] > 0.5
    # the type head's view of the nuclei: most picked nuclei are lymphocytes (53 % without it)
    assert 0.8 < numbers["t2_precision"] <= 1
    folder = tmp_path / "real_tile"
    for name in ("t1_labels.tif", "t1.geojson", "t1.csv", "t2_lymphocyte.csv", "overlay.png"):
        assert (folder / name).stat().st_size > 100, name
    assert tifffile.imread(folder / "t1_labels.tif").shape == (986, 986)
    geo = json.loads((folder / "t2_lymphocyte.geojson").read_text())
    props = geo["features"][0]["properties"]
    assert props["classification"]["name"] == "lymphocyte"
    assert 0.5 <= props["measurements"]["probability"] <= 1

    # then a short SAMPO fine-tune on the left half (nuclei classed by the dots), T2 before/after
    tuned = finetune_on_real_tile(tmp_path, numbers["t1_labels"], "cpu", steps=2)
    assert tuned["pseudo_nuclei"] > 50 and tuned["lymphocyte_dots"] > 50
    for key in ("precision_before", "precision_after", "coverage_before", "coverage_after"):
        assert 0 <= tuned[key] <= 1, key
    bundle = json.loads((folder / "adapter" / "sampo_bundle.json").read_text())
    assert bundle["complete"] and bundle["kind"] == "lora" and bundle["task"] == "t2"
    meta = json.loads((folder / "train_left_half" / "meta.json").read_text())
    assert meta["images"][0]["width"] == 493


def test_the_card_states_the_predictor_setting_the_engine_uses():
    """The card's instance setting (docs/instances.md) is what the predictor does by default."""
    import json
    from importlib import resources

    from sampo_engine.models.registry import SPECS
    from sampo_engine.predict.config import PredictConfig

    card_file = resources.files("sampo_engine.models.weights") / "nuclei_small.json"
    card = json.loads(card_file.read_text(encoding="utf-8"))["predictor"]
    cfg = PredictConfig()
    assert card["resample"] == SPECS["nuclei-small"].resample and cfg.resample == 0
    assert (card["threshold"], card["seed_distance"], card["seed_sigma"], card["min_size"]) == (
        cfg.threshold, cfg.seed_distance, cfg.seed_sigma, cfg.min_size,
    )  # fmt: skip
