"""The real-data study (``sampo_engine.experiments.real_data``, ``tools/real_data_study.py``) end
to end on generated data: split, pretrain, fine-tune, evaluate and report, as the study is run
(tiny schedules; the real study's numbers are in docs/results.md)."""

import contextlib
import json
import sys
import time
from types import SimpleNamespace

import pytest

from sampo_engine.cli import main
from sampo_engine.data.folder import write_folder
from sampo_engine.data.synthetic import make_synthetic_dataset
from sampo_engine.experiments.real_data import plan, stages
from sampo_engine.experiments.real_data import study as real_data_study


@pytest.fixture()
def study(monkeypatch):
    # two small datasets: one with classes (T1 + T2), one with outlines only (T1); the split and
    # the training's --data both read plan.DATASETS
    monkeypatch.setattr(plan, "DATASETS", {"typed": ("t1+t2", 1), "plain": ("t1", 1)})
    commands = []

    def in_process(cmd, log, threads=0, cwd=None):
        """The study's `run`, minus the subprocess: the same `sampo-engine` command line through
        the CLI's main in this process (8 commands: ~30 s of torch imports saved)."""
        assert cmd[:3] == [sys.executable, "-m", "sampo_engine.cli"], cmd
        commands.append(cmd[3])
        t0 = time.perf_counter()
        with open(log, "a", encoding="utf-8") as fh:
            with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
                code = main(cmd[3:])
        if code:
            sys.exit(f"failed ({code}): see {log}")
        return time.perf_counter() - t0

    monkeypatch.setattr(stages, "run", in_process)  # pretrain, finetune and evaluate call it
    return SimpleNamespace(main=real_data_study.main, commands_run=commands)


def test_study_runs_end_to_end_and_writes_the_report(study, tmp_path):
    shared = tmp_path / "shared"
    write_folder(make_synthetic_dataset(3, 224, seed=0), shared / "typed")
    write_folder(make_synthetic_dataset(3, 224, seed=1), shared / "plain")
    for path in (shared / "plain").glob("*_class.tif"):
        path.unlink()
    meta = json.loads((shared / "plain" / "meta.json").read_text())
    (shared / "plain" / "meta.json").write_text(json.dumps(dict(meta, classes=None)))
    out, docs = tmp_path / "study", tmp_path / "docs"
    (docs).mkdir()
    (docs / "results_discussion.md").write_text("## What the numbers say\n\nhand-written\n")
    args = ["--shared", str(shared), "--out", str(out), "--docs", str(docs)]
    args += ["--pretrain-epochs", "1", "--finetune-epochs", "1", "--finetune-steps", "2"]
    args += ["--seeds", "0", "1", "--variants", "sampo", "lsup"]
    study.main(["all", *args])
    assert study.commands_run == ["train"] * 5 + ["eval"] * 3  # base, 2 × 2 adapters, 3 evals

    split = json.loads((out / "split.json").read_text())
    for name in ("typed", "plain"):
        test = split["datasets"][name]["test"]
        assert len(test) == 1 and split["datasets"][name]["n_train"] == 2
        # held-out images are whole images absent from the training folder
        assert not list((out / "data" / "train" / name).glob(f"{test[0]}_*"))
    base = json.loads((out / "base" / "sampo_bundle.json").read_text())
    assert base["kind"] == "full" and base["complete"] and base["task"] == "t1"
    for run in ("sampo_s0", "sampo_s1", "lsup_s0", "lsup_s1"):
        bundle = json.loads((out / "adapters" / run / "sampo_bundle.json").read_text())
        assert bundle["complete"] and bundle["kind"] == "lora"
    assert (
        json.loads((out / "adapters" / "lsup_s0" / "sampo_bundle.json").read_text())["config"][
            "alpha"
        ]
        == 0
    )
    metrics = json.loads((out / "eval" / "typed" / "metrics.json").read_text())
    names = {m["name"] for m in metrics["methods"]}
    assert {"small (no adapter)", "sampo_s0", "lsup_s1"} <= names
    assert any(m["kind"] == "classical" for m in metrics["methods"])
    assert (out / "eval_clicks" / "typed" / "metrics.json").is_file()
    assert not (out / "eval_clicks" / "plain").exists()  # no classes: no T2 run

    text = (docs / "results.md").read_text()
    assert "## Answer" in text and "SAMPO − L_sup-only per seed" in text
    assert "## T2 — all nuclei of the clicked class" in text and "hand-written" in text
    for image in ("results_dice.png", "results_sensitivity.png"):
        assert (docs / "images" / image).stat().st_size > 5000
    timings = json.loads((out / "timings.json").read_text())
    assert {"pretrain", "finetune/sampo_s0", "eval/typed", "eval_clicks/typed"} <= set(timings)

    # a second call finds everything done and only rewrites the report
    before = (out / "adapters" / "sampo_s0" / "sampo_bundle.json").stat().st_mtime_ns
    study.main(["all", *args])
    assert (out / "adapters" / "sampo_s0" / "sampo_bundle.json").stat().st_mtime_ns == before
    assert len(study.commands_run) == 8  # nothing ran again
