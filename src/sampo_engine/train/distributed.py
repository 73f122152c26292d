"""Training on several GPUs or machines under ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node N -m sampo_engine train ...`` starts N copies of the trainer; each
reads its place from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``). Outside torchrun (``WORLD_SIZE`` unset or 1) nothing here does
anything and training runs exactly as in one process.

What changes with W ranks (see ``docs/distributed.md``):

* Backend nccl with one GPU per rank (``cuda:LOCAL_RANK``), gloo on the CPU (``--device cpu`` or
  no CUDA). MPS cannot be used distributed.
* Data: every rank builds the same seeded crops; :class:`~sampo_engine.train.trainer.EpochSampler`
  hands rank r the entries ``r::W`` of the epoch's seeded permutation, so the W ranks together
  see the same data (the same ``--fraction``) as one process. ``--batch-size`` is **per rank**;
  the global batch is ``W × batch-size``, and an epoch has W times fewer steps.
* Gradients: the policy forward (``encode`` + ``decode``) runs through :class:`PolicyForward`
  wrapped in ``DistributedDataParallel``, which averages the gradients of the trainable
  parameters only (the LoRA adapters; every weight with ``--full``) during ``backward``. The DPO
  reference pass runs on each rank on the unwrapped model, without gradients.
* Loss: the preference terms are means over the usable (non-tie) pairs, and each rank has its
  own number of pairs, so the average of the rank means is not the mean over the global batch.
  :func:`global_loss` rescales each rank's terms by its share of the pairs (one all-reduce of
  two counts), which makes the gradient the one of the single-process loss on the global batch.
* Files: only rank 0 writes (``--out`` set-up, metrics, checkpoints, bundle, plot) and validates;
  :func:`on_main` runs such work on rank 0 and hands its result — or its error — to every rank,
  so the ranks stay in step and fail together. Logged step metrics are the mean over the ranks.
* Failure: an error on one rank is reported and that process leaves at once (``os._exit``);
  torchrun then stops the other ranks, and a rank stuck in a collective gives up after
  ``SAMPO_DIST_TIMEOUT`` seconds (default 1800).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pickle
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from sampo_engine.errors import ConfigError, SampoError

TIMEOUT_ENV = "SAMPO_DIST_TIMEOUT"


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank of world, its local rank and device (None: one process)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device | None = None
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_context = DistContext()


def launched() -> bool:
    """True in a process that torchrun (or a launcher setting the same variables) started, W > 1."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def context() -> DistContext:
    return _context


def is_main() -> bool:
    return _context.is_main


def _device_and_backend(device_name: str | None, local_rank: int) -> tuple[torch.device, str]:
    name = device_name or "auto"
    kind = (
        ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name.split(":")[0]
    )
    if kind == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise ConfigError("--device cuda, but no CUDA GPU is visible; use --device cpu (gloo)")
        if local_rank >= count:
            raise ConfigError(
                f"local rank {local_rank} has no GPU: only {count} are visible on this machine; "
                f"use --nproc_per_node {count} or fewer"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        return device, "nccl"
    if kind == "cpu":
        return torch.device("cpu"), "gloo"
    raise ConfigError(
        f"distributed training runs on CUDA GPUs (nccl) or the CPU (gloo), not on {name!r}; "
        f"use --device cuda or --device cpu"
    )


def setup(device_name: str | None = "auto") -> DistContext:
    """Join the process group described by torchrun's environment variables."""
    global _context
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device, backend = _device_and_backend(device_name, local_rank)
    timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV) or 1800))
    extra = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=timeout, **extra)
    _context = DistContext(rank, world, local_rank, device, backend)
    return _context


def shutdown() -> None:
    global _context
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _context = DistContext()


def barrier() -> None:
    if not _context.enabled:
        return
    import torch.distributed as dist

    if _context.backend == "nccl":
        dist.barrier(device_ids=[_context.local_rank])
    else:
        dist.barrier()


def _fail(err: BaseException) -> None:
    """Report ``err`` (once: errors handed over from rank 0 are rank 0's to print) and leave now.

    ``os._exit`` skips the interpreter's clean-up, which could wait forever on peers that are
    stuck in a collective; torchrun sees the exit and stops the other ranks.
    """
    ctx = _context
    tag = f"sampo-engine train [rank {ctx.rank}/{ctx.world}]"
    if isinstance(err, SystemExit):
        code = err.code if isinstance(err.code, int) else 1
    elif isinstance(err, KeyboardInterrupt):
        code = 130
        print(f"{tag}: interrupted", file=sys.stderr)
    elif isinstance(err, SampoError):
        code = 2
        if not getattr(err, "_from_main", False) or ctx.is_main:
            print(f"{tag}: error: {err}", file=sys.stderr)
    else:
        code = 1
        if not getattr(err, "_from_main", False) or ctx.is_main:
            print(f"{tag}: failed:", file=sys.stderr)
            traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


