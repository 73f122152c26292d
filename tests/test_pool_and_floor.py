"""Pooled training data (``--data a,b``), the classical floor in `sampo-engine eval`, the
``small`` architecture, and the region-restricted pixel loss."""

import json

import numpy as np
import pytest

from sampo_engine.cli import main
from sampo_engine.data.folder import write_folder
from sampo_engine.data.pool import open_datasets, split_data_spec
from sampo_engine.data.synthetic import CLASS_NAMES, make_synthetic_dataset
from sampo_engine.errors import DataError


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    write_folder(make_synthetic_dataset(2, 112, seed=0), root / "with_classes")
    write_folder(make_synthetic_dataset(3, 112, seed=1), root / "t1_only")
    for path in (root / "t1_only").glob("*_class.tif"):
        path.unlink()  # a T1-only dataset: no class maps, no classes
    (root / "t1_only" / "meta.json").unlink()
    return root


def test_pooled_folders_renumber_classes_and_keep_t1_only_images(folders):
    a, b = folders / "with_classes", folders / "t1_only"
    pooled = open_datasets(f"{b},{a}")
    assert len(pooled) == 5 and pooled.format == "pooled"
    # the T1-only folder comes first and declares no classes: ids stay 1..3, names prefixed
    assert pooled.class_names == {k: f"with_classes: {v}" for k, v in CLASS_NAMES.items()}
    assert pooled[0].cls is None and pooled[0].name.startswith("t1_only/")
    original = open_datasets(str(a))
    np.testing.assert_array_equal(pooled[3].cls, original[0].cls)
    # twice the same folder: class ids of the second copy follow the first's
    twice = open_datasets(f"{a},{a}")
    assert sorted(twice.class_names) == [1, 2, 3, 4, 5, 6]
    second = twice[2].cls
    assert set(np.unique(second)) - {0} <= {4, 5, 6}
    np.testing.assert_array_equal(second > 0, original[0].cls > 0)


def test_data_spec_errors_are_clear(folders):
    with pytest.raises(DataError, match="empty entry"):
        split_data_spec(f"{folders / 'with_classes'},,")
    with pytest.raises(DataError, match="not found"):
        open_datasets(f"{folders / 'with_classes'},{folders / 'nowhere'}")


def test_train_cli_pools_comma_separated_folders(folders, tmp_path, capsys):
    out = tmp_path / "run"
    data = f"{folders / 'with_classes'},{folders / 't1_only'}"
    args = ["train", "--data", data, "--out", str(out), "--model", "tiny", "--full"]
    args += ["--image-size", "112", "--epochs", "1", "--max-steps", "2", "--quiet"]
    assert main(args + ["--val-fraction", "0", "--eval-crops", "0"]) == 0
    bundle = json.loads((out / "sampo_bundle.json").read_text())
    assert bundle["complete"] and set(bundle["class_names"]) == {"1", "2", "3"}


def test_classical_floor_is_scored_on_the_same_prompts(folders, tmp_path, capsys):
    test = tmp_path / "test"
    write_folder(make_synthetic_dataset(2, 224, seed=7), test, class_names=CLASS_NAMES)
    out = tmp_path / "ev"
    args = ["eval", "--data", str(test), "--model", "tiny", "--classical", "--out", str(out)]
    assert main(args + ["--robustness-repeats", "2", "--robustness-queries", "4", "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    names = [m["name"] for m in metrics["methods"]]
    assert names == ["tiny (no adapter)", "classical floor (hematoxylin + watershed)"]
    base, floor = metrics["methods"]
    assert base["prompts_sha256"] == floor["prompts_sha256"]  # what each was fed
    # the synthetic nuclei are dark hematoxylin blobs: the floor finds most of them
    assert floor["summary"]["t1"]["dice"] > 0.5 > base["summary"]["t1"]["dice"]
    assert floor["instances"]["t1"]["f1"] > 0.3
    assert "classical floor" in (out / "report.md").read_text()
    only = tmp_path / "only"
    assert main(["eval", "--data", str(test), "--model", "tiny", "--no-base", "--classical",
                 "--out", str(only), "--quiet"]) == 0  # fmt: skip
    metrics = json.loads((only / "metrics.json").read_text())
    assert [m["name"] for m in metrics["methods"]] == [names[1]]


def test_classical_t2_keeps_the_nuclei_that_look_like_the_positive_clicks():
    from sampo_engine.eval.classical import clicked_selection

    image = np.full((60, 90, 3), 240, np.uint8)
    inst = np.zeros((60, 90), np.int32)
    for k, (col, colour) in enumerate([(15, 40), (45, 40), (75, 150)], start=1):
        inst[20:40, col - 8 : col + 8] = k
        image[20:40, col - 8 : col + 8] = (colour, colour // 2, colour + 60)
    points = np.array([[15.0, 30.0], [75.0, 30.0]])  # (x, y): positive on 1, negative on 3
    keep = clicked_selection(image, inst, points, np.array([1, 0]))
    assert keep[inst == 1].all() and keep[inst == 2].all() and not keep[inst == 3].any()
    # only positive clicks: every nucleus
    assert clicked_selection(image, inst, points[:1], np.array([1])).sum() == (inst > 0).sum()


def test_small_architecture_builds_and_refuses_lora_without_a_base(tmp_path, capsys):
    from sampo_engine.models.build import build_sam

    sam = build_sam("small", None, 224)
    n = sum(p.numel() for p in sam.parameters())
    assert 5.5e6 < n < 6.5e6
    args = ["train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--model", "small"]
    assert main(args) != 0
    assert "small has no pretrained weights" in capsys.readouterr().err
