"""How much slower do training and prediction get beside other CPU-bound processes? (docs/performance.md)

Measured in ONE run, on the CPU, as busy / quiet ratios of the same work:

1. the main job's training: ``sampo-engine demo`` (synthetic tiles, the ``tiny`` model trained in
   full, held-out validation, bundle and plot), with ``--images`` tiles and ``--epochs`` epochs;
2. whole-tile prediction: :class:`~sampo_engine.predict.predictor.TilePredictor` (T1, 3 + 3
   clicks, prompts propagated to every tile) with the adapter trained in 1., on a synthetic
   ``--size``² tile: ``set_image`` + ``predict``.

Each condition runs in a fresh child process that goes the way the command line goes (the
OpenMP wait policy is chosen before torch is imported, then the thread count; see
:mod:`sampo_engine.utils.threads`), first "quiet" (the machine as it is), then "busy": beside
``--busy`` pure-Python busy loops (default: one per core this process may use), started before
the child and killed when it ends (each also stops by itself after ``--busy-limit`` seconds).
The synthetic tiles are generated once, before any timing. ``--untuned`` adds both conditions
with torch's defaults as the engine had them before its thread tuning (one thread per core, idle
threads spinning: ``GOMP_SPINCOUNT=300000``, libgomp's default), for comparison.

    python benchmarks/contention.py --json contention.json          # ~5 min on 2 cores
    python benchmarks/contention.py --untuned                        # + the old defaults
    python benchmarks/contention.py --quick                          # smoke run, ~20 s

Each child also times a fixed one-thread compute kernel (the fastest of 3 runs of 20
convolutions of the tiny model's size) before the demo: its busy / quiet ratio is what the
machine's sharing alone costs a thread that never waits for a team-mate, the floor for the jobs'
ratios under the same load (on a VM whose virtual cores share physical ones it is well above the
time-share arithmetic).

Target: busy / quiet ≤ 3 for both (one busy loop per core; a fair share of the
cores would make it about 2 on a quiet machine).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = 3.0
#: The environment variables that decide torch's threads; the child gets exactly the ones of
#: its mode (the engine's defaults, or the pre-#19 defaults), whatever this shell has set.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "KMP_BLOCKTIME",
    "MKL_NUM_THREADS",
)
BUSY_LOOP = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"


# ------------------------------------------------------------------------------ the child


def _reference_seconds(torch, repeats: int = 3) -> float:
    """The fastest of ``repeats`` runs of a fixed one-thread compute kernel (convolutions of the
    tiny model's size): what the machine's sharing alone costs one thread, with no OpenMP team
    to wait for — the floor of any job's busy / quiet ratio in this condition."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    x = torch.randn(4, 32, 56, 56)
    w = torch.randn(32, 32, 3, 3)
    times = []
    try:
        with torch.inference_mode():
            for _ in range(repeats):
                t0 = time.perf_counter()
                for _ in range(20):
                    torch.nn.functional.conv2d(x, w, padding=1)
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    return min(times)


def child(args) -> int:
    """One condition: the demo's training, then a whole-tile prediction; times to --json."""
    from sampo_engine.utils.threads import prefer_passive_wait

    prefer_passive_wait()  # what sampo_engine.cli.main does first
    t0 = time.perf_counter()
    import torch

    t_import = time.perf_counter() - t0
    reference = _reference_seconds(torch)
    from sampo_engine.cli import main as cli_main

    out = Path(args.out)
    demo = [
        "demo",
        "--out",
        str(out),
        "--model",
        "tiny",
        "--images",
        str(args.images),
        "--epochs",
        str(args.epochs),
        "--device",
        "cpu",
        "--threads",
        str(args.threads),
        "--no-real-tile",  # the training is what is timed
        "--quiet",
    ]
    printed = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        status = cli_main(demo)
    t_train = time.perf_counter() - t0
    print(printed.getvalue(), flush=True)
    if status != 0:
        raise SystemExit("the demo failed")
    chosen = re.search(r"torch CPU threads: (\d+)", printed.getvalue())
    train_threads = int(chosen.group(1)) if chosen else torch.get_num_threads()
    steps = [json.loads(line) for line in (out / "adapter" / "metrics.jsonl").open()]
    step_seconds = sorted(s["seconds"] for s in (steps[1:] or steps))  # the first warms up

    from sampo_engine.data.synthetic import synthetic_tile
    from sampo_engine.predict.predictor import PredictConfig, TilePredictor
    from sampo_engine.utils.threads import configure_threads

    choice = configure_threads(args.threads)  # what `sampo-engine predict` does
    sample = synthetic_tile(args.size, seed=1)
    import numpy as np
    from predict_bench import _clicks  # the same clicks as the prediction benchmark

    points, labels = _clicks(sample.inst, 224, np.random.default_rng(0))
    config = PredictConfig(model="tiny", adapter=str(out / "adapter"), device="cpu")
    predictor = TilePredictor(config)
    predictor.set_image(sample.image[:224, :224])  # warm-up (allocator), not counted
    predictor.predict(points, labels)
    t0 = time.perf_counter()
    predictor.set_image(sample.image)
    result = predictor.predict(points, labels, task="t1")
    t_predict = time.perf_counter() - t0
    record = {
        "import_s": t_import,
        "reference_s": reference,
        "train_s": t_train,
        "train_steps": len(steps),
        "step_median_s": step_seconds[len(step_seconds) // 2],
        "train_threads": train_threads,
        "predict_s": t_predict,
        "predict_threads": choice.intra_op,
        "predict_tiles": result.num_tiles,
        "thread_choice": choice.reason,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT", ""),
    }
    Path(args.json).write_text(json.dumps(record, indent=2))
    return 0


# ------------------------------------------------------------------------------ the parent
def start_busy(n: int, limit: float) -> list[subprocess.Popen]:
    """``n`` pure-Python busy loops, each ending by itself after ``limit`` seconds."""
    return [
        subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(limit)], start_new_session=True)
        for _ in range(n)
    ]


