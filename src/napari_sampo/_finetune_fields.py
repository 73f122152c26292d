"""The fine-tune dock's fields: which :class:`~sampo_engine.train.config.TrainConfig` options it
shows, under which labels, with which defaults, and the map from the engine's CLI flags to them
(engine messages name flags; the dock says its own controls instead). No Qt here.
"""

from __future__ import annotations

#: TrainConfig fields shown in the main form, then under "More options".
MAIN_FIELDS = ("task", "epochs")
OPTION_FIELDS = (
    "lora_rank",
    "alpha",
    "beta",
    "max_steps",
    "image_size",
    "batch_size",
    "lr",
    "eval_crops",
    "seed",
)
#: Defaults that differ from the CLI's for a single interactive image.
GUI_DEFAULTS = {"eval_crops": 8, "epochs": 10}
#: The form's label of each control (also what engine messages name instead of CLI flags).
LABELS = {
    "model": "Start from",
    "task": "Task(s)",
    "epochs": "Epochs",
    "lora_rank": "LoRA rank",
    "alpha": "α (preference weight)",
    "beta": "β (DPO temperature)",
    "device": "Device",
    "max_steps": "Max steps",
    "image_size": "Input size (px)",
    "batch_size": "Batch size",
    "lr": "Learning rate",
    "eval_crops": "Validation crops",
    "seed": "Seed",
}
#: CLI flags in engine messages -> this dock's controls (``_qt_common.gui_text``).
CONTROLS = {
    **{"--" + name.replace("_", "-"): label for name, label in LABELS.items()},
    **{
        "--" + name.replace("_", "-"): f"{LABELS[name]}' under 'More options"
        for name in (*OPTION_FIELDS, "device")
    },
    "--checkpoint": LABELS["model"],
    "--init-adapter": LABELS["model"],
    "--full": LABELS["model"],
}
