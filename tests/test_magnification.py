"""The magnification check: a model-free nucleus size, the warning it gives, and the pixel size a
user tells the predictor (``--um-per-px``) — docs/magnification.md."""

from __future__ import annotations

import numpy as np
import pytest

from sampo_engine.errors import ConfigError
from sampo_engine.nuclei.scale import (
    REFERENCE_RADIUS_PX,
    check_scale,
    granulometric_radius,
    typical_nucleus_radius,
)
from sampo_engine.predict.config import PredictConfig


def _he_tile(radius: float, side: int = 320, seed: int = 0) -> np.ndarray:
    from sampo_engine.data.synthetic import make_round_nuclei_tile

    return make_round_nuclei_tile(radius, side, seed)


def test_granulometric_radius_of_disks_and_of_touching_disks():
    rr, cc = np.mgrid[:200, :200]
    one = (rr - 100) ** 2 + (cc - 100) ** 2 <= 10**2
    assert granulometric_radius(one) == pytest.approx(10, rel=0.15)
    pair = one | ((rr - 100) ** 2 + (cc - 119) ** 2 <= 10**2)  # two touching nuclei
    assert granulometric_radius(pair) == pytest.approx(10, rel=0.15)  # not the pair's size


def test_radius_follows_the_nuclei_and_halves_with_the_image():
    from sampo_engine.predict.resample import resample_image

    big, small = typical_nucleus_radius(_he_tile(12)), typical_nucleus_radius(_he_tile(6))
    assert big.radius_px == pytest.approx(12, rel=0.2)
    assert small.radius_px == pytest.approx(6, rel=0.25)
    halved = typical_nucleus_radius(resample_image(_he_tile(12, 480), 0.5))
    assert halved.radius_px == pytest.approx(big.radius_px / 2, rel=0.2)


def test_far_off_nuclei_are_named_with_the_expected_pixel_size_and_the_remedy():
    at_size = check_scale(_he_tile(REFERENCE_RADIUS_PX))
    assert at_size.message == "" and at_size.ratio == pytest.approx(1, rel=0.25)
    small = check_scale(_he_tile(4), model="nuclei-small")  # a 20×-like image told nothing
    assert small.ratio > 1.8
    assert small.message.startswith("magnification:")
    for words in ("nuclei-small", "0.25 µm/px", "--um-per-px", "smaller"):
        assert words in small.message
    told = check_scale(_he_tile(4), assumed_um_per_px=0.5)  # ... told its pixel size
    assert told.message == ""
    large = check_scale(_he_tile(22, 480))  # an 80×-like image
    assert large.ratio < 1 / 1.8 and "larger" in large.message


def test_blank_or_all_dark_images_are_not_judged():
    blank = np.full((200, 200, 3), 240, np.uint8)
    check = check_scale(blank)
    assert check.radius_px is None and check.message == "" and check.ratio is None
    dark = np.full((200, 200, 3), (70, 60, 150), np.uint8)
    dark[::20] = 240  # nearly all hematoxylin
    assert typical_nucleus_radius(dark).radius_px is None
    with pytest.raises(ValueError, match="RGB"):
        typical_nucleus_radius(np.zeros((10, 10)))


def test_pixel_size_option_is_validated():
    PredictConfig(um_per_px=0.5).validate()
    with pytest.raises(ConfigError, match="--um-per-px"):
        PredictConfig(um_per_px=5).validate()
    with pytest.raises(ConfigError, match="not both"):
        PredictConfig(um_per_px=0.5, resample=2).validate()


def test_predictor_warns_once_per_image_and_follows_the_pixel_size_given():
    from sampo_engine.predict.predictor import TilePredictor

    image = _he_tile(4, 224)  # nuclei far smaller than 40× ones
    clicks = np.array([[20.0, 20.0]], np.float32)
    predictor = TilePredictor(PredictConfig(model="tiny", device="cpu", threshold=0.5))
    assert predictor.resample == 1.0 and predictor.assumed_um_per_px == pytest.approx(0.25)
    predictor.set_image(image)
    result = predictor.predict(clicks, np.array([1]), task="t1")
    assert result.messages and result.messages[0].startswith("magnification:")
    assert "tiny" in result.messages[0]

    told = TilePredictor(PredictConfig(model="tiny", device="cpu", threshold=0.5, um_per_px=0.5))
    assert told.resample == pytest.approx(2.0)  # the model sees the nuclei at 40× size
    assert told.assumed_um_per_px == pytest.approx(0.5)
    told.set_image(image)
    result = told.predict(clicks, np.array([1]), task="t1")
    assert not any(m.startswith("magnification:") for m in result.messages)
    assert result.labels.shape == image.shape[:2]  # results stay at the image's size


def test_magnification_study_measures_pages_and_plots(tmp_path):
    """The study (tools/magnification_study.py) on two tiny stand-in sets, end to end."""
    import csv

    import imageio.v3 as iio

    from sampo_engine.experiments.magnification_study import main

    shared = tmp_path / "shared"
    for folder, radius in (("consep_train", 9), ("brca_m2c_points", 5)):
        (shared / folder).mkdir(parents=True)
        iio.imwrite(shared / folder / f"a_{folder}_image.png", _he_tile(radius, 200))
    docs = tmp_path / "docs"
    out = tmp_path / "out"
    assert main(["--shared", str(shared), "--out", str(out), "--docs", str(docs),
                 "--datasets", "consep_train", "brca_m2c_points"]) == 0  # fmt: skip
    rows = list(csv.DictReader(open(out / "scale.csv")))
    assert len(rows) == 2 * 3  # two images, three sizes each
    radius = {(r["dataset"], float(r["factor"])): float(r["radius_px"]) for r in rows}
    assert radius[("consep_train", 2.0)] > 1.5 * radius[("consep_train", 1.0)]
    page = (docs / "magnification.md").read_text()
    assert "python tools/magnification_study.py" in page and "| CoNSeP | 0.25 |" in page
    assert (docs / "images" / "magnification.png").stat().st_size > 1000


def test_cli_prints_the_warning_and_takes_the_pixel_size(tmp_path, capsys):
    import imageio.v3 as iio

    from sampo_engine.cli import main

    image = tmp_path / "tile20x.png"
    iio.imwrite(image, _he_tile(4, 224))
    points = tmp_path / "points.csv"
    points.write_text("x,y,positive\n20,20,1\n")

    def run(out, *extra):
        return main(["predict", str(image), "--points", str(points), "--out", str(tmp_path / out),
                     "--model", "tiny", "--device", "cpu", "--quiet", "--threshold", "0.5",
                     *extra])  # fmt: skip

    assert run("a") == 0
    printed = capsys.readouterr().out
    assert "warning: magnification:" in printed and "--um-per-px" in printed
    assert run("b", "--um-per-px", "0.5") == 0
    assert "magnification" not in capsys.readouterr().out
    assert run("c", "--um-per-px", "0.5", "--resample", "2") == 2  # refused: one or the other
    assert "not both" in capsys.readouterr().err
