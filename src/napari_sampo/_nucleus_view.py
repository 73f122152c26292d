"""Showing a T2 answer made by nucleus (exemplar or hybrid mode) in napari.

Every nucleus of the answer is coloured by its probability of the clicked type (a colormap from
pale to saturated); the "keep p ≥" slider of the Segment dock re-thresholds the answer from the
probabilities the engine already computed — no model call, a table look-up over the label map.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QSlider, QWidget

#: matplotlib colormap of the probabilities (low = pale yellow, high = dark red)
COLORMAP = "YlOrRd"


def probability_colors(ids, probability) -> dict:
    """{label id: RGBA} colouring each nucleus by its probability (0.3 .. 1 of the colormap),
    with background transparent; a napari ``DirectLabelColormap`` colour dict."""
    from matplotlib import colormaps

    cmap = colormaps[COLORMAP]
    colors = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    for i, p in zip(np.asarray(ids).tolist(), np.asarray(probability, float).tolist()):
        colors[int(i)] = tuple(float(c) for c in cmap(0.3 + 0.7 * min(max(p, 0.0), 1.0)))
    return colors


def threshold_labels(nucleus, threshold: float) -> np.ndarray:
    """(H, W) int32: the nuclei of ``nucleus`` (a
    :class:`~sampo_engine.predict.nucleus_classes.NucleusClasses`) whose probability ≥
    ``threshold``, with their ids; 0 elsewhere."""
    from sampo_engine.predict.nucleus_classes import only_ids

    return only_ids(nucleus.nuclei, nucleus.ids[nucleus.probability >= threshold])


def color_by_probability(layer, nucleus) -> None:
    """Give the Labels ``layer`` one colour per nucleus from its probability."""
    from napari.utils.colormaps import DirectLabelColormap

    layer.colormap = DirectLabelColormap(
        color_dict=probability_colors(nucleus.ids, nucleus.probability)
    )


class ThresholdRow(QWidget):
    """ "keep p ≥ 0.50" and a slider (0 .. 1 in steps of 0.01); emits ``changed(float)``."""

    changed = Signal(float)

    def __init__(self, parent=None, value: float = 0.5):
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.label = QLabel("", self)
        self.slider = QSlider(Qt.Horizontal, self)
        self.slider.setRange(0, 100)
        self.slider.setToolTip(
            "T2 by nucleus: keep the nuclei whose probability of the clicked type is at least "
            "this (colours: pale = unsure, dark red = sure); no recomputation"
        )
        row.addWidget(self.label)
        row.addWidget(self.slider, 1)
        self.slider.valueChanged.connect(self._on_value)
        self.set_value(value)

    def value(self) -> float:
        return self.slider.value() / 100.0

    def set_value(self, value: float) -> None:
        self.slider.setValue(int(round(100 * value)))
        self._on_value(self.slider.value(), emit=False)

    def _on_value(self, raw: int, emit: bool = True) -> None:
        self.label.setText(f"keep p ≥ {raw / 100:.2f}")
        if emit:
            self.changed.emit(raw / 100.0)
