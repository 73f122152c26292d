"""The Segment dock's words: how it names the engine's tasks and T2 modes, in which order it
offers them, and the map from the engine's CLI flags to its controls (engine messages name
flags; the dock says its own controls instead). No Qt here.
"""

from __future__ import annotations

from sampo_engine.predict.config import PREDICT_TASKS
from sampo_engine.predict.nucleus_classes import DEFAULT_T2_MODE
from sampo_engine.predict.nucleus_classes import T2_MODES as PREDICT_T2_MODES

#: The dock's words for the engine's tasks and T2 modes (the values: ``predict.config``).
TASK_LABELS = {
    "t1": "T1 — all nuclei",
    "t2": "T2 — nuclei of the clicked type",
    "classes": "Classes — every nucleus, one of your classes",
}
T2_MODE_LABELS = {
    "exemplar": "nucleus (few-shot classifier)",
    "decoder": "decoder (SAM reads the type)",
    "hybrid": "both (mean per nucleus)",
}
TASKS = tuple((task, TASK_LABELS.get(task, task)) for task in PREDICT_TASKS)
#: the engine's default mode first, then the others in the engine's order
T2_MODES = tuple(
    (mode, T2_MODE_LABELS.get(mode, mode))
    for mode in sorted(PREDICT_T2_MODES, key=lambda m: m != DEFAULT_T2_MODE)
)
#: CLI flags in engine messages -> this dock's controls (``_qt_common.gui_text``).
CONTROLS = {
    "--model": "Model",
    "--adapter": "Model",
    "--device": "Device",
    "--um-per-px": "Pixel size",
    "--split-by": "Touching nuclei",
    "--type-head": "Nucleus types",
}
