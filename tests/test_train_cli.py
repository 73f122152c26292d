"""`sampo-engine train` end to end with the tiny model on generated data, as a user runs it."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sampo_engine.cli import main
from sampo_engine.data.folder import write_folder
from sampo_engine.data.synthetic import make_synthetic_dataset


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic")
    write_folder(make_synthetic_dataset(6, 224, seed=0), path)
    return path


def _args(data_dir, out, *extra):
    return [
        "train",
        "--data",
        str(data_dir),
        "--out",
        str(out),
        "--model",
        "tiny",
        "--full",
        "--batch-size",
        "2",
        "--eval-crops",
        "4",
        "--quiet",
        *extra,
    ]


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tiny_trains_end_to_end_and_the_loss_falls(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(_args(data_dir, out, "--epochs", "8", "--lr", "2e-3", "--task", "both"))
    assert code == 0
    printed = capsys.readouterr().out
    assert "held-out T1 Dice" in printed and str(out) in printed
    assert "slot that agrees with the clicks" in printed
    bundle = json.loads((out / "sampo_bundle.json").read_text())
    assert bundle["kind"] == "full" and bundle["complete"] and bundle["epochs_done"] == 8
    assert bundle["class_names"] == {"1": "lymphocyte", "2": "epithelial", "3": "spindle"}
    assert (out / "base.pth").is_file() and (out / "loss_curve.png").stat().st_size > 1000
    rows = _rows(out / "metrics.jsonl")
    assert len(rows) == 8 * 3  # 5 training images -> 5 crops -> 3 steps per epoch
    for key in (
        "loss",
        "sup",
        "inter",
        "intra",
        "pref_acc",
        "margin",
        "usable_pairs",
        "grad_ratio",
        "iou_best",
    ):
        assert key in rows[0]
    first = sum(r["sup"] for r in rows[:4]) / 4
    last = sum(r["sup"] for r in rows[-4:]) / 4
    assert last < first
    epochs = _rows(out / "epochs.jsonl")
    assert "t1_dice" in epochs[-1] and "t2_dice" in epochs[-1] and "t2_clicks_dice" in epochs[-1]


def test_lora_changes_adapter_weights_and_leaves_base_untouched(data_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    from sampo_engine.models.build import build_sam

    base_dir = tmp_path / "base"
    assert main(_args(data_dir, base_dir, "--epochs", "1", "--task", "t1")) == 0
    base_file = base_dir / "base.pth"
    before = torch.load(base_file, weights_only=True)
    lora_dir = tmp_path / "lora"
    args = _args(
        data_dir, lora_dir, "--epochs", "1", "--lora-rank", "4", "--checkpoint", str(base_file)
    )
    args.remove("--full")
    assert main(args) == 0
    after = torch.load(base_file, weights_only=True)
    assert all(torch.equal(before[k], after[k]) for k in before)
    adapter = load_file(str(lora_dir / "adapter_model.safetensors"))
    b_weights = [v for k, v in adapter.items() if "lora_B" in k]
    assert b_weights and any(v.abs().sum() > 0 for v in b_weights)  # B started at zero
    meta = json.loads((lora_dir / "sampo_bundle.json").read_text())
    assert meta["kind"] == "lora" and meta["rank"] == 4 and meta["base_sha256"]
    # the bundle loads for inference on top of its base
    from sampo_engine.models.loading import load_model

    model = load_model(adapter=lora_dir)
    assert model.image_size == 224 and model.mode == "lora"
    assert build_sam("tiny", base_file) is not None


def test_resume_after_sigkill_loses_at_most_one_epoch(data_dir, tmp_path):
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "sampo_engine",
        *_args(data_dir, out, "--epochs", "6", "--task", "t1"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoint.pt").exists():
        time.sleep(0.2)
    assert (out / "checkpoint.pt").exists(), "the first epoch never finished"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(_rows(out / "epochs.jsonl"))
    assert done_before < 6
    assert main(_args(data_dir, out, "--epochs", "6", "--task", "t1", "--resume")) == 0
    epochs = _rows(out / "epochs.jsonl")
    assert [e["epoch"] for e in epochs] == list(range(6))
    steps = [r["step"] for r in _rows(out / "metrics.jsonl")]
    assert steps == list(range(1, len(steps) + 1))  # no duplicated or missing steps
    assert json.loads((out / "sampo_bundle.json").read_text())["complete"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--task", "t2", "--data", "{nocls}"], "T2 needs class labels"),
        (["--image-size", "100"], "multiple of 16"),
        (["--data", "{missing}"], "missing"),
        (["--beta", "0"], "--beta must be > 0"),
        (["--beta", "-2"], "pass --alpha 0"),
        (["--alpha", "-1"], "--alpha must be ≥ 0"),
        (["--lam", "-0.5"], "--lam must be ≥ 0"),
        (["--lr", "0"], "--lr must be > 0"),
        (["--tie-margin", "1.5"], "--tie-margin must be in [0, 1)"),
        (["--warmup-steps", "-3"], "--warmup-steps must be ≥ 0"),
    ],
)
def test_bad_input_gives_clear_message(data_dir, tmp_path, capsys, extra, message):
    nocls = tmp_path / "nocls"
    ds = make_synthetic_dataset(2, 224, seed=1)
    samples = [ds[i] for i in range(len(ds))]
    for s in samples:
        s.cls = None
    write_folder(samples, nocls, class_names={})
    extra = [e.format(nocls=nocls, missing=tmp_path / "missing") for e in extra]
    code = main(_args(data_dir, tmp_path / "out", *extra))
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # a refused run writes nothing


def test_out_folder_of_user_is_never_overwritten(data_dir, tmp_path, capsys):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("precious")
    assert main(_args(data_dir, user, "--epochs", "1")) == 2
    assert "not a SAMPO bundle" in capsys.readouterr().err
    assert (user / "notes.txt").read_text() == "precious" and len(list(user.iterdir())) == 1


def test_existing_run_needs_resume_or_overwrite(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(data_dir, out, "--epochs", "1", "--max-steps", "1")) == 0
    assert main(_args(data_dir, out, "--epochs", "1")) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(_args(data_dir, out, "--epochs", "1", "--max-steps", "1", "--overwrite")) == 0


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path, capsys, monkeypatch):
    import torch

    import sampo_engine.train.trainer as trainer_module

    real = trainer_module.forward_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        result = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 5:  # in the second epoch (3 steps per epoch)
            result.loss.loss = result.loss.loss * torch.tensor(float("nan"))
        return result

    monkeypatch.setattr(trainer_module, "forward_loss", poisoned)
    out = tmp_path / "nan"
    assert main(_args(data_dir, out, "--epochs", "3", "--task", "t1")) == 2
    err = capsys.readouterr().err
    assert "nan" in err and "checkpoint" in err and "Traceback" not in err
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 0 and state["global_step"] == 3  # the last good epoch
    assert json.loads((out / "sampo_bundle.json").read_text())["epochs_done"] == 1


def test_ablation_switches_reach_the_config():
    """`--no-inter` etc. must switch the term off (argparse's BooleanOptionalAction reads any
    `--no-…` flag as False, which once made these ablations silently train full SAMPO)."""
    from sampo_engine._config import dataclass_from_args
    from sampo_engine.cli import build_parser
    from sampo_engine.train.config import TrainConfig

    parser = build_parser()
    base = ["train", "--data", "d", "--out", "o"]
    for flags, expected in (
        ([], (False, False, False)),
        (["--no-inter"], (True, False, False)),
        (["--no-intra"], (False, True, False)),
        (["--no-sup", "--no-inter"], (True, False, True)),
    ):
        config = dataclass_from_args(TrainConfig, parser.parse_args(base + flags))
        assert (config.no_inter, config.no_intra, config.no_sup) == expected, flags


def test_threads_are_chosen_for_the_run_and_restored_after(data_dir, tmp_path, capsys, monkeypatch):
    """The run logs the torch thread count it chose (--threads, or OMP_NUM_THREADS in
    auto mode) and leaves the caller's count as it was."""
    import torch

    before = torch.get_num_threads()
    args = _args(data_dir, tmp_path / "a", "--epochs", "1", "--max-steps", "1", "--threads", "1")
    assert main(args) == 0
    assert "torch CPU threads: 1 (--threads)" in capsys.readouterr().out
    assert torch.get_num_threads() == before
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert main(_args(data_dir, tmp_path / "b", "--epochs", "1", "--max-steps", "1")) == 0
    assert "torch CPU threads: 1 (OMP_NUM_THREADS)" in capsys.readouterr().out
    assert torch.get_num_threads() == before


def test_the_trainer_leaves_its_callers_config_as_given(tmp_path):
    """Data without classes trains T1 only; the caller's ``task="both"`` is not rewritten."""
    from sampo_engine.train.config import TrainConfig
    from sampo_engine.train.trainer import Trainer

    ds = make_synthetic_dataset(3, 64, seed=2)
    samples = [ds[i] for i in range(len(ds))]
    for s in samples:
        s.cls = None
    write_folder(samples, tmp_path / "plain", class_names={})
    config = TrainConfig(
        data=str(tmp_path / "plain"), out=str(tmp_path / "o"), model="tiny", full=True,
        image_size=64, task="both", epochs=1, eval_crops=2, device="cpu",
    )  # fmt: skip
    said = []
    trainer = Trainer(config, log=said.append)
    assert config.task == "both" and trainer.config.task == "t1"
    assert "the data has no classes: training T1 only" in said
