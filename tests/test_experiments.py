"""`sampo-engine experiments`: the grid plan, the smoke preset end to end, resume, gather."""

import json

import pytest

from sampo_engine.cli import main
from sampo_engine.experiments.grid_config import ABLATION_ROWS, PRESETS
from sampo_engine.experiments.grid_plan import RunSpec, plan_runs


def test_paper_grid_matches_the_paper_tables():
    p = PRESETS["paper"]
    runs, rows = plan_runs(p, None)
    assert [s.fraction for s in rows["main"][1::2]] == [0.1, 0.2, 0.3, 1.0]
    assert [(s.inter, s.intra, s.sup) for s in rows["ablation"]] == list(ABLATION_ROWS)
    assert {s.fraction for s in rows["ablation"] + rows["alpha"] + rows["rank"]} == {0.1}
    assert [s.alpha for s in rows["alpha"]] == [0.1, 0.5, 1.0, 2.0]
    assert [s.rank for s in rows["rank"]] == [4, 8, 32, 64]
    # shared configurations are trained once: 8 (Table 1) + 4 + 3 + 3 new ones, × 3 seeds
    assert len(runs) == 18 * 3
    names = [s.name(p.lora_rank) for s in runs]
    assert len(set(names)) == len(names)
    assert "f10-sampo-s0" in names and "f10-lsup-s2" in names and "f10-sampo-r4-s1" in names
    assert RunSpec(0.1, inter=False, rank=64).name(64) == "f10-intra+sup-s0"


def test_paper_preset_needs_held_out_data(tmp_path, capsys):
    assert main(["experiments", "--preset", "paper", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--train-data and --test-data" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_dry_run_prints_the_commands(tmp_path, capsys):
    out = tmp_path / "plan"
    args = ["experiments", "--preset", "smoke", "--out", str(out), "--dry-run", "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count("sampo-engine train") == 1 + 10  # the --full base, then the grid
    assert "--full" in printed and "--no-inter" in printed and "sampo-engine eval" in printed
    assert not out.exists()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "smoke"
    args = ["experiments", "--preset", "smoke", "--out", str(out), "--quiet"]
    args += ["--tables", "main", "alpha", "rank", "--fractions", "1.0", "--alphas", "0.5", "1"]
    args += ["--ranks", "2", "4", "--pretrain-epochs", "1", "--max-steps", "1"]
    assert main(args) == 0
    return out, args


def test_smoke_grid_writes_one_report(smoke):
    out, _ = smoke
    summary = json.loads((out / "experiments.json").read_text())
    ds = summary["datasets"][0]
    names = [r["name"] for r in ds["runs"]]
    assert names == ["f100-lsup-s0", "f100-sampo-s0", "f100-sampo-a0.5-s0", "f100-sampo-r2-s0"]
    assert (out / "runs" / "base" / "base.pth").is_file()  # tiny: a --full base, LoRA on top
    for name in names:
        bundle = json.loads((out / "runs" / name / "sampo_bundle.json").read_text())
        assert bundle["kind"] == "lora" and bundle["base_checkpoint"].endswith("base.pth")
    # the table numbers are the evaluation's, and every run saw the same prompts
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    by_name = {m["name"]: m for m in metrics["methods"]}
    assert set(by_name) == {*names, "tiny (no adapter)"}
    assert len({m["prompts_sha256"] for m in metrics["methods"]}) == 1
    for name in names:
        for task in ("t1", "t2"):
            assert ds["results"][name][task]["dice"] == by_name[name]["summary"][task]["dice"]
    report = (out / "experiments.md").read_text()
    assert "## Table 1: data fractions" in report and "## Table 2" not in report
    assert "## Table 3" in report and "## Table 4" in report and "eval/report.md" in report
    assert (out / "eval" / "report.md").is_file()


def test_rerun_needs_resume_and_keeps_finished_runs(smoke, capsys):
    out, args = smoke
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    adapter = out / "runs" / "f100-sampo-s0" / "adapter_model.safetensors"
    before = adapter.stat().st_mtime_ns
    assert main([*args, "--resume", "--tables", "main"]) == 0
    assert adapter.stat().st_mtime_ns == before
    summary = json.loads((out / "experiments.json").read_text())
    assert [r["name"] for r in summary["datasets"][0]["runs"]] == ["f100-lsup-s0", "f100-sampo-s0"]


def test_gather_merges_grids(smoke, tmp_path):
    out, _ = smoke
    merged = tmp_path / "merged"
    assert main(["experiments", "--gather", str(out), str(out), "--out", str(merged)]) == 0
    text = (merged / "experiments.md").read_text()
    assert text.count("synthetic-T1") >= 2 and "## Table 1" in text
