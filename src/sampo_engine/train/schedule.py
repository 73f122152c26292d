"""The optimiser of the small heads (split head, type head): AdamW with a cosine learning rate
falling from ``lr`` to 0 over ``steps``, and one training step of it."""

from __future__ import annotations

import math

import torch


def cosine_adamw(params, lr: float, weight_decay: float, steps: int):
    """(optimizer, scheduler): AdamW at ``lr``; step the scheduler once per optimiser step."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    return opt, sched


def take_step(opt, sched, loss: torch.Tensor) -> float:
    """One optimiser step on ``loss`` (gradients cleared first) and one scheduler step;
    returns the loss' value."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return float(loss.item())