def stop_busy(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_condition(name: str, mode: str, busy: int, args, work: Path, data: Path) -> dict:
    """One child run; ``mode`` 'engine' (the engine's defaults) or 'untuned' (pre-#19)."""
    out = work / name
    shutil.copytree(data, out / "data")  # generated once, never timed
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    threads = args.threads
    if mode == "untuned":
        env["GOMP_SPINCOUNT"] = "300000"  # libgomp's default: no passive policy set
        threads = threads or _usable()  # torch's default: one thread per core
    result_file = work / f"{name}.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--out",
        str(out),
        "--json",
        str(result_file),
        "--images",
        str(args.images),
        "--epochs",
        str(args.epochs),
        "--size",
        str(args.size),
        "--threads",
        str(threads),
    ]
    procs = start_busy(busy, args.busy_limit) if busy else []
    try:
        if procs:
            time.sleep(0.5)  # let the loops take the cores
        t0 = time.perf_counter()
        with open(work / f"{name}.log", "w") as log:
            done = subprocess.run(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=args.busy_limit
            )
        wall = time.perf_counter() - t0
    finally:
        stop_busy(procs)
    if done.returncode != 0:
        tail = (work / f"{name}.log").read_text()[-3000:]
        raise SystemExit(f"{name}: the child failed (exit {done.returncode}):\n{tail}")
    record = json.loads(result_file.read_text())
    record.update(
        condition=name, busy_processes=busy, wall_s=wall, busy_pids=[p.pid for p in procs]
    )
    print(
        f"{name:14s} train {record['train_s']:7.1f} s ({record['train_steps']} steps, median "
        f"{record['step_median_s']:.3f} s/step, {record['train_threads']} thread(s))   predict "
        f"{record['predict_s']:6.2f} s ({record['predict_threads']} thread(s))   import "
        f"{record['import_s']:.1f} s   reference {record['reference_s']:.3f} s",
        flush=True,
    )
    return record


def _usable() -> int:
    from sampo_engine.utils.threads import usable_cores

    return usable_cores()


