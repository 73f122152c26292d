"""The work stages of the real-data study: each runs ``sampo-engine`` command lines (``python -m
sampo_engine.cli train|eval ...``) as subprocesses through :func:`run`, skips what is already
done and records every command's wall time in ``<out>/timings.json``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sampo_engine.experiments.real_data.plan import (
    VARIANTS,
    adapter_folders,
    complete,
    train_folders,
)


def run(cmd: list[str], log: Path, threads: int = 0, cwd: Path | None = None) -> float:
    """Run ``cmd`` in ``cwd``, its output appended to ``log``; returns the wall time in s; exits
    on failure.

    ``threads`` > 0 sets OMP_NUM_THREADS for it (parallel jobs must not oversubscribe cores).
    """
    print("$", " ".join(cmd), flush=True)
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    t0 = time.perf_counter()
    with open(log, "a", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"failed ({proc.returncode}) after {seconds:.0f} s: see {log}")
    return seconds


_TIMINGS_LOCK = threading.Lock()


def record_time(out: Path, key: str, seconds: float, command: list[str]) -> None:
    with _TIMINGS_LOCK:
        _record_time(out, key, seconds, command)


def _record_time(out: Path, key: str, seconds: float, command: list[str]) -> None:
    path = out / "timings.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = {"seconds": round(seconds, 1), "command": " ".join(command)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


# -------------------------------------------------------------------------------- training


def pretrain(out: Path, args) -> Path:
    base = out / "base"
    if complete(base):
        return base / "base.pth"
    cmd = [
        sys.executable, "-m", "sampo_engine.cli", "train",
        "--data", train_folders(out), "--out", str(base), "--model", "small", "--full",
        "--task", "t1", "--alpha", "0", "--num-prompt-sets", "2",
        "--epochs", str(args.pretrain_epochs), "--batch-size", "8", "--lr", "6e-4",
        "--warmup-steps", "200", "--val-fraction", "0.05", "--eval-crops", "16",
        "--seed", "0", "--device", "cpu",
    ]  # fmt: skip
    if (base / "checkpoint.pt").exists():
        cmd.append("--resume")
    elif base.exists():
        cmd.append("--overwrite")
    record_time(out, "pretrain", run(cmd, out / "pretrain.log", cwd=args.repo), cmd)
    return base / "base.pth"


def finetune_command(out: Path, variant: str, seed: int, args) -> list[str]:
    return [
        sys.executable, "-m", "sampo_engine.cli", "train",
        "--data", train_folders(out), "--out", str(out / "adapters" / f"{variant}_s{seed}"),
        "--model", "small", "--checkpoint", str(out / "base" / "base.pth"),
        "--task", "both", "--lora-rank", str(args.rank), "--epochs", str(args.finetune_epochs),
        "--max-steps", str(args.finetune_steps), "--batch-size", "4", "--lr", "1e-3",
        "--warmup-steps", "20", "--val-fraction", "0.05", "--eval-crops", "16",
        "--seed", str(seed), "--device", "cpu", "--name", f"{variant}_s{seed}",
        *VARIANTS[variant],
    ]  # fmt: skip


def in_parallel(jobs: list, n: int) -> None:
    """Run the callables in ``jobs``, ``n`` at a time (1: one after the other)."""
    if n <= 1:
        for job in jobs:
            job()
        return
    with ThreadPoolExecutor(max_workers=n) as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.result()


def finetune(out: Path, args) -> None:
    """Every variant × seed not complete yet; ``--jobs`` at a time, one thread each."""
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    jobs = []
    for seed in args.seeds:
        for variant in args.variants:
            name = f"{variant}_s{seed}"
            folder = out / "adapters" / name
            if complete(folder):
                continue
            cmd = finetune_command(out, variant, seed, args)
            if folder.exists():
                cmd.append("--overwrite")

            def job(cmd=cmd, name=name):
                log = logs / f"finetune_{name}.log"
                seconds = run(cmd, log, threads=_threads(args), cwd=args.repo)
                record_time(out, f"finetune/{name}", seconds, cmd)

            jobs.append(job)
    in_parallel(jobs, args.jobs)


def _threads(args) -> int:
    return max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else 0


# ------------------------------------------------------------------------------ evaluation


def evaluate(out: Path, args) -> None:
    """One eval run per held-out dataset (iou slot rule), one more per T2 dataset (clicks)."""
    info = json.loads((out / "split.json").read_text())
    adapters = [a for a in adapter_folders(out, args) if complete(a)]
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    jobs = []
    for name, meta in info["datasets"].items():
        runs = [("eval", meta["tasks"].replace("t1+t2", "both"), "iou")]
        if "t2" in meta["tasks"]:
            runs.append(("eval_clicks", "t2", "clicks"))
        for folder, task, rule in runs:
            dst = out / folder / name
            if (dst / "metrics.json").exists():
                continue
            cmd = [
                sys.executable, "-m", "sampo_engine.cli", "eval",
                "--data", str(out / "data" / "test" / name), "--out", str(dst), "--overwrite",
                "--model", "small", "--checkpoint", str(out / "base" / "base.pth"),
                "--task", task, "--slot-rule", rule, "--classical", "--seed", "0",
                "--device", "cpu",
            ]  # fmt: skip
            if rule == "clicks":  # the grid and robustness runs are the iou-rule run's job
                cmd += ["--sensitivity-queries", "0", "--robustness-repeats", "0"]
            for a in adapters:
                cmd += ["--adapter", str(a)]
            if args.jobs > 1:
                cmd += ["--workers", "1"]

            def job(cmd=cmd, key=f"{folder}/{name}"):
                log = logs / f"{key.replace('/', '_')}.log"
                seconds = run(cmd, log, threads=_threads(args), cwd=args.repo)
                record_time(out, key, seconds, cmd)

            jobs.append(job)
    in_parallel(jobs, args.jobs)
