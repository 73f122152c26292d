"""`sampo-engine train` under torchrun: 2 gloo ranks on the CPU with the tiny model.

Two ranks at per-rank batch b must train the same LoRA weights as one process at batch 2b (same
seed): the ranks' shards of the seeded permutation make up the same global batches, DDP averages
the gradients and ``distributed.global_loss`` weighs the preference terms by the pair counts.
What is left is float rounding (per-rank batches of 2 instead of one of 4, the order of the
gradient sum): measured ~1.5e-8 max abs difference on weights of size ~0.2 after 2 AdamW steps.
Without the pair weighting the difference is ~1e-3, so the tolerance below (1e-5) tells the two
apart. See docs/distributed.md.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from sampo_engine.cli import main
from sampo_engine.data.folder import write_folder
from sampo_engine.data.synthetic import make_synthetic_dataset

ATOL = 1e-5  # LoRA weights, DDP (2 × batch 2) vs one process (batch 4)
TIMEOUT = 240  # a hang fails the test instead of blocking the suite


@pytest.fixture(scope="module")
def data_and_base(tmp_path_factory):
    import torch

    from sampo_engine.models.build import build_sam, save_base_checkpoint

    root = tmp_path_factory.mktemp("dist")
    # 5 images of 224 px, 1 held out -> 4 training crops: 1 global batch of 4 per epoch
    write_folder(make_synthetic_dataset(5, 224, seed=0), root / "data")
    torch.manual_seed(0)
    save_base_checkpoint(build_sam("tiny", None, 224), root / "base.pth")
    return root / "data", root / "base.pth"


def _args(data, base, out, batch):
    return [
        "train",
        "--data",
        str(data),
        "--checkpoint",
        str(base),
        "--out",
        str(out),
        "--model",
        "tiny",
        "--lora-rank",
        "4",
        "--batch-size",
        str(batch),
        "--epochs",
        "2",
        "--val-fraction",
        "0.2",
        "--eval-crops",
        "2",
        "--seed",
        "3",
        "--device",
        "cpu",
        # bf16 rounding of the reference pass depends on the batch shape (per-rank batch 2 vs
        # batch 4), which would add ~1e-4 to the weight difference; compare in fp32
        "--reference-precision",
        "fp32",
        "--quiet",
    ]


def _torchrun(target, args, extra_env=None):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **(extra_env or {}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]
    return subprocess.run(
        [*cmd, *target, *args], env=env, capture_output=True, text=True, timeout=TIMEOUT
    )


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_gloo_ranks_train_what_one_process_trains(data_and_base, tmp_path):
    from safetensors.torch import load_file

    data, base = data_and_base
    ddp_out, one_out = tmp_path / "ddp", tmp_path / "one"
    proc = _torchrun(["-m", "sampo_engine"], _args(data, base, ddp_out, 2))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("adapter bundle:") == 1  # rank 0 alone reports
    assert main(_args(data, base, one_out, 4)) == 0

    meta = json.loads((ddp_out / "sampo_bundle.json").read_text())
    assert meta["kind"] == "lora" and meta["complete"] and meta["epochs_done"] == 2
    assert not (ddp_out / "sampo_run.json").exists()
    steps = [r["step"] for r in _rows(ddp_out / "metrics.jsonl")]
    assert steps == [1, 2]  # written once, by rank 0; 4 crops / global batch 4, 2 epochs
    ddp_rows, one_rows = _rows(ddp_out / "metrics.jsonl"), _rows(one_out / "metrics.jsonl")
    for a, b in zip(ddp_rows, one_rows, strict=True):  # the logged loss is the global one
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6)
        assert a["sup"] == pytest.approx(b["sup"], rel=1e-4, abs=1e-6)

    ddp_w = load_file(str(ddp_out / "adapter_model.safetensors"))
    one_w = load_file(str(one_out / "adapter_model.safetensors"))
    assert ddp_w.keys() == one_w.keys()
    assert any(v.abs().sum() > 0 for k, v in one_w.items() if "lora_B" in k)  # it did train
    diff = max(float((ddp_w[k] - one_w[k]).abs().max()) for k in one_w)
    assert diff < ATOL, f"DDP and single-process LoRA weights differ by {diff:.3g}"

    ddp_val, one_val = _rows(ddp_out / "epochs.jsonl"), _rows(one_out / "epochs.jsonl")
    assert [e["epoch"] for e in ddp_val] == [0, 1] and "t1_dice" in ddp_val[-1]
    assert ddp_val[-1]["t1_dice"] == pytest.approx(one_val[-1]["t1_dice"], abs=1e-3)


FAILING = textwrap.dedent(
    """
    import os, sys
    from sampo_engine.train.trainer import Trainer

    step = Trainer._train_step

    def failing(self, batch):
        if self.dist.rank == int(os.environ["FAIL_RANK"]) and self.global_step >= 1:
            raise RuntimeError("injected failure")
        return step(self, batch)

    Trainer._train_step = failing
    from sampo_engine.cli import main
    raise SystemExit(main(sys.argv[1:]))
    """
)


def test_a_failing_rank_ends_every_rank(data_and_base, tmp_path):
    data, base = data_and_base
    script = tmp_path / "failing.py"
    script.write_text(FAILING)
    out = tmp_path / "run"
    # rank 1 fails at its 2nd step (epoch 2) while rank 0 waits for it in an all-reduce
    proc = _torchrun([str(script)], _args(data, base, out, 2), {"FAIL_RANK": "1"})
    assert proc.returncode != 0
    assert "injected failure" in proc.stderr and "[rank 1/2]" in proc.stderr
    meta = json.loads((out / "sampo_bundle.json").read_text())  # epoch 1's, kept for --resume
    assert not meta["complete"] and meta["epochs_done"] == 1
    assert (out / "checkpoint.pt").is_file()


def test_one_process_hooks_do_nothing():
    from sampo_engine.train import distributed

    assert not distributed.launched() and distributed.is_main()
    assert not distributed.context().enabled
    assert distributed.on_main(lambda x: x + 1, 1) == 2
    metrics = {"loss": 1.0, "margin": float("nan")}
    assert distributed.mean_metrics(metrics) is metrics
    lo = object()
    assert distributed.global_loss(lo, None) is lo
    assert distributed.wrap_policy(None, None) is None
    distributed.barrier()