def _ratio(busy: dict, quiet: dict, key: str) -> float:
    return busy[key] / quiet[key] if quiet[key] > 0 else math.nan


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smallest sizes: a smoke run")
    parser.add_argument("--images", type=int, default=12, help="synthetic tiles for the demo")
    parser.add_argument("--epochs", type=int, default=3, help="demo training epochs")
    parser.add_argument("--size", type=int, default=1024, help="side of the predicted tile, px")
    parser.add_argument(
        "--busy", type=int, default=-1, help="busy loops in the busy condition (-1 = one per core)"
    )
    parser.add_argument(
        "--busy-limit",
        type=float,
        default=1800.0,
        help="seconds after which a busy loop (and a child) stops by itself",
    )
    parser.add_argument("--threads", type=int, default=0, help="--threads of the jobs (0 = auto)")
    parser.add_argument(
        "--untuned", action="store_true", help="also run torch's pre-#19 defaults (slow when busy)"
    )
    parser.add_argument("--keep", default="", help="work folder to keep (default: a temp folder)")
    parser.add_argument("--json", default="", help="write the results here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        raise SystemExit(child(args))
    if args.quick:
        args.images, args.epochs, args.size = 3, 1, 448
    busy = _usable() if args.busy < 0 else args.busy

    from sampo_engine.data.folder import write_folder
    from sampo_engine.data.synthetic import make_synthetic_dataset

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="contention."))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    if not (data / "meta.json").is_file():
        write_folder(make_synthetic_dataset(args.images, 256, seed=0), data)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(
        f"{_usable()} usable core(s), load average {load:.2f}; busy = {busy} busy loop(s); demo "
        f"{args.images} tiles × {args.epochs} epoch(s); predicted tile {args.size}²; work {work}",
        flush=True,
    )
    modes = ["engine"] + (["untuned"] if args.untuned else [])
    runs, ratios = {}, {}
    try:
        for mode in modes:
            quiet = run_condition(f"{mode}-quiet", mode, 0, args, work, data)
            loaded = run_condition(f"{mode}-busy", mode, busy, args, work, data)
            runs[mode] = {"quiet": quiet, "busy": loaded}
            ratios[mode] = {
                "train_busy_over_quiet": _ratio(loaded, quiet, "train_s"),
                "train_step_busy_over_quiet": _ratio(loaded, quiet, "step_median_s"),
                "predict_busy_over_quiet": _ratio(loaded, quiet, "predict_s"),
                "reference_busy_over_quiet": _ratio(loaded, quiet, "reference_s"),
            }
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        "| mode | training (demo) busy / quiet | median step busy / quiet | "
        "prediction busy / quiet | one-thread reference kernel busy / quiet |"
    )
    print("|---|---|---|---|---|")
    for mode, r in ratios.items():
        q, b = runs[mode]["quiet"], runs[mode]["busy"]
        print(
            f"| {mode} | **{r['train_busy_over_quiet']:.2f}** ({b['train_s']:.1f} s / "
            f"{q['train_s']:.1f} s) | {r['train_step_busy_over_quiet']:.2f} "
            f"({b['step_median_s']:.3f} / {q['step_median_s']:.3f} s) | "
            f"**{r['predict_busy_over_quiet']:.2f}** ({b['predict_s']:.2f} s / {q['predict_s']:.2f} s) | "
            f"{r['reference_busy_over_quiet']:.2f} ({b['reference_s']:.3f} / {q['reference_s']:.3f} s) |"
        )
    engine = ratios["engine"]
    met = max(engine["train_busy_over_quiet"], engine["predict_busy_over_quiet"]) <= TARGET
    print(f"target busy / quiet ≤ {TARGET:g} for both: {'met' if met else 'NOT met'}")
    result = {
        "busy_processes": busy,
        "usable_cores": _usable(),
        "load_average_at_start": load,
        "images": args.images,
        "epochs": args.epochs,
        "size": args.size,
        "runs": runs,
        "ratios": ratios,
        "target": TARGET,
        "met": met,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
