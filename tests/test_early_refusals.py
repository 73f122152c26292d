"""Wrong paths are refused before torch is imported — in well under the seconds torch
takes to load — with the usual message style (exit status 2, no traceback)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sampo_engine import early_checks
from sampo_engine.cli import main
from sampo_engine.errors import CheckpointError, ConfigError, DataError


def _cli(*args: str, cwd=None) -> tuple[subprocess.CompletedProcess, float, set[str]]:
    """Run ``python -X importtime -m sampo_engine.cli ARGS``: (result, wall s, modules)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPROFILEIMPORTTIME"}
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "sampo_engine.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )
    wall = time.perf_counter() - t0
    imported = set(re.findall(r"^import time:.*\|\s+(\S+)$", done.stderr, re.MULTILINE))
    return done, wall, imported


def _message(done: subprocess.CompletedProcess) -> str:
    """stderr without the -X importtime lines."""
    lines = done.stderr.splitlines()
    return "\n".join(line for line in lines if not line.startswith("import time:"))


def test_train_with_a_missing_data_folder_answers_at_once_without_torch(tmp_path):
    done, wall, imported = _cli("train", "--data", "/nonexistent", "--out", str(tmp_path / "x"))
    message = _message(done)
    assert done.returncode == 2, message
    assert (
        message
        == "sampo-engine train: error: Dataset folder not found: /nonexistent. Check the path."
    )
    assert "Traceback" not in message
    assert wall < 5, f"refused after {wall:.1f} s"
    assert "sampo_engine.early_checks" in imported  # the listing is real ...
    assert not {"torch", "peft"} & imported, sorted(imported & {"torch", "peft"})  # ... no torch
    assert not (tmp_path / "x").exists()  # nothing written


def _bundle(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "sampo_bundle.json").write_text(json.dumps({"kind": "full"}))
    return folder


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            "eval --data {data} --adapter {tmp}/missing --out {tmp}/e".split(),
            "adapter folder {tmp}/missing not found; pass to --adapter the --out folder of a "
            "`sampo-engine train` run",
        ),
        (
            "eval --data {data} --adapter {data} --out {tmp}/e".split(),
            "{data} is not a SAMPO adapter bundle (no sampo_bundle.json)",
        ),
        (
            "eval --data {tmp}/nodata --out {tmp}/e".split(),
            "Dataset folder not found: {tmp}/nodata. Check the path.",
        ),
        (
            "predict {tmp}/tile.png --points {tmp}/p.csv --out {tmp}/o".split(),
            "Image file not found: {tmp}/tile.png. Check the path (and its spelling).",
        ),
        (
            "predict {image} --points {tmp}/p.csv --out {tmp}/o".split(),
            "points file {tmp}/p.csv not found; pass --points FILE (CSV or JSON)",
        ),
        (
            "predict {image} --points {image} --checkpoint {tmp}/b.pth --out {tmp}/o".split(),
            "checkpoint {tmp}/b.pth not found; check --checkpoint",
        ),
        (
            "train --data {data} --model tiny --full --checkpoint {tmp}/b.pth --out {tmp}/t".split(),
            "checkpoint {tmp}/b.pth not found; check --checkpoint",
        ),
        (
            "train --data {data},{tmp}/second --model tiny --full --out {tmp}/t".split(),
            "Dataset folder not found: {tmp}/second. Check the path.",
        ),
        (
            "train --data {data} --model tiny --full --out {bundle}".split(),
            "already holds a SAMPO run; pass --resume to continue it or --overwrite",
        ),
        (
            "train --data {data} --model tiny --full --out {tmp}/t --resume".split(),
            "nothing to resume in {tmp}/t (no checkpoint.pt); drop --resume",
        ),
        (
            "train --data {data} --model tiny --full --out {tmp}/t --threads -1".split(),
            "--threads must be ≥ 0 (0 = auto), got -1",
        ),
        ("demo --out {image}".split(), "is a file; pass a folder for the demo's outputs"),
        ("demo --device gpu --out {tmp}/d".split(), "--device 'gpu' is not a device"),
    ],
)
def test_every_command_refuses_wrong_paths_before_torch(tmp_path, args, expected):
    """One subprocess per case (~0.5 s each): the message, status 2, and no torch imported."""
    data = tmp_path / "data"
    data.mkdir()
    image = tmp_path / "image.png"
    image.write_bytes(b"not read: refused before")
    bundle = _bundle(tmp_path / "bundle")
    (bundle / "metrics.jsonl").write_text("")
    fill = {"tmp": tmp_path, "data": data, "image": image, "bundle": bundle}
    done, wall, imported = _cli(*[a.format(**fill) for a in args])
    message = _message(done)
    assert done.returncode == 2, message
    assert expected.format(**fill) in message
    assert "Traceback" not in message
    assert "torch" not in imported and "peft" not in imported
    assert wall < 5, f"refused after {wall:.1f} s"


def test_check_functions_name_the_problem_and_the_remedy(tmp_path):
    with pytest.raises(DataError, match="is a file; point to the dataset folder"):
        early_checks.dataset_folder(Path(__file__))
    with pytest.raises(DataError, match="has an empty entry"):
        early_checks.dataset_folders(f"{tmp_path},,{tmp_path}")
    early_checks.dataset_folders(f"{tmp_path}, {tmp_path}")  # pooled folders, spaces allowed
    with pytest.raises(ConfigError, match="no data: pass --data"):
        early_checks.dataset_folder("")
    with pytest.raises(CheckpointError, match="is a folder, not a file"):
        early_checks.checkpoint_file(tmp_path)
    with pytest.raises(DataError, match="is a folder; pass an image file"):
        early_checks.image_file(tmp_path)
    with pytest.raises(DataError, match="corrections folder .* not found"):
        early_checks.corrections_folder(tmp_path / "nope")
    early_checks.device_name("cuda:1")
    (tmp_path / "note.txt").write_text("x")
    with pytest.raises(ConfigError, match="non-empty folder that is not a SAMPO bundle"):
        early_checks.run_folder(tmp_path, resume=False, overwrite=True)
    with pytest.raises(ConfigError, match="is a file"):
        early_checks.run_folder(tmp_path / "note.txt", resume=False, overwrite=False)
    early_checks.run_folder(tmp_path / "new", resume=False, overwrite=False)  # a new folder is fine
    assert not (tmp_path / "new").exists()  # and the check wrote nothing


def test_a_valid_bundle_passes_and_an_official_checkpoint_is_asked_for_early(
    tmp_path, monkeypatch, capsys
):
    """The bundle check accepts a real bundle folder; `train` with vit_b and no cached
    checkpoint is refused with the download command before any data is read."""
    early_checks.adapter_bundle(_bundle(tmp_path / "b"))
    monkeypatch.setenv("SAMPO_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "no vit_b checkpoint found" in err and "sampo-engine weights download vit_b" in err
