"""`sampo-engine eval` end to end with tiny bundles trained here, on generated data."""

import csv
import json

import numpy as np
import pytest

from sampo_engine.cli import main
from sampo_engine.data.folder import write_folder
from sampo_engine.data.synthetic import CLASS_NAMES, make_synthetic_dataset


def _samples(n, size, seed, tissue=None):
    ds = make_synthetic_dataset(n, size, seed=seed)
    samples = [ds[i] for i in range(n)]
    for s in samples:
        s.tissue = tissue
    return samples


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Training and test folders, a tiny base and a LoRA adapter trained on top of it."""
    root = tmp_path_factory.mktemp("eval")
    write_folder(make_synthetic_dataset(4, 224, seed=0), root / "train")
    # held-out test images: two tissues, one image larger than the input (cut into crops)
    test = _samples(1, 224, 50, "breast") + _samples(1, (240, 300), 51, "colon")
    write_folder(test, root / "test", class_names=CLASS_NAMES)
    import torch

    from sampo_engine.models.build import build_sam, save_base_checkpoint

    torch.manual_seed(0)  # a random tiny base stands in for a pretrained one
    base_pth = root / "base" / "base.pth"
    base_pth.parent.mkdir()
    save_base_checkpoint(build_sam("tiny", None, 224), base_pth)
    common = ["--data", str(root / "train"), "--model", "tiny", "--epochs", "1", "--quiet"]
    common += ["--max-steps", "2", "--val-fraction", "0"]
    lora = ["--checkpoint", str(base_pth), "--lora-rank", "2", "--name", "sampo-lora"]
    assert main(["train", *common, *lora, "--out", str(root / "lora")]) == 0
    return root


@pytest.fixture(scope="module")
def evaluated(setup):
    out = setup / "ev"
    args = ["eval", "--data", str(setup / "test"), "--adapter", str(setup / "lora")]
    args += ["--out", str(out), "--sensitivity-queries", "100", "--robustness-repeats", "2"]
    args += ["--robustness-queries", "2", "--quiet"]
    assert main(args) == 0
    return out, json.loads((out / "metrics.json").read_text())


def test_eval_writes_metrics_report_and_plots(evaluated, setup):
    out, m = evaluated
    for name in ("report.md", "per_query.csv", "sampo_eval.json"):
        assert (out / name).is_file()
    for name in ("summary", "density", "per_class"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000
    assert len(list((out / "plots").glob("sensitivity_*.png"))) == 2
    assert (out / "curves" / "sampo-lora_loss_curve.png").is_file()
    names = [e["name"] for e in m["methods"]]
    assert names == ["tiny (no adapter)", "sampo-lora"]
    assert m["model"]["base_checkpoint"].endswith("base.pth")  # the adapters' own base
    report = (out / "report.md").read_text()
    for text in (
        "## Main results",
        "sampo-lora",
        "tiny (no adapter)",
        "all nuclei, perfect",
        "T1 answer as T2",
        "## Instance metrics",
        "## Per class (T2)",
        "## Per density",
        "## Per tissue",
        "## Prompt sensitivity",
        "## Robustness",
        "## Training curves",
    ):
        assert text in report
    json.loads((out / "metrics.json").read_text(), parse_constant=pytest.fail)  # strict JSON


def test_methods_saw_identical_prompts(evaluated):
    _, m = evaluated
    fed = {e["prompts_sha256"] for e in m["methods"]}
    assert len(fed) == 1 and len(m["prompts_sha256"]) == 64
    n = m["data"]["queries"]
    assert n["t1"] >= 3 and n["t2"] >= n["t1"]  # the 240×300 image gives 4 crops
    for e in m["methods"]:
        assert e["summary"]["t1"]["n"] == n["t1"] and e["summary"]["t2"]["n"] == n["t2"]


def test_breakdowns_are_consistent(evaluated):
    _, m = evaluated
    base = m["methods"][0]
    s = base["summary"]
    for task in ("t1", "t2"):
        assert 0 <= s[task]["dice"] <= s[task]["oracle_dice"] <= 1
        assert s[task]["iou"] <= s[task]["dice"] + 1e-9
        # the grid covers every query; its 3-positive/3-negative cell IS the main prompt set
        grid = base["sensitivity"][task]
        assert np.asarray(grid["dice"]).shape == (3, 4) and grid["n"] == s[task]["n"]
        assert grid["dice"][2][3] == pytest.approx(s[task]["dice"])
        bins = base["density"][task]
        assert sum(b["n"] for b in bins.values()) == s[task]["n"]
        assert base["robustness"][task]["repeats"] == 2
        assert set(base["instances"][task]) >= {"pq", "aji", "f1", "pooled"}
    assert set(base["per_tissue"]) == {"breast", "colon"}
    classes = base["per_class"]
    assert sum(c["n"] for c in classes.values()) == s["t2"]["n"]
    assert {c["name"] for c in classes.values()} <= {"lymphocyte", "epithelial", "spindle"}
    assert s["t2"]["class_macro_dice"] == pytest.approx(
        np.mean([c["dice"] for c in classes.values()])
    )
    paired = [p for p in m["paired"] if p["method"] == "sampo-lora"]
    assert {p["task"] for p in paired} == {"t1", "t2"}


def test_scores_match_an_independent_recomputation(evaluated, setup):
    """Main scores, the trivial row and "T1 answer as T2" recomputed from score_queries."""
    from sampo_engine.data.detect import open_dataset
    from sampo_engine.models.loading import load_model
    from sampo_engine.prompts import target_mask
    from sampo_engine.scoring.queries import dice_iou, make_queries, score_queries

    out, m = evaluated
    dataset = open_dataset(setup / "test")
    queries = make_queries(dataset, None, 224, "both", seed=0)
    model = load_model("tiny", setup / "base" / "base.pth", image_size=224)
    scores = score_queries(model, queries, keep_masks=True)
    base = m["methods"][0]
    t1 = [(q, s) for q, s in zip(queries, scores) if q.intent.task == "t1"]
    t2 = [q for q in queries if q.intent.task == "t2"]
    assert base["summary"]["t1"]["dice"] == pytest.approx(np.mean([s.dice for _, s in t1]))
    assert base["summary"]["t1"]["oracle_iou"] == pytest.approx(
        np.mean([s.oracle_iou for _, s in t1])
    )
    t1_mask = {q.name: s.mask for q, s in t1}
    as_t2 = [dice_iou(t1_mask[q.name], q.target)[0] for q in t2]
    assert base["t1_as_t2"]["summary"]["t2"]["dice"] == pytest.approx(np.mean(as_t2))
    perfect = [dice_iou(q.inst > 0, target_mask(q.inst, q.cls, q.intent))[0] for q in t2]
    trivial = m["baselines"][0]
    assert trivial["name"].startswith("all nuclei")
    assert trivial["summary"]["t2"]["dice"] == pytest.approx(np.mean(perfect))
    # per-query table: one row per query, the same Dice as the summary
    rows = list(csv.DictReader((out / "per_query.csv").open()))
    assert len(rows) == len(queries)
    t1_rows = [float(r["tiny (no adapter):dice"]) for r in rows if r["task"] == "t1"]
    assert np.mean(t1_rows) == pytest.approx(base["summary"]["t1"]["dice"], abs=1e-5)


def test_same_seed_same_prompts_other_seed_other_prompts(setup, tmp_path):
    common = ["eval", "--data", str(setup / "test"), "--model", "tiny", "--quiet"]
    common += ["--checkpoint", str(setup / "base" / "base.pth"), "--task", "t1"]
    common += ["--sensitivity-queries", "0", "--robustness-repeats", "0", "--no-instances"]
    hashes = []
    for k, seed in enumerate(("0", "0", "1")):
        assert main([*common, "--seed", seed, "--out", str(tmp_path / f"e{k}")]) == 0
        hashes.append(json.loads((tmp_path / f"e{k}" / "metrics.json").read_text()))
    a, b, c = hashes
    assert a["prompts_sha256"] == b["prompts_sha256"] != c["prompts_sha256"]
    assert a["methods"][0]["summary"] == b["methods"][0]["summary"]
    assert list(a["data"]["queries"]) == ["t1"] and not a["baselines"]


def test_max_queries_keeps_whole_crops(setup, tmp_path):
    args = ["eval", "--data", str(setup / "test"), "--no-base", "--quiet"]
    args += ["--adapter", str(setup / "lora"), "--max-queries", "4", "--out", str(tmp_path / "e")]
    args += ["--sensitivity-queries", "0", "--robustness-repeats", "0", "--no-instances"]
    assert main(args) == 0
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert [e["name"] for e in m["methods"]] == ["sampo-lora"] and not m["paired"]
    assert 1 <= sum(m["data"]["queries"].values()) <= 4


def _folder_without_classes(path):
    samples = _samples(1, 224, 3)
    for s in samples:
        s.cls = None
    write_folder(samples, path, class_names={})


def _folder_without_nuclei(path):
    samples = _samples(1, 224, 4)
    for s in samples:
        s.inst = np.zeros_like(s.inst)
        s.cls = np.zeros_like(s.cls)
    write_folder(samples, path, class_names=CLASS_NAMES)


def _mixed_layout(path):
    path.mkdir()
    (path / "a_inst.tif").write_bytes(b"x")
    (path / "b.tif").write_bytes(b"x")
    (path / "b.xml").write_text("<Annotations/>")


@pytest.mark.parametrize(
    "make, extra, message",
    [
        (None, ["--data", "{missing}"], "not found"),
        (_mixed_layout, ["--data", "{made}"], "mixes dataset layouts"),
        (_folder_without_nuclei, ["--data", "{made}"], "empty test set"),
        (_folder_without_classes, ["--data", "{made}", "--task", "t2"], "T2 needs class labels"),
        (None, ["--model", "vit_b"], "trained on tiny, not vit_b"),
        (None, ["--image-size", "256"], "input size is 224 px"),
        (None, ["--adapter", "{setup}/test"], "not a SAMPO adapter bundle"),
        (None, ["--no-base"], "nothing to evaluate"),
        (None, ["--checkpoint", "{missing}"], "not found"),
    ],
)
def test_bad_input_gives_a_clear_message(setup, tmp_path, capsys, make, extra, message):
    made = tmp_path / "made"
    if make is not None:
        make(made)
    extra = [e.format(missing=tmp_path / "missing", made=made, setup=setup) for e in extra]
    args = ["eval", "--data", str(setup / "test")]
    if "--no-base" not in extra:
        args += ["--adapter", str(setup / "lora")]
    out = tmp_path / "out"
    code = main([*args, *extra, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not out.exists()  # nothing written before the checks passed


def test_out_folder_rules(setup, tmp_path, capsys, evaluated):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("precious")
    args = ["eval", "--data", str(setup / "test"), "--adapter", str(setup / "lora"), "--quiet"]
    assert main([*args, "--out", str(user)]) == 2
    assert "not a SAMPO evaluation" in capsys.readouterr().err
    assert [p.name for p in user.iterdir()] == ["notes.txt"]
    out, _ = evaluated
    assert main([*args, "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_report_redraws_from_metrics_json(evaluated, tmp_path):
    import shutil

    from sampo_engine.eval.report import redraw

    out, _ = evaluated
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(out / "metrics.json", copy / "metrics.json")
    text = redraw(copy).read_text()
    assert text == (out / "report.md").read_text()
    assert (copy / "plots" / "density.png").is_file()


def test_t2_alone_still_scores_the_t1_answer_as_t2(setup, tmp_path):
    args = ["eval", "--data", str(setup / "test"), "--adapter", str(setup / "lora"), "--quiet"]
    args += ["--task", "t2", "--no-base", "--out", str(tmp_path / "e"), "--no-instances"]
    args += ["--sensitivity-queries", "0", "--robustness-repeats", "0"]
    assert main(args) == 0
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    entry = m["methods"][0]
    assert list(m["data"]["queries"]) == ["t2"] and list(entry["summary"]) == ["t2"]
    assert entry["t1_as_t2"]["summary"]["t2"]["n"] == entry["summary"]["t2"]["n"]


def test_shared_crop_encoding_gives_the_same_logits(setup):
    """Queries on one crop share an encoder pass; the outputs equal one-by-one encoding."""
    from sampo_engine.data.detect import open_dataset
    from sampo_engine.models.loading import load_model
    from sampo_engine.scoring.queries import make_queries, predict_queries

    queries = make_queries(open_dataset(setup / "test"), [0], 224, "both", seed=0)
    assert len({q.name for q in queries}) < len(queries)  # several intents per crop
    model = load_model("tiny", setup / "base" / "base.pth", image_size=224)
    one = {i: lg for i, lg, _ in predict_queries(model, queries, batch_size=1)}
    shared = {i: lg for i, lg, _ in predict_queries(model, queries, batch_size=16)}
    for i in one:
        np.testing.assert_allclose(one[i], shared[i], atol=1e-4)


def test_whole_images_are_segmented_with_the_tiled_predictor(setup, tmp_path):
    import numpy as np

    from sampo_engine.data.folder import read_folder
    from sampo_engine.eval.whole import one_tile_clicks

    out = tmp_path / "whole"
    args = ["eval", "--data", str(setup / "test"), "--adapter", str(setup / "lora"), "--quiet"]
    args += ["--no-base", "--whole-images", "--out", str(out), "--sensitivity-queries", "0"]
    args += ["--robustness-repeats", "0", "--classical"]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    whole = next(e for e in m["methods"] if e["kind"] == "adapter")["whole_image"]
    # T1, and T2 in each mode side by side on the same clicks ('t2' = the first mode's block),
    # and the T1 answer scored as the T2 answer (what ignoring the clicked type scores)
    assert set(whole) == {"t1", "t2", "t2:decoder", "t2:exemplar", "t2:hybrid",
                          "t2:T1 answer as T2"}  # fmt: skip
    assert whole["t2:T1 answer as T2"]["n"] == whole["t2:decoder"]["n"]
    assert whole["t1"]["n"] == 2  # one T1 query per image
    assert whole["t2"]["mode"] == "decoder" and whole["t2"]["dice"] == whole["t2:decoder"]["dice"]
    n_t2 = whole["t2:decoder"]["n"]
    assert n_t2 >= 2 and whole["t2:exemplar"]["n"] == whole["t2:hybrid"]["n"] == n_t2
    for block in whole.values():
        assert 0 <= block["dice"] <= 1 and 0 <= block["prompted_tile_share"] <= 1
        assert 0 <= block["class_f1"] <= 1  # nucleus F1 by centroid matching
    # exemplar T2 runs no decoder (its nuclei come from the cached T1 map)
    assert (
        whole["t1"]["prompted_tile_share"] > 0 and whole["t2:exemplar"]["prompted_tile_share"] == 0
    )
    for per in whole["t2:exemplar"]["per_class"].values():
        assert per["n"] >= 1 and 0 <= per["class_f1"] <= 1
    for block in whole.values():  # refused queries are counted, never more than were asked
        assert 0 <= block["refused"] <= block["n"]
    # why true nuclei went unmatched: every true nucleus matched or missed for one cause
    misses = whole["t1"]["misses"]
    missed = misses["merged"] + misses["misshapen"] + misses["not_found"]
    assert misses["true"] > 0 and misses["matched"] + missed == misses["true"]
    # the classical floor is scored whole too: its own T2 rule and the exemplar classifier
    floor = next(e for e in m["methods"] if e["kind"] == "classical")["whole_image"]
    assert set(floor) == {"t1", "t2", "t2:decoder", "t2:exemplar", "t2:T1 answer as T2"}
    report = (out / "report.md").read_text()
    assert "## Whole images (tiled predictor)" in report
    assert "## Whole images: per class (T2)" in report and "T2 (exemplar)" in report
    assert "T2 (T1 answer as T2)" in report
    assert "## Whole images: why nuclei were missed" in report and "| missed: merged |" in report
    # the clicks fall in one tile and are the same for every method (seeded by image + intent)
    sample = read_folder(setup / "test")[1]  # 240 x 300: 2 x 2 tiles of 224
    boxes = [(0, 224, 0, 224), (0, 224, 76, 300), (16, 240, 0, 224), (16, 240, 76, 300)]
    from sampo_engine.prompts import Intent

    a = one_tile_clicks(sample.inst, sample.cls, Intent("t1"), boxes, 0, sample.name)
    b = one_tile_clicks(sample.inst, sample.cls, Intent("t1"), boxes, 0, sample.name)
    assert np.array_equal(a[0], b[0]) and (a[1] == 1).sum() == 3
    box = max(boxes, key=lambda bx: len(np.unique(sample.inst[bx[0] : bx[1], bx[2] : bx[3]])))
    xs, ys = a[0][:, 0], a[0][:, 1]
    assert ((xs >= box[2]) & (xs < box[3]) & (ys >= box[0]) & (ys < box[1])).all()


def test_a_query_the_method_refuses_is_an_empty_answer_counted_as_refused(monkeypatch):
    """A predictor that cannot answer some clicks (e.g. its nuclei merged into one blob that
    every click names) does not stop the evaluation: that query scores as an empty answer."""
    import numpy as np

    from sampo_engine.data.synthetic import make_synthetic_dataset
    from sampo_engine.errors import DataError
    from sampo_engine.eval import whole
    from sampo_engine.eval.classical import ClassicalTilePredictor

    class Refusing(ClassicalTilePredictor):
        def predict(self, points_xy, labels, task=None, **kw):
            if task == "t2":
                raise DataError("none of the clicks names a nucleus: every clicked nucleus ...")
            return super().predict(points_xy, labels, task=task, **kw)

    dataset = make_synthetic_dataset(1, 224, seed=3)
    monkeypatch.setattr(whole, "_whole_image_predictor", lambda *args: Refusing())
    rows = whole.score_whole_images(None, dataset, [0], "both", t2_modes=("decoder",))
    t1 = [r for r in rows if r["task"] == "t1"]
    t2 = [r for r in rows if r["task"] == "t2" and r["t2_mode"] == "decoder"]
    assert t1 and t2 and all(r["refused"] is None for r in t1)
    assert all("names a nucleus" in r["refused"] and r["dice"] == 0 and r["pq"] == 0 for r in t2)
    # the T1 answer scored as T2 is not a query the method answers: never refused
    as_t2 = [r for r in rows if r["t2_mode"] == whole.T1_AS_T2]
    assert len(as_t2) == len(t2) and all(r["refused"] is None for r in as_t2)
    summary = whole.summarize_whole(rows)
    assert summary["t1"]["refused"] == 0 and summary["t2"]["refused"] == len(t2)
    assert np.isfinite(summary["t1"]["dice"]) and summary["t1"]["dice"] > 0


def test_slot_rule_is_applied_and_reported(setup, tmp_path):
    import csv

    args = ["eval", "--data", str(setup / "test"), "--adapter", str(setup / "lora"), "--quiet"]
    args += ["--no-base", "--sensitivity-queries", "0", "--robustness-repeats", "0"]
    args += ["--no-instances"]
    slots = {}
    for rule in ("iou", "clicks"):
        out = tmp_path / rule
        assert main([*args, "--slot-rule", rule, "--out", str(out)]) == 0
        m = json.loads((out / "metrics.json").read_text())
        assert m["config"]["slot_rule"] == rule
        assert f"Slot scored: {rule}" in (out / "report.md").read_text()
        with open(out / "per_query.csv") as handle:
            slots[rule] = [row for row in csv.DictReader(handle)]
    assert len(slots["iou"]) == len(slots["clicks"]) > 0
