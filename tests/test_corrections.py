"""The corrections store, records, the offline preference loss and the trainer hook."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sampo_engine.corrections.store import (
    CorrectionRecord,
    CorrectionStore,
    edited_region,
    make_record,
    open_corrections,
)
from sampo_engine.errors import ConfigError, DataError
from sampo_engine.losses import dpo_loss, mask_loglik


def _record(size=32, seed=0, **kw) -> CorrectionRecord:
    rng = np.random.default_rng(seed)
    original = rng.random((size, size)) > 0.5
    corrected = original.copy()
    corrected[: size // 2] = False
    return CorrectionRecord(
        image=rng.integers(0, 255, (size, size, 3), dtype=np.uint8),
        points=np.array([[3.0, 4.0], [10.0, 20.0]]),
        labels=np.array([1, 0]),
        original=original,
        corrected=corrected,
        **kw,
    )


# ----------------------------------------------------------------------------- store
def test_store_round_trip_list_delete(tmp_path):
    store = CorrectionStore(tmp_path / "corr")
    a = _record(seed=1, task="t2", class_name="epithelial", class_id=2, model={"model": "tiny"})
    b = _record(seed=2)
    id_a, id_b = store.add(a), store.add(b)
    assert id_a != id_b and store.ids() == [id_a, id_b] and len(store) == 2
    back = store.load(id_a)
    for name in ("image", "points", "labels", "original", "corrected", "corrected_instances"):
        assert np.array_equal(getattr(back, name), getattr(a, name)), name
    assert (back.task, back.class_name, back.class_id) == ("t2", "epithelial", 2)
    assert back.model == {"model": "tiny"} and back.created == pytest.approx(a.created)
    index = json.loads((tmp_path / "corr" / "index.json").read_text())
    assert index["format"] == "sampo-corrections" and index["version"] == 1
    assert index["records"][0]["changed_pixels"] == a.changed_pixels
    # a new store on the same folder (napari restarted) sees the same records
    assert CorrectionStore(tmp_path / "corr", create=False).ids() == [id_a, id_b]
    store.delete(id_a)
    assert store.ids() == [id_b] and not (tmp_path / "corr" / f"{id_a}.npz").exists()
    with pytest.raises(DataError, match="no correction record"):
        store.delete(id_a)
    with pytest.raises(DataError, match="no correction record"):
        store.load("nope")
    assert [r.id for r in open_corrections(tmp_path / "corr")] == [id_b]


def test_store_writes_are_atomic_and_the_index_heals(tmp_path, monkeypatch):
    store = CorrectionStore(tmp_path)
    first = store.add(_record(seed=1))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", broken)
    with pytest.raises(OSError, match="disk full"):
        store.add(_record(seed=2))
    monkeypatch.undo()
    assert store.ids() == [first]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{first}.npz", "index.json"]
    # a record file the index misses (crash between the two writes) is found again
    (tmp_path / "index.json").unlink()
    assert store.ids() == [first]


def test_bad_folders_say_what_to_do(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        CorrectionStore(tmp_path / "missing", create=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        CorrectionStore(tmp_path / "file")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "index.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read .*index.json"):
        CorrectionStore(tmp_path / "bad")
    (tmp_path / "other" / "index.json").parent.mkdir()
    (tmp_path / "other" / "index.json").write_text('{"format": "x"}')
    with pytest.raises(DataError, match="not a SAMPO corrections index"):
        CorrectionStore(tmp_path / "other")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no correction records"):
        open_corrections(tmp_path / "empty")
    with pytest.raises(DataError, match="disagree"):
        CorrectionRecord(
            np.zeros((4, 4, 3)), np.zeros((0, 2)), [], np.zeros((4, 4)), np.zeros((5, 5))
        )


# ----------------------------------------------------------------------------- records
def test_region_is_padded_to_the_model_size_and_clipped():
    changed = np.zeros((300, 400), bool)
    changed[10:20, 390:395] = True
    top, left, bottom, right = edited_region(changed, 112)
    assert (bottom - top, right - left) == (112, 112) and right == 400 and top == 0
    assert edited_region(np.zeros((5, 5), bool), 112) is None
    small = np.ones((50, 60), bool)
    assert edited_region(small, 112) == (0, 0, 50, 60)


def test_make_record_crops_region_and_shifts_points():
    inst = np.zeros((300, 300), np.int32)
    inst[100:110, 100:110] = 1
    inst[200:210, 200:210] = 2
    corrected = inst.copy()
    corrected[corrected == 2] = 0  # the user deletes a false nucleus
    points_rc = np.array([[105.0, 105.0], [205.0, 205.0], [5.0, 295.0]])
    rec = make_record(
        np.zeros((300, 300, 3), np.uint8), inst, corrected, points_rc, [1, 0, 0], "t1", 64
    )
    assert rec is not None and rec.changed_pixels == 100
    top, left = rec.origin
    assert rec.shape[0] >= 64 and rec.shape[1] >= 64
    assert np.allclose(rec.points[0], [105 - left, 105 - top])  # (x, y) in region pixels
    assert (
        make_record(np.zeros((300, 300, 3), np.uint8), inst, inst, points_rc, [1, 0, 0], "t1", 64)
        is None
    )
    split = inst.copy()
    split[100:105, 100:110] = 3  # a split: same mask, different instances
    assert make_record(np.zeros((300, 300, 3), np.uint8), inst, split, points_rc[:1], [1], "t1", 64)


# ----------------------------------------------------------------------------- loss
def test_dpo_on_hand_made_tensors_prefers_the_corrected_mask():
    torch.manual_seed(0)
    original = torch.rand(8, 8) > 0.4
    corrected = original.clone()
    corrected[:4] = False  # erased false positives
    ref = torch.randn(8, 8)
    logits = ref.clone().requires_grad_(True)
    opt = torch.optim.SGD([logits], lr=1.0)

    def margin():
        loss, m = dpo_loss(
            mask_loglik(logits, corrected),
            mask_loglik(ref, corrected),
            mask_loglik(logits, original),
            mask_loglik(ref, original),
            beta=2.0,
        )
        return loss, m

    loss, m0 = margin()
    assert float(m0.detach()) == 0.0  # policy = reference at the start
    loss.backward()
    opt.step()
    _, m1 = margin()
    assert float(m1.detach()) > 0
    # only the pixels where the masks differ moved, and toward the corrected mask
    moved = (logits.detach() - ref).abs() > 0
    assert torch.equal(moved, corrected != original)
    assert (logits.detach()[:4] <= ref[:4]).all()


def test_reviewed_loglik_counts_only_the_reviewed_region():
    """ℓ over R: pixels outside R do not count; over the whole crop it is the crop mean; the
    pair's margin is |crop| / |R| times the crop-wide one (which never saturated)."""
    torch.manual_seed(0)
    logits = torch.randn(2, 16, 16)
    masks = torch.rand(2, 16, 16) > 0.5
    everything = torch.ones(2, 16, 16, dtype=torch.bool)
    torch.testing.assert_close(mask_loglik(logits, masks, everything), mask_loglik(logits, masks))
    region = torch.zeros(2, 16, 16, dtype=torch.bool)
    region[:, 4:8, 4:8] = True
    changed = logits.clone()
    changed[~region] = 100.0  # outside R: irrelevant
    torch.testing.assert_close(
        mask_loglik(changed, masks, region), mask_loglik(logits, masks, region)
    )
    original = masks | region
    corrected = masks & ~region  # erased inside R
    reviewed = original | corrected
    gap_r = mask_loglik(logits, corrected, reviewed) - mask_loglik(logits, original, reviewed)
    gap_crop = mask_loglik(logits, corrected) - mask_loglik(logits, original)
    torch.testing.assert_close(gap_r, gap_crop * 256 / reviewed.flatten(1).sum(1))
    assert torch.equal(mask_loglik(logits, masks, torch.zeros_like(region)), torch.zeros(2))


