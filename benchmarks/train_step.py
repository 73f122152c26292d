"""Time and peak memory of one SAMPO training step vs one L_sup-only step (same batch).

    python benchmarks/train_step.py [--model vit_b] [--image-size 224] [--batch-size 2]
                                    [--prompt-sets 4] [--repeats 5] [--device cpu] [--json OUT]

vit_b with random weights (the timing does not depend on the weights), LoRA rank 64. Both steps
are timed in ONE process, alternating, after a warm-up, so machine noise hits both alike; the
ratio is what to compare. Peak memory (RSS, and CUDA peak on a GPU) is measured in a fresh
subprocess per mode, since a process's peak RSS only ever grows.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _batch(batch_size, k, size, seed=0):
    import numpy as np
    import torch

    from sampo_engine.data.crops import CropDataset, collate
    from sampo_engine.data.synthetic import make_synthetic_dataset
    from sampo_engine.prompts import MiningConfig

    data = make_synthetic_dataset(batch_size, size, seed=seed)
    crops = CropDataset(
        data, list(range(batch_size)), size, "both", MiningConfig(num_sets=k), seed=seed
    )
    batch = collate([crops[i] for i in range(batch_size)])
    assert batch["image"].shape[0] == batch_size and np.isfinite(batch["points"].numpy()).all()
    return batch, torch


def build(model_type, size, device, rank=64):
    from sampo_engine.models.build import build_sam
    from sampo_engine.models.lora import add_lora

    adapted = add_lora(build_sam(model_type, None, size), rank=rank)
    return adapted.to(device).train()


def make_step(adapted, device, sampo: bool, reference_precision: str = "auto"):
    import torch

    from sampo_engine.losses import LossConfig
    from sampo_engine.train.step import forward_loss

    config = LossConfig() if sampo else LossConfig(alpha=0.0)
    opt = torch.optim.AdamW(adapted.trainable_parameters(), lr=1e-5)

    def step(batch):
        result = forward_loss(
            adapted, batch, config, device, reference_precision=reference_precision
        )
        opt.zero_grad(set_to_none=True)
        result.loss.loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def time_both(args) -> dict:
    import torch

    device = torch.device(args.device)
    batch, _ = _batch(args.batch_size, args.prompt_sets, args.image_size)
    adapted = build(args.model, args.image_size, device)
    steps = {
        "sampo": make_step(adapted, device, True, args.reference_precision),
        "sup": make_step(adapted, device, False),
    }
    for fn in steps.values():  # warm-up
        fn(batch)
    times = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn(batch)
            times[name].append(time.perf_counter() - t0)
    med = {name: sorted(v)[len(v) // 2] for name, v in times.items()}
    return {
        "sampo_step_s": med["sampo"],
        "sup_step_s": med["sup"],
        "train_step_ratio_sampo_vs_sup": med["sampo"] / med["sup"],
    }


def peak_memory(args, mode: str) -> dict:
    """Run one mode in this (fresh) process and report its peak memory."""
    import torch

    device = torch.device(args.device)
    batch, _ = _batch(args.batch_size, args.prompt_sets, args.image_size)
    adapted = build(args.model, args.image_size, device)
    step = make_step(adapted, device, mode == "sampo", args.reference_precision)
    for _ in range(2):
        step(batch)
    out = {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if device.type == "cuda":
        out["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="vit_b")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--prompt-sets", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--reference-precision", default="auto", choices=("auto", "fp32", "bf16"),
        help="precision of the DPO reference pass (as `train --reference-precision`)",
    )  # fmt: skip
    parser.add_argument("--json", default="")
    parser.add_argument("--_memory", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._memory:
        print(json.dumps(peak_memory(args, args._memory)))
        return {}
    result = time_both(args)
    for mode in ("sampo", "sup"):
        cmd = [
            sys.executable, __file__, "--model", args.model, "--image-size", str(args.image_size),
            "--batch-size", str(args.batch_size), "--prompt-sets", str(args.prompt_sets),
            "--device", args.device, "--_memory", mode,
            "--reference-precision", args.reference_precision,
        ]  # fmt: skip
        mem = json.loads(
            subprocess.run(cmd, check=True, capture_output=True, text=True)
            .stdout.strip()
            .splitlines()[-1]
        )
        result.update({f"{mode}_{k}": v for k, v in mem.items()})
    result.update(
        model=args.model,
        image_size=args.image_size,
        batch_size=args.batch_size,
        prompt_sets=args.prompt_sets,
        device=args.device,
    )
    print(f"{'':24}{'SAMPO':>10}{'L_sup only':>12}")
    print(
        f"{'step time (s, median)':24}{result['sampo_step_s']:>10.3f}{result['sup_step_s']:>12.3f}"
    )
    print(
        f"{'peak RSS (GB)':24}{result['sampo_peak_rss_gb']:>10.2f}{result['sup_peak_rss_gb']:>12.2f}"
    )
    print(f"ratio SAMPO / L_sup-only step time: {result['train_step_ratio_sampo_vs_sup']:.2f}")
    if args.json:
        from sampo_engine.utils.atomic import write_json_atomic

        write_json_atomic(args.json, result)
    return result


if __name__ == "__main__":
    main()
