"""GPU benchmark, sized for under 5 minutes on one H100/H200-class GPU.

    python benchmarks/gpu.py [--model vit_b] [--image-size 224] [--batch-sizes 2 8 16]
                             [--compile] [--peak-tflops N] [--json OUT]

Measures, with random weights (speed does not depend on them), bf16 autocast:
- training throughput (images/s) of full SAMPO steps (K = 4 prompt sets, reference pass, LoRA
  rank 64) and peak GPU memory, at each batch size;
- image-encoder forward TFLOP/s achieved (FLOPs counted by torch.utils.flop_counter) against
  the device's dense bf16 peak (looked up by name, or --peak-tflops);
- optionally the same with torch.compile on the image encoder (--compile), to see if it pays.
Runs on the CPU too (``--device cpu --model tiny``) as a smoke test of the script itself.
"""

from __future__ import annotations

import argparse
import json
import time

BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10": 125.0,
    "4090": 165.0,
}


def device_peak(name: str) -> float | None:
    for key, value in BF16_PEAK_TFLOPS.items():
        if key in name:
            return value
    return None


def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def encoder_tflops(sam, size, batch, device, repeats=10) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from sampo_engine.models.forward import encode
    from sampo_engine.utils.device import autocast

    images = torch.rand(batch, 3, size, size, device=device) * 255
    with torch.inference_mode(), autocast(device):
        with FlopCounterMode(display=False) as counter:
            encode(sam, images)
        flops = counter.get_total_flops()
        for _ in range(3):
            encode(sam, images)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            encode(sam, images)
        sync(device)
    seconds = (time.perf_counter() - t0) / repeats
    return {
        "encoder_gflops_per_batch": flops / 1e9,
        "encoder_s": seconds,
        "encoder_tflops": flops / seconds / 1e12,
    }


def train_throughput(adapted, size, batch, device, steps=6) -> dict:
    import torch

    from sampo_engine.losses import LossConfig
    from sampo_engine.train.step import forward_loss

    g = torch.Generator().manual_seed(0)
    k = 4
    data = {
        "image": (torch.rand(batch, 3, size, size, generator=g) * 255).to(torch.uint8),
        "target": torch.rand(batch, size, size, generator=g) > 0.7,
        "points": torch.rand(batch, k, 6, 2, generator=g) * size,
        "labels": torch.randint(0, 2, (batch, k, 6), generator=g),
    }
    opt = torch.optim.AdamW(adapted.trainable_parameters(), lr=1e-5)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step():
        result = forward_loss(adapted, data, LossConfig(), device, diagnostics=False)
        opt.zero_grad(set_to_none=True)
        result.loss.loss.backward()
        opt.step()

    step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - t0) / steps
    out = {"step_s": seconds, "images_per_s": batch / seconds}
    if device.type == "cuda":
        out["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main(argv=None) -> dict:
    import torch

    from sampo_engine.models.build import build_sam
    from sampo_engine.models.lora import add_lora
    from sampo_engine.utils.device import resolve_device

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="vit_b")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2, 8, 16])
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--compile", action="store_true", help="also measure torch.compile'd encoder"
    )
    parser.add_argument("--peak-tflops", type=float, default=0.0)
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or device_peak(name)
    result = {
        "device": name,
        "model": args.model,
        "image_size": args.image_size,
        "bf16_peak_tflops": peak,
    }
    sam = build_sam(args.model, None, args.image_size).to(device)
    enc = encoder_tflops(sam, args.image_size, max(args.batch_sizes), device)
    result["encoder"] = enc
    if peak:
        enc["share_of_bf16_peak"] = enc["encoder_tflops"] / peak
    print(
        f"{name}: encoder {enc['encoder_tflops']:.1f} TFLOP/s at batch {max(args.batch_sizes)}"
        + (f" ({100 * enc['encoder_tflops'] / peak:.0f}% of {peak:.0f} bf16 peak)" if peak else "")
    )
    if args.compile:
        compiled = build_sam(args.model, None, args.image_size).to(device)
        compiled.image_encoder = torch.compile(compiled.image_encoder)
        result["encoder_compiled"] = encoder_tflops(
            compiled, args.image_size, max(args.batch_sizes), device
        )
        print(f"compiled encoder: {result['encoder_compiled']['encoder_tflops']:.1f} TFLOP/s")
    adapted = add_lora(sam, rank=64).train()
    result["train"] = {}
    for batch in args.batch_sizes:
        try:
            row = train_throughput(adapted, args.image_size, batch, device)
        except torch.cuda.OutOfMemoryError:
            row = {"error": "out of memory"}
            torch.cuda.empty_cache()
        result["train"][str(batch)] = row
        print(
            f"train batch {batch:>3}: "
            + ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
            )
        )
    if args.json:
        from sampo_engine.utils.atomic import write_json_atomic

        write_json_atomic(args.json, result)
    else:
        print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