def test_simulated_pathologist_deletes_objects_that_are_not_nuclei():
    from sampo_engine.experiments.corrections_study import correct

    target = np.zeros((20, 20), bool)
    target[2:8, 2:8] = True  # a nucleus
    original = np.zeros((20, 20), bool)
    original[1:8, 1:9] = True  # found, outline a bit too big: kept as drawn
    original[12:16, 12:16] = True  # pigment: deleted
    original[7:9, 9:14] = True  # joins the first object: counts with it
    fixed = correct(original, target, "debris")
    assert fixed[1:8, 1:9].all() and fixed[7:9, 9:14].all() and not fixed[12:16, 12:16].any()
    np.testing.assert_array_equal(correct(original, target, "t2-class"), original & target)
    assert not correct(np.zeros((5, 5), bool), np.zeros((5, 5), bool), "debris").any()


def test_corrections_term_learns_the_records():
    from sampo_engine.corrections.pairs import CorrectionsDataset
    from sampo_engine.models.build import build_sam
    from sampo_engine.models.lora import full_finetune
    from sampo_engine.train.corrections_loss import corrections_term

    torch.manual_seed(0)
    adapted = full_finetune(build_sam("tiny", None, 112))
    records = [_record(112, seed=s) for s in range(2)]
    data = CorrectionsDataset(records, 112)
    opt = torch.optim.AdamW(adapted.trainable_parameters(), lr=1e-3)
    margins = []
    for step in range(6):
        loss, metrics = corrections_term(
            adapted, data.batch(step, 2), 2.0, torch.device("cpu"), "fp32"
        )
        margins.append(metrics["corr_margin"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert margins[0] == pytest.approx(0.0, abs=1e-5)  # policy = reference
    assert margins[-1] > 0.0 and metrics["corr_pref_acc"] == 1.0
    assert {"corr_loss", "corr_pref_acc", "corr_margin", "corr_iou"} <= set(metrics)


def test_dataset_crops_large_records_around_the_edits():
    from sampo_engine.corrections.pairs import CorrectionsDataset

    rec = _record(32)
    big = CorrectionRecord(
        image=np.zeros((300, 200, 3), np.uint8),
        points=np.array([[150.0, 250.0], [5.0, 5.0]]),
        labels=np.array([1, 0]),
        original=np.zeros((300, 200), bool),
        corrected=np.pad(np.ones((10, 10), bool), ((240, 50), (140, 50))),
    )
    data = CorrectionsDataset([rec, big], 112)
    item = data.item(1, np.random.default_rng(0))
    assert item["image"].shape == (3, 112, 112) and item["corrected"].any()
    assert (item["labels"] == 1).sum() == 1 and (item["labels"] == 0).sum() == 0
    small = data.item(0, np.random.default_rng(0))  # padded with white / background
    assert small["image"].shape == (3, 112, 112) and int(small["image"][0, -1, -1]) == 255
    batch = data.batch(3, 4)
    assert batch["image"].shape[0] == 2  # never more than the records


# ----------------------------------------------------------------------------- trainer / CLI
def test_train_cli_uses_corrections(tmp_path):
    from sampo_engine.cli import main
    from sampo_engine.data.folder import write_folder
    from sampo_engine.data.synthetic import make_synthetic_dataset

    write_folder(make_synthetic_dataset(3, 112, seed=0), tmp_path / "data")
    store = CorrectionStore(tmp_path / "corr")
    store.add(_record(112, seed=1))
    args = [
        "train",
        "--data",
        str(tmp_path / "data"),
        "--model",
        "tiny",
        "--full",
        "--image-size",
        "112",
        "--batch-size",
        "2",
        "--max-steps",
        "2",
        "--epochs",
        "1",
        "--val-fraction",
        "0",
        "--quiet",
    ]
    out = tmp_path / "run"
    assert (
        main(
            [
                *args,
                "--out",
                str(out),
                "--corrections",
                str(tmp_path / "corr"),
                "--corrections-weight",
                "0.5",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("corr_pref_acc" in r and "corr_margin" in r for r in rows)
    bundle = json.loads((out / "sampo_bundle.json").read_text())
    assert bundle["config"]["corrections_weight"] == 0.5
    plain = tmp_path / "plain"
    assert main([*args, "--out", str(plain)]) == 0
    rows = [json.loads(line) for line in (plain / "metrics.jsonl").read_text().splitlines()]
    assert "corr_margin" not in rows[0]
    assert main([*args, "--out", str(tmp_path / "x"), "--corrections", str(tmp_path / "none")]) != 0


def test_corrections_are_refused_under_torchrun(tmp_path):
    from sampo_engine.train.config import TrainConfig
    from sampo_engine.train.distributed import DistContext
    from sampo_engine.train.trainer import Trainer

    with pytest.raises(ConfigError, match="corrections-weight"):
        TrainConfig(data="d", out="o", model="tiny", full=True, corrections_weight=-1).validate()

    CorrectionStore(tmp_path).add(_record(112, seed=1))
    trainer = Trainer.__new__(Trainer)
    trainer.config = TrainConfig(data="d", out="o", corrections=str(tmp_path))
    trainer.log = lambda *a, **k: None
    trainer.dist = DistContext(rank=0, world=2)  # rank 0 of a two-process torchrun
    with pytest.raises(ConfigError, match="torchrun"):
        trainer._load_corrections()
    trainer.dist = DistContext()  # one process: the same records load
    assert len(trainer._load_corrections()) == 1


# ----------------------------------------------------------------------------- the study
def test_the_corrections_study_runs_end_to_end_and_reports_every_number(tmp_path):
    """A smoke run of the corrections study (``sampo_engine.experiments.corrections_study``,
    ``tools/corrections_study.py``) at toy sizes (~7 s): base pre-training, the
    simulated pathologist's records, both fine-tuning arms on one seed, held-out scores and the
    table. It checks the pipeline and the report, not the study's claim: that learning from the
    corrections beats the same steps without them on held-out tiles is shown by the study at its
    defaults (``python tools/corrections_study.py``, ~2 min; docs/corrections.md)."""
    from sampo_engine.experiments.corrections_study import StudyConfig, run_study, summary_table

    cfg = StudyConfig(
        image_size=64,
        train_images=4,
        pretrain_steps=4,
        pretrain_batch_size=2,
        record_tiles=6,
        eval_tiles=4,
        finetune_steps=2,
        batch_size=2,
        seeds=(0,),
    )
    lines = []
    result = run_study(cfg, tmp_path, log=lines.append)
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(result))
    assert result["config"]["finetune_steps"] == 2 and result["eval_queries"] > 0
    # the simulated pathologist corrected the base's output: records in the plugin's store
    assert result["records"] >= 1
    assert len(open_corrections(tmp_path / "corrections")) == result["records"]
    assert f"{result['records']} correction records" in lines[0]
    shares = ("wrong_share", "missed_share", "dice", "predicted_share", "debris_predicted")
    for key in shares:
        assert 0.0 <= result["base"][key] <= 1.0, key
    (row,) = result["runs"]
    assert row["seed"] == 0
    for arm in ("online", "corrections"):
        for key in shares:
            assert 0.0 <= row[arm][key] <= 1.0, (arm, key)
        for key in ("record_ll_corrected", "record_ll_original", "record_ll_gap"):
            assert np.isfinite(row[arm][key]), (arm, key)
        gap = row[arm]["record_ll_corrected"] - row[arm]["record_ll_original"]
        assert row[arm]["record_ll_gap"] == pytest.approx(gap, abs=1e-5)
        metrics = tmp_path / f"{arm}-0" / "metrics.jsonl"
        steps = [json.loads(line) for line in metrics.open()]
        assert len(steps) == cfg.finetune_steps
        # only the corrections arm trained on the records (the offline preference term)
        assert ("corr_loss" in steps[0]) == (arm == "corrections"), arm
    table = summary_table(result).splitlines()
    assert len(table) == 2 + 1 + 2 + 2  # header, rule, base, seed 0's two arms, two means
    assert table[2].startswith("| – | base |") and "pigment predicted" in table[0]
