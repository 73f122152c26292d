"""The live training plot in the fine-tune dock: loss, IoU and reward margin per step.

A matplotlib figure on a ``FigureCanvasQTAgg``; lines are updated in place (``set_data``) and the
canvas redrawn lazily (``draw_idle``), so a fast run does not stall the viewer. A panel without
data says "no data yet" instead of showing empty axes with meaningless ticks.
"""

from __future__ import annotations

import math

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

NO_DATA = "no data yet"
#: Height of the plot in the dock (px): three small panels; the dock fits a 1080 px screen.
MIN_HEIGHT = 150

#: (axis title, [(metric key, legend label)]) per panel, top to bottom.
PANELS = (
    ("loss", [("loss", "total"), ("sup", "supervised"), ("pref", "preference")]),
    ("IoU", [("iou_best", "best slot (train)"), ("val_dice", "held-out Dice")]),
    ("reward margin", [("margin", "margin"), ("pref_acc", "pref. accuracy")]),
)


def _theme_colors(theme_name: str | None) -> tuple[str, str]:
    try:
        from napari.utils.theme import get_theme

        theme = get_theme(theme_name or "dark")
        return str(theme.background.as_hex()), str(theme.text.as_hex())
    except Exception:  # noqa: BLE001 - colours are cosmetic
        return "#262930", "#f0f1f2"


class TrainingPlot(FigureCanvasQTAgg):
    """Three stacked panels; :meth:`add_step` appends one step's metrics."""

    def __init__(self, theme: str | None = None, parent=None) -> None:
        background, text = _theme_colors(theme)
        figure = Figure(figsize=(3.6, 3.2), dpi=90, facecolor=background, layout="constrained")
        super().__init__(figure)
        if parent is not None:
            self.setParent(parent)
        self.steps: dict[str, list[float]] = {}
        self.values: dict[str, list[float]] = {}
        self.lines = {}
        self.axes = {}
        self.placeholders = {}
        first = None
        for k, (title, series) in enumerate(PANELS):
            ax = figure.add_subplot(len(PANELS), 1, k + 1, sharex=first)
            first = first or ax
            ax.set_facecolor(background)
            ax.set_title(title, color=text, fontsize=9, loc="left")
            ax.tick_params(colors=text, labelsize=7)
            for spine in ax.spines.values():
                spine.set_color(text)
            for key, label in series:
                marker = "o" if key == "val_dice" else None
                (line,) = ax.plot([], [], label=label, lw=1.2, marker=marker, ms=3)
                self.lines[key] = line
                self.steps[key], self.values[key] = [], []
            # the legend sits on the title's line, right-aligned: the axes keep their height
            legend = ax.legend(
                fontsize=6,
                loc="lower right",
                bbox_to_anchor=(1.0, 1.0),
                ncol=len(series),
                frameon=False,
                borderaxespad=0.1,
                handlelength=1.2,
                columnspacing=0.8,
            )
            for t in legend.get_texts():
                t.set_color(text)
            self.axes[title] = ax
            self.placeholders[title] = ax.text(
                0.5,
                0.45,
                NO_DATA,
                transform=ax.transAxes,
                ha="center",
                va="center",
                color=text,
                alpha=0.6,
                fontsize=8,
            )
        self.axes[PANELS[-1][0]].set_xlabel("step", color=text, fontsize=8)
        self.setMinimumHeight(MIN_HEIGHT)
        self._rescale()

    def clear(self) -> None:
        for key, line in self.lines.items():
            self.steps[key].clear()
            self.values[key].clear()
            line.set_data([], [])
        self._rescale()

    def add_point(self, key: str, step: float, value) -> None:
        if key not in self.lines or value is None:
            return
        value = float(value)
        if not math.isfinite(value):
            return
        self.steps[key].append(float(step))
        self.values[key].append(value)
        self.lines[key].set_data(self.steps[key], self.values[key])

    def add_step(self, step: int, metrics: dict) -> None:
        """One optimiser step's metrics (the trainer's StepEvent.metrics)."""
        for key in self.lines:
            if key in metrics:
                self.add_point(key, step, metrics[key])
        self._rescale()

    def add_validation(self, step: int, record: dict) -> None:
        """An epoch's validation record: the mean of the tasks' held-out Dice scores."""
        dice = [record[k] for k in ("t1_dice", "t2_dice") if record.get(k) is not None]
        if dice:
            self.add_point("val_dice", step, sum(dice) / len(dice))
            self._rescale()

    def _rescale(self) -> None:
        for title, series in PANELS:
            ax = self.axes[title]
            empty = not any(self.values[key] for key, _ in series)
            self.placeholders[title].set_visible(empty)
            last = title == PANELS[-1][0]  # the panels share the step axis: labelled once
            ax.tick_params(
                left=not empty,
                bottom=not empty,
                labelleft=not empty,
                labelbottom=not empty and last,
            )
            if not empty:
                ax.relim()
                ax.autoscale_view()
        if not any(self.values.values()):  # no ticks on the shared step axis either
            self.axes[PANELS[-1][0]].tick_params(bottom=False, labelbottom=False)
        self.draw_idle()

    def is_empty(self, title: str) -> bool:
        """True while panel ``title`` ('loss', 'IoU', 'reward margin') shows "no data yet"."""
        return self.placeholders[title].get_visible()

    def line_length(self, key: str) -> int:
        return len(self.lines[key].get_xdata())
