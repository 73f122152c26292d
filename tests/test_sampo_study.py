"""tools/sampo_study.py (``sampo_engine.experiments.sampo_study``) end to end on generated data:
paired adapters at two data fractions, the evaluation, the preference probe and the page, as the
study is run (tiny schedules; the real study's numbers are in docs/sampo_study.md)."""

import contextlib
import json
import sys

import pytest

from sampo_engine.cli import main as cli_main
from sampo_engine.data.folder import write_folder
from sampo_engine.data.synthetic import make_synthetic_dataset
from sampo_engine.experiments import sampo_study
from sampo_engine.models.build import build_sam, save_base_checkpoint


@pytest.fixture()
def commands(monkeypatch):
    ran = []

    def in_process(cmd, log, threads=0, cwd=None):
        """The study's `run` minus the subprocess: the same command line through the CLI."""
        assert cmd[:3] == [sys.executable, "-m", "sampo_engine.cli"], cmd
        ran.append(cmd[3])
        with open(log, "a", encoding="utf-8") as fh:
            with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
                assert cli_main(cmd[3:]) == 0, f"failed: see {log}"
        return 0.1

    monkeypatch.setattr(sampo_study, "run", in_process)
    return ran


def test_the_study_trains_paired_runs_scores_probes_and_writes_the_page(commands, tmp_path):
    split = tmp_path / "study"
    write_folder(make_synthetic_dataset(3, 224, seed=0), split / "data" / "train" / "typed")
    write_folder(make_synthetic_dataset(1, 224, seed=9), split / "data" / "test" / "typed")
    (split / "split.json").write_text(json.dumps({"seed": 0, "datasets": {}}))
    base = tmp_path / "base.pth"
    save_base_checkpoint(build_sam("tiny", None, 224), base)
    out, docs = tmp_path / "out", tmp_path / "docs"
    docs.mkdir()
    args = ["--out", str(out), "--split-dir", str(split), "--datasets", "typed"]
    args += ["--model", "tiny", "--checkpoint", str(base), "--fractions", "1.0", "0.5"]
    args += ["--seeds", "0", "--variants", "sampo", "lsup", "--steps", "2", "--batch-size", "2"]
    args += ["--robustness-queries", "3", "--probe-crops", "2", "--docs", str(docs)]
    sampo_study.main(["all", *args])

    names = ["sampo_f100_s0", "lsup_f100_s0", "sampo_f50_s0", "lsup_f50_s0"]
    for name in names:
        bundle = json.loads((out / "adapters" / name / "sampo_bundle.json").read_text())
        assert bundle["complete"] and bundle["kind"] == "lora"
    config = json.loads((out / "adapters" / "lsup_f50_s0" / "sampo_bundle.json").read_text())
    assert config["config"]["alpha"] == 0 and config["config"]["fraction"] == 0.5
    assert commands == ["train"] * 4 + ["eval"]
    metrics = json.loads((out / "eval" / "typed" / "metrics.json").read_text())
    assert set(names) <= {m["name"] for m in metrics["methods"]}
    probe = json.loads((out / "preference.json").read_text())
    assert set(probe) == {"base", *names}
    assert set(probe["sampo_f50_s0"]["t2"]) == {"inter", "intra"}

    text = (docs / "sampo_study.md").read_text()
    assert "## Answer" in text and "SAMPO vs L_sup only, T2 Dice, 100 % of the images" in text
    assert "difference per seed" in text
    assert "### 50 % of the class-labelled training images" in text
    assert "## Is the preference term learning?" in text and "| base (nuclei-small)" in text

    sampo_study.main(["all", *args])  # everything is done: only the page is written again
    assert commands == ["train"] * 4 + ["eval"]


def _method(name, t2, robustness, kind="lora"):
    """A method's entry of ``metrics.json`` as the report reads it (fractions, not × 100)."""
    return {
        "name": name,
        "kind": kind,
        "summary": {"t1": {"dice": 0.7}, "t2": {"dice": t2}},
        "t1_as_t2": {"summary": {"t2": {"dice": 0.5}}},
        "robustness": {"t2": {"mean_std_dice": robustness}},
    }


def test_the_sweep_page_pairs_each_setting_with_the_papers_and_says_when_it_matters(tmp_path):
    """β = 8 lowers T2 Dice by 5 points on every seed (beyond the spread), K = 2 moves nothing:
    the page says so, against SAMPO with the paper's numbers, and drops the whole-image column
    that was not scored."""
    out, docs = tmp_path / "sweep", tmp_path / "docs"
    docs.mkdir()
    methods = [_method("nuclei-small", 0.56, 0.03, kind="base")]
    for seed, jitter in enumerate((0.0, 0.004, -0.004)):
        methods += [
            _method(f"sampo_f10_s{seed}", 0.55 + jitter, 0.02),
            _method(f"beta8_f10_s{seed}", 0.50 + jitter, 0.02),
            _method(f"k2_f10_s{seed}", 0.55 - jitter, 0.02),
        ]
    folder = out / "eval" / "typed"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"methods": methods}))
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "split.json").write_text("{}")
    sampo_study.main(
        ["report", "--out", str(out), "--split-dir", str(tmp_path / "study"), "--docs", str(docs)]
        + ["--datasets", "typed", "--fractions", "0.1", "--variants", "sampo", "beta8", "k2"]
        + ["--no-whole-images", "--page", "sampo_sweep.md"]
    )
    text = (docs / "sampo_sweep.md").read_text()
    assert text.startswith("# SAMPO's open numbers")
    assert "--variants sampo beta8 k2 --no-whole-images --page sampo_sweep.md" in text
    answers = {line.split("**")[1]: line for line in text.splitlines() if line.startswith("- **")}
    beta8 = answers["β = 8 vs SAMPO, T2 Dice, 10 % of the images"]
    assert "→ SAMPO better by 5.0 Dice (every seed" in beta8
    k2 = answers["K = 2 prompt sets vs SAMPO, T2 Dice, 10 % of the images"]
    assert "→ no difference" in k2
    assert not any("L_sup only" in a for a in answers)  # no L_sup-only runs in a sweep
    assert "nucleus F1" not in text.split("## Scores on held-out images")[1].split("## Is")[0]
    assert "| SAMPO, β = 8 | 70.0 ± 0.0 | 50.0 ± 0.4 |" in text


def test_the_gpu_script_runs_the_same_study_on_cuda_into_one_folder(tmp_path):
    import os
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "tools" / "gpu_sampo_study.sh"
    env = dict(os.environ, DRY_RUN="1", PYTHON=sys.executable, SAMPO_CACHE_DIR=str(tmp_path))
    done = subprocess.run(
        ["bash", str(script), str(tmp_path / "gpu")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert "tools/sampo_study.py all" in line and "--device cuda" in line
    assert f"--out {tmp_path / 'gpu'}" in line and f"--docs {tmp_path / 'gpu'}/docs" in line
    assert "--model nuclei-small" in line  # no official checkpoint cached here
