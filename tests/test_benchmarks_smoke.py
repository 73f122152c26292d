"""``benchmarks/contention.py --quick`` runs end to end — quiet and busy conditions, the
demo's training and a whole-tile prediction in fresh processes — and cleans up after itself.
``benchmarks/exemplar_bench.py`` re-scores a tile the model sees resampled. Speed is not
asserted here (the machines are shared); docs/performance.md and docs/exemplars.md have the
figures."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process took the number
        return True
    # a zombie (exited, not yet reaped by a parent) is not running either
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "zombie" in status.read_text())


def test_contention_benchmark_quick_run(tmp_path):
    result_file, work = tmp_path / "contention.json", tmp_path / "work"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "contention.py"),
            "--quick",
            "--busy",
            "1",
            "--keep",
            str(work),
            "--json",
            str(result_file),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(result_file.read_text())
    assert result["busy_processes"] == 1 and result["size"] == 448
    runs = result["runs"]["engine"]
    for condition in ("quiet", "busy"):
        run = runs[condition]
        assert run["train_steps"] >= 1 and run["train_threads"] >= 1
        for key in ("train_s", "predict_s", "reference_s", "step_median_s", "import_s"):
            assert math.isfinite(run[key]) and run[key] > 0, (condition, key)
        assert run["predict_tiles"] == 9  # 448² at 224 px with 32 px overlap: 3 × 3 tiles
        assert run["omp_wait_policy"] == "PASSIVE"  # the engine's default reached the child
    assert runs["quiet"]["busy_pids"] == [] and len(runs["busy"]["busy_pids"]) == 1
    assert not any(_alive(pid) for pid in runs["busy"]["busy_pids"])  # the loop was stopped
    for key, ratio in result["ratios"]["engine"].items():
        assert math.isfinite(ratio) and ratio > 0, key
    assert "| engine |" in done.stdout and "target busy / quiet" in done.stdout
    # both children trained and wrote a bundle; the shared data was generated once
    for condition in ("engine-quiet", "engine-busy"):
        assert (work / condition / "adapter" / "sampo_bundle.json").is_file()


def test_exemplar_benchmark_runs_with_the_model_seeing_the_tile_resampled(tmp_path):
    out = tmp_path / "exemplar.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "exemplar_bench.py"), "--size", "448",
         "--repeats", "1", "--resample", "1.5", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["resample"] == 1.5 and result["nuclei"] > 0
    assert result["rescore_seconds"] > 0 and len(result["rescore_all"]) == 1
    assert "re-score" in done.stdout


def test_shipped_t1_benchmark_times_both_splits_on_the_real_tile(tmp_path):
    out = tmp_path / "t1.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "shipped_t1_bench.py"), "--size", "320",
         "--repeats", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1", SAMPO_CACHE_DIR=str(tmp_path / "cache")),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["model"] == "nuclei-small" and result["split"] == "head"
    assert result["nuclei"]["head"] > 0 and result["nuclei"]["watershed"] > 0
    assert result["t1_first_answer_s"] > 0 and result["head_vs_watershed_ratio"] > 0
    assert result["nuclei"]["head+flips"] > 0 and result["flips_vs_head_ratio"] > 0
    assert "of the 10 s target" in done.stdout
