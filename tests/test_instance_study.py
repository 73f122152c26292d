"""tools/instance_study.py (``sampo_engine.experiments.instance_study``) end to end on generated
data with a tiny model: cached whole-image probabilities, the split grid, the page and its plot
(the real numbers are in docs/instances.md)."""

import numpy as np
import pytest

from sampo_engine.experiments import instance_study
from sampo_engine.experiments.instance_split_sweep import (
    BASELINE,
    SplitSetting,
    grid,
    predictor_setting,
    read_rows,
    score_setting,
)
from sampo_engine.models.build import build_sam, save_base_checkpoint


def test_a_clean_probability_scores_perfectly_and_a_coarse_split_merges_touching_nuclei():
    truth = np.zeros((64, 64), np.int32)
    yy, xx = np.mgrid[:64, :64]
    truth[(yy - 32) ** 2 + (xx - 20) ** 2 < 81] = 1
    truth[(yy - 32) ** 2 + (xx - 35) ** 2 < 49] = 2  # smaller, touching the first
    prob = (truth > 0).astype(np.float32)
    fine = score_setting(prob, truth, SplitSetting(min_distance=3))
    assert fine["pq"] > 0.8 and fine["count_ratio"] == 1.0
    coarse = score_setting(prob, truth, SplitSetting(min_distance=20))
    assert coarse["count_ratio"] == 0.5 and coarse["pq"] < fine["pq"]


def test_the_grid_starts_with_the_baseline_and_the_predictors_setting_each_once():
    settings = grid((0.5,), (1.0, 2.0), (3, 5), (16,))
    assert settings[:2] == [BASELINE, predictor_setting()]
    assert predictor_setting().scale == 1.5 and predictor_setting("tiny").scale == 1.0
    assert len(settings) == len(set(settings)) == 5  # 4 of the grid + the predictor's


def test_the_study_caches_maps_sweeps_and_writes_the_page_with_its_plot(split_dir, tmp_path):
    base = tmp_path / "base.pth"
    save_base_checkpoint(build_sam("tiny", None, 224), base)
    out, docs = tmp_path / "out", tmp_path / "docs"
    args = ["--out", str(out), "--split-dir", str(split_dir), "--datasets", "typed"]
    args += ["--model", "tiny", "--checkpoint", str(base), "--docs", str(docs)]
    args += ["--thresholds", "0.5", "--sigmas", "1", "2", "--min-distances", "3", "6"]
    args += ["--min-sizes", "16", "--scales", "1", "1.5"]
    instance_study.main(["all", *args])

    assert len(list((out / "maps" / "train" / "typed").glob("*.npz"))) == 2
    (test_map,) = (out / "maps" / "test" / "typed").glob("*.npz")
    with np.load(test_map) as data:
        assert data["prob"].shape == data["inst"].shape == (224, 224)
    (scaled,) = (out / "maps_x1.5" / "test" / "typed").glob("*.npz")
    with np.load(scaled) as data:  # the probability comes back at the image's size
        assert data["prob"].shape == data["inst"].shape == (224, 224)
    rows = read_rows(out / "rows.csv")
    # 3 images × (4 settings + the predictor's) at ×1, 3 images × 4 settings at ×1.5
    assert len(rows) == 3 * 5 + 3 * 4 and {r["scale"] for r in rows} == {1.0, 1.5}
    assert {r["split"] for r in rows} == {"train", "test"}
    text = (docs / "instances.md").read_text()
    assert "## Answer" in text and "Chosen on the training images" in text
    assert "## Resampling the image first" in text and "| ×1.5 |" in text
    assert "| baseline | PQ |" in text and "![PQ by split setting](images/instances.png)" in text
    assert (docs / "images" / "instances.png").stat().st_size > 1000

    stamp = test_map.stat().st_mtime_ns
    instance_study.main(["maps", *args])  # cached: nothing is computed again
    assert test_map.stat().st_mtime_ns == stamp


def test_a_missing_split_folder_names_the_command_that_makes_it(tmp_path):
    with pytest.raises(SystemExit, match="real_data_study.py split"):
        instance_study.main(["maps", "--split-dir", str(tmp_path / "none"), "--out", str(tmp_path)])
