"""The questions a model answers, named once for training, evaluation and prediction.

- ``t1``: every nucleus of the image (the clicks say "nuclei");
- ``t2``: every nucleus of the clicked class (the clicks say "these, not those").

Training and evaluation may also mix them: ``both`` draws T1 and T2 queries side by side.
"""

from __future__ import annotations

#: What one prediction answers.
TASKS = ("t1", "t2")
#: What a training run or an evaluation covers: one task, or ``both`` mixed.
TASK_MIXES = (*TASKS, "both")


def tasks_of(mix: str) -> list[str]:
    """The tasks a mix covers: ``"both"`` → ``["t1", "t2"]``, ``"t1"`` → ``["t1"]``."""
    if mix not in TASK_MIXES:
        raise ValueError(f"task must be one of {', '.join(TASK_MIXES)}, not {mix!r}")
    return list(TASKS) if mix == "both" else [mix]
