"""One benchmark runner: training step, whole-tile prediction, memory — with the targets.

    python benchmarks/run.py [--quick] [--device cpu|cuda] [--json OUT.json]

Runs ``train_step.py`` and ``predict_bench.py`` (each in its own process, so each peak-memory
figure is its own), merges their JSON, prints one table with the targets (docs/performance.md) and writes
the JSON. All speed figures are ratios measured within one run: the machines are shared and
noisy. ``--quick`` finishes in under 5 minutes on a 2-core CPU. On CUDA it also runs
``gpu.py`` (throughput, TFLOP/s vs bf16 peak, GPU memory at batch sizes 2, 8, 16).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# key: (target, "max" | "min", what it means)
TARGETS = {
    "train_step_ratio_sampo_vs_sup": (
        1.25,
        "max",
        "SAMPO step / L_sup-only step (vit_b, 224 px, batch 2, K=4)",
    ),
    "tile_speedup_vs_naive": (
        20.0,
        "min",
        "naive per-patch SamPredictor / our predictor, 2048² tile T1",
    ),
    "tile_overhead_ratio": (1.3, "max", "our predictor total / its image encoder alone"),
    "reprompt_ratio": (0.05, "max", "re-prompt with cached embeddings / first prediction"),
    "train_peak_rss_gb": (4.0, "max", "peak RSS of SAMPO training, vit_b 224 px batch 2 (GB)"),
    "predict_peak_rss_gb": (None, "max", "peak RSS of whole-tile prediction (GB)"),
}


def _run(script: str, args: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(HERE / script), *args, "--json", str(out)]
        print("$ " + " ".join(cmd[1:]), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        result = json.loads(out.read_text())
        result["_wall_s"] = time.perf_counter() - t0
        return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats and naive patches")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--json", default="", help="write the merged results here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    repeats = "3" if args.quick else "7"
    train = _run("train_step.py", ["--device", args.device, "--repeats", repeats])
    predict_args = ["--device", args.device, "--naive-patches", "2" if args.quick else "4"]
    predict = _run("predict_bench.py", predict_args)
    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "python": platform.python_version(),
        },
        "quick": args.quick,
        "device": args.device,
        "train_step_ratio_sampo_vs_sup": train["train_step_ratio_sampo_vs_sup"],
        "train_peak_rss_gb": train["sampo_peak_rss_gb"],
        "tile_speedup_vs_naive": predict.get("tile_speedup_vs_naive"),
        "tile_overhead_ratio": predict.get("tile_overhead_ratio"),
        "reprompt_ratio": predict.get("reprompt_ratio"),
        "predict_peak_rss_gb": predict.get("predict_peak_rss_gb"),
        "train_step": train,
        "predict": predict,
    }
    if args.device == "cuda":
        result["gpu"] = _run("gpu.py", ["--device", "cuda"])
        train_gpu = result["gpu"].get("train", {})
        result["train_images_per_s"] = {b: r.get("images_per_s") for b, r in train_gpu.items()}
        result["encoder_tflops"] = result["gpu"]["encoder"]["encoder_tflops"]
        result["peak_gpu_gb"] = {b: r.get("peak_gpu_gb") for b, r in train_gpu.items()}
    result["total_s"] = time.perf_counter() - started
    print()
    print(f"{'metric':32}{'value':>10}{'target':>10}  ok  meaning")
    met = {}
    for key, (target, kind, meaning) in TARGETS.items():
        value = result.get(key)
        ok = None
        if value is not None and target is not None:
            ok = value <= target if kind == "max" else value >= target
        met[key] = ok
        shown = "–" if value is None else f"{value:.3f}"
        tgt = "–" if target is None else ("≤ " if kind == "max" else "≥ ") + f"{target:g}"
        print(
            f"{key:32}{shown:>10}{tgt:>10}  {'yes' if ok else ('no ' if ok is False else ' – ')} {meaning}"
        )
    result["targets_met"] = met
    print(f"total {result['total_s']:.0f} s")
    if args.json:
        sys.path.insert(0, str(HERE.parent / "src"))
        from sampo_engine.utils.atomic import write_json_atomic

        write_json_atomic(args.json, result)
    return result


if __name__ == "__main__":
    main()