@contextlib.contextmanager
def session(device_name: str | None = "auto") -> Iterator[DistContext]:
    """Set up the process group, run the body, wait for every rank and tear it down.

    An exception on this rank (in set-up or in the body) is reported and ends the process at once
    with exit status 2 (a :class:`SampoError`), 130 (Ctrl-C) or 1 (anything else).
    """
    try:
        ctx = setup(device_name)
        yield ctx
        barrier()
    except BaseException as err:
        _fail(err)
    shutdown()


def on_main(fn: Callable, *args, **kwargs):
    """Run ``fn`` on rank 0 only and return its result on every rank (one process: just call it).

    An exception on rank 0 is raised on every rank, so file errors (a full disk, a bad ``--out``)
    end every rank alike instead of leaving the others waiting.
    """
    if not _context.enabled:
        return fn(*args, **kwargs)
    import torch.distributed as dist

    payload = None
    error = None
    if _context.is_main:
        try:
            payload = ("ok", fn(*args, **kwargs))
        except Exception as err:
            error = err
            try:
                pickle.dumps(err)
                payload = ("error", err)
            except Exception:
                payload = ("error", RuntimeError(f"{type(err).__name__}: {err}"))
    box = [payload]
    dist.broadcast_object_list(box, src=0, device=_device_for_objects())
    kind, value = box[0]
    if kind == "error":
        if error is not None:
            raise error
        value._from_main = True
        raise value
    return value


def _device_for_objects():
    return _context.device if _context.backend == "nccl" else None


def mean_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The mean of each per-step number over the ranks, ignoring NaN (a rank without pairs)."""
    if not _context.enabled:
        return metrics
    import torch.distributed as dist

    keys = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64)
    finite = torch.isfinite(values)
    buf = torch.stack([torch.where(finite, values, 0.0), finite.double()]).to(_context.device)
    dist.all_reduce(buf)
    total, count = buf.cpu()
    return {
        k: float(total[i] / count[i]) if count[i] > 0 else float("nan") for i, k in enumerate(keys)
    }


def global_loss(lo, config):
    """This rank's loss terms weighed so that DDP's gradient average is the global-batch gradient.

    ``lo`` is this rank's :class:`~sampo_engine.losses.LossOutput`: L = sup + α·(inter + λ·intra)
    with inter/intra the means over this rank's n_r usable pairs. One process on the global batch
    takes the means over all N = Σ n_r pairs; DDP averages over the W ranks, so each rank weighs
    its term by n_r·W/N (one all-reduce of the two counts). The supervised term needs no weight:
    every rank has the same batch size and its means run over fixed-size rows. Returns ``lo`` with
    loss, pref, inter and intra so weighed (their mean over the ranks is then the single-process
    value, which is what the metrics log). If any rank's loss is not finite, every rank's loss is
    NaN, so all of them stop with the same error.
    """
    if not _context.enabled:
        return lo
    import dataclasses

    import torch.distributed as dist

    n_inter = lo.inter_usable
    n_intra = lo.pairs_usable - n_inter
    bad = 0.0 if bool(torch.isfinite(lo.loss.detach())) else 1.0
    stats = torch.tensor([n_inter, n_intra, bad], dtype=torch.float64, device=_context.device)
    dist.all_reduce(stats)
    all_inter, all_intra, all_bad = stats.tolist()
    if all_bad:
        return dataclasses.replace(lo, loss=torch.full_like(lo.loss, float("nan")))
    world = _context.world
    w_inter = n_inter * world / all_inter if all_inter else 0.0
    w_intra = n_intra * world / all_intra if all_intra else 0.0
    return lo.with_terms(w_inter * lo.inter, w_intra * lo.intra, config)


class PolicyForward(nn.Module):
    """``encode`` + ``decode`` of the policy as one module, so DDP can wrap it.

    Returns the low-resolution (logits, iou_pred) tuple of
    :class:`~sampo_engine.models.forward.DecoderOutput`.
    """

    def __init__(self, sam: nn.Module):
        super().__init__()
        self.sam = sam

    def forward(self, images, points, labels):
        from sampo_engine.models.forward import decode, encode

        out = decode(self.sam, encode(self.sam, images), points, labels)
        return out.logits, out.iou_pred


def wrap_policy(adapted, loss_config) -> nn.Module | None:
    """The DDP-wrapped policy forward of ``adapted`` (None outside torchrun).

    Only parameters with ``requires_grad`` (the adapters in LoRA mode) are synchronised. Every
    LoRA weight takes part in every loss unless ``--no-sup`` (then the IoU head's do not); in
    ``--full`` mode some SAM weights (the mask-prompt path) never do — those cases let DDP look
    for unused parameters.
    """
    if not _context.enabled:
        return None
    from torch.nn.parallel import DistributedDataParallel

    find_unused = adapted.mode != "lora" or not loss_config.use_sup
    return DistributedDataParallel(
        PolicyForward(adapted.sam),
        device_ids=[_context.local_rank] if _context.backend == "nccl" else None,
        find_unused_parameters=find_unused,
    )
