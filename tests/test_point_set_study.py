"""tools/point_set_study.py (``sampo_engine.experiments.point_set_study``) at toy size: dots become pseudo-labelled T2 training images, and the
report pairs each arm with the base (training and scoring are the CLI's and
tools/exemplar_study.py's, tested elsewhere)."""

from __future__ import annotations

import csv
import json
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def tool():
    from sampo_engine.experiments import point_set_study

    return point_set_study


def _fake_point_set(folder: Path, seed: int) -> None:
    """One 20×-like image (a synthetic tile shrunk ×½) with a dot and class per nucleus."""
    import imageio.v3 as iio
    from scipy import ndimage as ndi

    from sampo_engine.data.synthetic import make_synthetic_sample
    from sampo_engine.predict.resample import resample_image

    sample = make_synthetic_sample(224, seed=seed)
    folder.mkdir(parents=True)
    iio.imwrite(folder / "img1_image.png", resample_image(sample.image, 0.5))
    ids = np.unique(sample.inst[sample.inst > 0])
    rc = np.array(ndi.center_of_mass(sample.inst > 0, sample.inst, ids))
    cls = [int(np.bincount(sample.cls[sample.inst == i]).argmax()) for i in ids]
    with open(folder / "img1_points.csv", "w", newline="") as fh:
        fh.write("x,y,class\n")
        for (r, c), k in zip(rc / 2, cls):
            fh.write(f"{int(c)},{int(r)},{k}\n")
    meta = {"classes": {"1": "lymphocyte", "2": "epithelial", "3": "spindle"},
            "images": [{"id": "img1", "split": "train"}, {"id": "img2", "split": "validation"}]}  # fmt: skip
    (folder / "meta.json").write_text(json.dumps(meta))


def test_dots_become_pseudo_labelled_training_images(tool, tmp_path):
    import tifffile

    shared = tmp_path / "shared"
    for i, name in enumerate(tool.POINT_SETS):
        _fake_point_set(shared / name, seed=i)
    args = Namespace(out=str(tmp_path / "out"), shared=str(shared), max_images=0)
    tool.stage_labels(args)
    for name in tool.POINT_SETS:
        folder = tmp_path / "out" / "data" / name
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["classes"]["1"] == "lymphocyte"
        (inst_file,) = folder.glob("*_inst.tif")
        inst = tifffile.imread(inst_file)
        classes = tifffile.imread(str(inst_file).replace("_inst.tif", "_class.tif"))
        assert inst.shape == (224, 224)  # the image ×2 (the model's 40×)
        assert inst.max() > 0 and set(np.unique(classes[inst > 0])) <= {1, 2, 3}
    tool.stage_labels(args)  # a second run keeps what is there


def test_report_pairs_each_arm_with_the_base_per_seed(tool, tmp_path):
    scores = tmp_path / "scores"
    scores.mkdir()
    fields = ["dataset", "image", "class", "seed", "rule", "f1", "precision", "recall", "dice",
              "coverage", "held"]  # fmt: skip

    def write(tag, precision):
        with open(scores / f"rows_{tag}.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            for click_seed in (0, 1):
                writer.writerow({"dataset": "brca_m2c_points", "image": "a", "class": 1,
                                 "seed": click_seed, "rule": "model-exemplar",
                                 "precision": precision, "coverage": 0.7})  # fmt: skip

    write("base", 0.5)
    write("points_s0", 0.62)
    write("points_s1", 0.58)
    write("control_s0", 0.5)
    write("control_s1", 0.52)
    tool.stage_report(Namespace(out=str(tmp_path), seeds=[0, 1]))
    table = (tmp_path / "report.md").read_text()
    row = next(line for line in table.splitlines() if "| precision |" in line)
    assert "| BRCA-M2C | by nucleus |" in row and "| 50.0 |" in row
    assert "60.0 ± 2.0" in row and "51.0 ± 1.0" in row and "+12.0 / +6.0" in row
