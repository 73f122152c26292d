"""The type-head study's page (tools/type_head_study.py report) from hand-made rows: an effect on
every training seed is called, a null one is not."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np

from sampo_engine.experiments.type_head_report import comparison, measure, verdict

REPO = Path(__file__).resolve().parents[1]
FIELDS = ["dataset", "image", "class", "seed", "rule", "f1", "precision", "recall", "dice",
          "coverage", "held"]  # fmt: skip


def _rows(shift: float, rng) -> list[dict]:
    rows = []
    for seed in (0, 1, 2):
        for image in ("a", "b"):
            for c in (1, 2, 3):
                noise = rng.normal(0, 0.005)
                rows.append(
                    {
                        "dataset": "brca_m2c_points",
                        "image": image,
                        "class": c,
                        "seed": seed,
                        "rule": "classical-logreg",
                        "precision": 0.5 + shift + noise,
                        "coverage": 0.7,
                    }
                )
                rows.append({"dataset": "consep", "image": image, "class": c + 1, "seed": seed,
                             "rule": "gt-logreg", "f1": 0.5, "dice": 0.4})  # fmt: skip
    return rows


def test_measures_average_images_then_classes_then_seeds():
    rows = [
        {"dataset": "d", "rule": "r", "class": 1, "seed": 0, "f1": 0.2},
        {"dataset": "d", "rule": "r", "class": 1, "seed": 0, "f1": 0.4},
        {"dataset": "d", "rule": "r", "class": 2, "seed": 0, "f1": 0.9},
        {"dataset": "d", "rule": "r", "class": 1, "seed": 1, "f1": 0.5},
        {"dataset": "d", "rule": "r", "class": 2, "seed": 1, "f1": "nan"},
    ]
    m = measure(rows, "d", "r", "f1")
    assert np.isclose(m["mean"], (0.6 + 0.5) / 2) and np.isclose(m["classes"][2], 0.9)
    assert measure(rows, "d", "other", "f1") is None
    assert verdict([0.05, 0.04, 0.06], 0.01) == "better"
    assert verdict([0.05, -0.01, 0.06], 0.01) == "no difference"
    assert verdict([-0.05, -0.04, -0.06], 0.01) == "worse"


def test_the_page_calls_an_effect_on_every_seed_and_not_a_null_one(tmp_path):
    rng = np.random.default_rng(0)
    out = tmp_path / "study"
    (out / "rows").mkdir(parents=True)
    for tag, shift in (("base", 0.0), ("head_s0", 0.1), ("head_s1", 0.12), ("head_s2", 0.09)):
        with open(out / "rows" / f"rows_{tag}.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(_rows(shift, rng))
    for seed in (0, 1, 2):
        log = {"seconds": 600, "steps": 10, "config": {"batch_size": 128},
               "train_counts": {"brca_m2c_points": {"lymphocyte": 5, "tumor": 7}},
               "held_out_counts": {"brca_m2c_points": {"lymphocyte": 2, "tumor": 3}},
               "held_out_accuracy": {"brca_m2c_points": {"accuracy": 0.8, "balanced": 0.75,
                                                          "lymphocyte": 0.7, "tumor": 0.8}}}  # fmt: skip
        (out / f"type_head_seed{seed}.json").write_text(json.dumps(log))

    def read(tag):
        with open(out / "rows" / f"rows_{tag}.csv", newline="") as fh:
            return list(csv.DictReader(fh))

    records = comparison(read("base"), {s: read(f"head_s{s}") for s in (0, 1, 2)})
    by = {(r["rule"], r["method"], r["key"]): r["verdict"] for r in records}
    assert by[("classical-logreg", "logreg", "precision")] == "better"
    assert by[("classical-logreg", "logreg", "coverage")] == "no difference"
    assert by[("gt-logreg", "logreg", "f1")] == "no difference"
    assert not any(r["method"] != "logreg" for r in records)  # no types/blend rows were given
    spec = importlib.util.spec_from_file_location("ths", REPO / "tools" / "type_head_study.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    docs = tmp_path / "docs"
    docs.mkdir()
    assert tool.main(["report", "--out", str(out), "--docs", str(docs)]) == 0
    page = (docs / "type_head.md").read_text()
    line = next(x for x in page.splitlines() if "| BRCA-M2C precision | logreg | 49" in x)
    assert line.endswith("| better |") and line.count("/ +") == 2
    assert "| brca_m2c_points | 5 | 80.0 ± 0.0 | 75.0 ± 0.0 |" in page


def test_compare_pairs_two_recipes_by_training_seed(tmp_path, capsys):
    rng = np.random.default_rng(1)

    def write(folder: Path, shifts: dict[int, float]) -> None:
        (folder / "rows").mkdir(parents=True)
        for seed, shift in shifts.items():
            rows = [dict(r, rule="model-exemplar-blend") for r in _rows(shift, rng)]
            with open(folder / "rows" / f"rows_head_s{seed}.csv", "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=FIELDS)
                writer.writeheader()
                writer.writerows(rows)

    short, long = tmp_path / "short", tmp_path / "long"
    write(short, {0: 0.0, 1: 0.01, 2: -0.01})
    write(long, {0: 0.05, 1: 0.07, 2: 0.04})  # better on every seed
    spec = importlib.util.spec_from_file_location("ths", REPO / "tools" / "type_head_study.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["compare", "--out", str(long), "--against", str(short)]) == 0
    text = capsys.readouterr().out
    line = next(x for x in text.splitlines() if x.startswith("| BRCA-M2C precision |"))
    assert line.endswith("| better |") and line.count("+") == 3
    assert "| BRCA-M2C precision | tumour |" in text
    import pytest

    with pytest.raises(SystemExit, match="run the score stage"):
        tool.main(["compare", "--out", str(long), "--against", str(tmp_path / "none")])


def _tiny_sets(root: Path) -> tuple[Path, Path]:
    """A shared-data folder with both point sets (2 train + 1 val image each) and a study split
    with CoNSeP- and PanNuke-like instance sets (1 image each in train and test)."""
    import tifffile
    from skimage.io import imsave

    rng = np.random.default_rng(0)
    shared, split = root / "shared", root / "split"
    for name, k in (("brca_m2c_points", 3), ("crchisto_points", 4)):
        folder = shared / name
        folder.mkdir(parents=True)
        images = [{"id": f"i{j}", "split": "train" if j < 2 else "val"} for j in range(3)]
        meta = {"classes": {str(c): f"c{c}" for c in range(1, k + 1)}, "images": images}
        (folder / "meta.json").write_text(json.dumps(meta))
        for rec in images:
            imsave(folder / f"{rec['id']}_image.png", rng.integers(0, 255, (60, 60, 3), np.uint8))
            pts = "\n".join(f"{x},{y},{1 + (x + y) % k}" for x in (10, 30, 50) for y in (10, 40))
            (folder / f"{rec['id']}_points.csv").write_text("x,y,class\n" + pts + "\n")
    for part in ("train", "test"):
        for name, k in (("consep_train", 4), ("pannuke_breast_2class", 2)):
            folder = split / part / name
            folder.mkdir(parents=True)
            classes = {"0": "background", **{str(c): f"c{c}" for c in range(1, k + 1)}}
            (folder / "meta.json").write_text(json.dumps({"classes": classes}))
            inst = np.zeros((80, 80), np.uint16)
            cls = np.zeros((80, 80), np.uint8)
            for j in range(8):
                r, c = 5 + 9 * j, 5 + 8 * j
                inst[r : r + 6, c : c + 6] = j + 1
                cls[r : r + 6, c : c + 6] = 1 + j % k
            imsave(folder / "a_image.png", rng.integers(0, 255, (80, 80, 3), np.uint8))
            tifffile.imwrite(folder / "a_inst.tif", inst)
            tifffile.imwrite(folder / "a_class.tif", cls)
    return shared, split


def test_the_recipe_tool_trains_saves_and_measures_a_head_then_keeps_it(tmp_path):
    from sampo_engine.models.type_head import GENERAL, load_type_head

    shared, split = _tiny_sets(tmp_path)
    spec = importlib.util.spec_from_file_location("tth", REPO / "tools" / "train_type_head.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "heads"
    args = ["--out", str(out), "--shared", str(shared), "--split-root", str(split),
            "--epochs", "2", "--batch-size", "8", "--width", "4", "--threads", "1"]  # fmt: skip
    assert tool.main(args) == 0
    head = out / "type_head_seed0.safetensors"
    log = json.loads(head.with_suffix(".json").read_text())
    assert log["train_counts"]["brca_m2c_points"] == {"c1": 4, "c2": 4, "c3": 4}
    assert sum(log["held_out_counts"]["crchisto_points"].values()) == 6
    assert set(log["held_out_accuracy"]) == {"brca_m2c_points", "crchisto_points", "consep",
                                             "pannuke_2", GENERAL}  # fmt: skip
    net = load_type_head(head)
    assert net.heads[GENERAL] == ("inflammatory", "epithelial", "stromal", "other")
    stamp = head.stat().st_mtime_ns
    assert tool.main(args) == 0  # kept, measured again
    assert head.stat().st_mtime_ns == stamp


def test_the_head_rules_are_named_after_the_sources_rules():
    from sampo_engine.experiments.type_head_report import head_rule

    assert head_rule("gt-logreg", "-types") == "gt-types"
    assert head_rule("model-exemplar", "-blend") == "model-exemplar-blend"
    assert head_rule("classical-logreg", "") == "classical-logreg"


def _disc_sets(root: Path) -> Path:
    """A shared-data folder the exemplar study reads: CoNSeP's five held-out images and one
    validation image of each point set, purple discs of four sizes on pink."""
    import tifffile
    from skimage.draw import disk
    from skimage.io import imsave

    from sampo_engine.experiments.exemplar_study import CONSEP_HELD_OUT

    rng = np.random.default_rng(1)

    def tile(shape, k):
        img = np.zeros((*shape, 3), np.uint8)
        img[:] = (235, 190, 210)
        inst = np.zeros(shape, np.uint16)
        cls = np.zeros(shape, np.uint8)
        dots = []
        n = 0
        for r in range(14, shape[0] - 14, 26):
            for c in range(14, shape[1] - 14, 26):
                n += 1
                k_here = 1 + n % k
                rr, cc = disk((r, c), 3 + 2 * k_here, shape=shape)
                img[rr, cc] = (60 + 25 * k_here, 30, 120) + rng.integers(0, 10, 3)
                inst[rr, cc], cls[rr, cc] = n, k_here
                dots.append((c, r, k_here))
        return img, inst, cls, dots

    shared = root / "shared"
    consep = shared / "consep_train"
    consep.mkdir(parents=True)
    for name in CONSEP_HELD_OUT:
        img, inst, cls, _ = tile((240, 240), 4)
        imsave(consep / f"{name}_image.png", img, check_contrast=False)
        tifffile.imwrite(consep / f"{name}_inst.tif", inst)
        tifffile.imwrite(consep / f"{name}_class.tif", cls)
    for name, k in (("brca_m2c_points", 3), ("crchisto_points", 4)):
        folder = shared / name
        folder.mkdir(parents=True)
        meta = {"classes": {str(c): f"c{c}" for c in range(1, k + 1)},
                "images": [{"id": "v0", "split": "val"}]}  # fmt: skip
        (folder / "meta.json").write_text(json.dumps(meta))
        img, _, _, dots = tile((160, 160), k)
        imsave(folder / "v0_image.png", img, check_contrast=False)
        rows = "\n".join(f"{x},{y},{c}" for x, y, c in dots)
        (folder / "v0_points.csv").write_text("x,y,class\n" + rows + "\n")
    return shared


def test_the_exemplar_study_scores_every_source_and_classifier(tmp_path):
    from sampo_engine.experiments.exemplar_study import main
    from sampo_engine.models.type_head import GENERAL, NucleusTypeNet, save_type_head

    shared = _disc_sets(tmp_path)
    head = tmp_path / "head.safetensors"
    heads = {"a": ("x", "y"), GENERAL: ("inflammatory", "epithelial", "stromal", "other")}
    save_type_head(NucleusTypeNet(heads, width=4, embed=4), head)
    out = tmp_path / "rows"
    args = ["--out", str(out), "--shared", str(shared), "--seeds", "0", "--max-point-images", "1",
            "--type-head", str(head), "--tag", "t"]  # fmt: skip
    assert main(args) == 0
    with open(out / "rows_t.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rules = {(r["dataset"], r["rule"]) for r in rows}
    for rule in ("gt-logreg", "gt-types", "gt-blend", "classical-logreg", "classical-floor"):
        assert ("consep", rule) in rules
    assert ("brca_m2c_points", "classical-blend") in rules
    assert ("crchisto_points", "classical-types") in rules
    gt = [float(r["f1"]) for r in rows if r["rule"] == "gt-logreg"]
    assert gt and all(0 <= v <= 1 for v in gt)
    assert "## consep" in (out / "summary_t.md").read_text()


def test_the_exemplar_study_scores_several_classes_at_once(tmp_path):
    from sampo_engine.experiments.exemplar_study import class_clicks, main

    xy = np.array([[i * 3.0, i * 2.0] for i in range(12)])
    cls = np.array([1, 1, 1, 2, 2, 2, 2, 3, 3, 1, 2, 1])  # class 3 has 2 dots: not clicked
    pts, index, ids = class_clicks(xy, cls, 0, "img")
    assert ids == [1, 2] and index.tolist() == [0, 0, 0, 1, 1, 1]
    assert all(cls[np.flatnonzero((xy == p).all(1))[0]] == ids[i] for p, i in zip(pts, index))
    assert class_clicks(xy, np.ones(12, int), 0, "img") is None  # one class: nothing to label
    shared = _disc_sets(tmp_path)
    out = tmp_path / "rows"
    args = ["--out", str(out), "--shared", str(shared), "--seeds", "0", "1",
            "--max-point-images", "1", "--sources", "classical", "--model", "tiny",
            "--datasets", "brca_m2c_points", "--classes", "--tag", "c"]  # fmt: skip
    assert main(args) == 0
    with open(out / "rows_c.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for rule in ("classical-classes", "model-classes"):
        mine = [r for r in rows if r["rule"] == rule]
        assert {r["seed"] for r in mine} == {"0", "1"}
        assert len({r["class"] for r in mine}) >= 2  # one row per clicked class
        assert all(0 <= float(r["coverage"]) <= 1 for r in mine)
    assert "classical-classes" in (out / "summary_c.md").read_text()
    # CoNSeP: the true and the floor's nuclei labelled, scored by nucleus F1 per class
    out2 = tmp_path / "rows2"
    args = ["--out", str(out2), "--shared", str(shared), "--seeds", "0", "--sources", "gt",
            "classical", "--datasets", "consep", "--classes", "--tag", "k"]  # fmt: skip
    assert main(args) == 0
    with open(out2 / "rows_k.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["rule"].endswith("-classes")]
    assert {r["rule"] for r in rows} == {"gt-classes", "classical-classes"}
    gt = [float(r["f1"]) for r in rows if r["rule"] == "gt-classes"]
    assert len(gt) >= 2 and np.mean(gt) > 0.5  # discs of distinct sizes and colours
