"""Task "classes" in the Segment dock: name a few classes, click a few nuclei of each, and every
nucleus of the tile gets one of them, with its probability.

Each click carries its class in the prompts layer's ``class`` feature
(:mod:`napari_sampo._points`): the "Next point" row shows an editable class name (the class of
the next click) and "Set for selected" re-classes the selected points. The points and the result
are coloured by class with the engine's export palette, in the order the classes were first
clicked, so that napari, the GeoJSON in QuPath and the CSV agree. The engine does the work:
:meth:`~sampo_engine.predict.predictor.TilePredictor.classify` (docs/exemplars.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QPushButton, QWidget

#: The result layer of a class labelling.
CLASSES_LAYER = "SAMPO classes"
#: Offered in the class box (editable: any name can be typed).
SUGGESTED_CLASSES = ("lymphocyte", "tumour", "stromal", "other")


def class_indices(names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Each click's class as an index into the class names, in the order first clicked.

    Args:
        names: the class name of each click ("" = none).

    Returns:
        ((P,) int64 index per click, the K class names).

    Raises:
        DataError naming the remedy: a click without a class, or fewer than two classes.
    """
    from sampo_engine.errors import DataError

    missing = [i + 1 for i, n in enumerate(names) if not n.strip()]
    if missing:
        which = ", ".join(str(i) for i in missing[:5]) + ("…" if len(missing) > 5 else "")
        raise DataError(
            f"point(s) {which} have no class: select them and press 'Set for selected' with a "
            f"class name, or delete them"
        )
    order: list[str] = []
    for name in names:
        if name.strip() not in order:
            order.append(name.strip())
    if len(order) < 2:
        have = f"only '{order[0]}'" if order else "no clicks"
        raise DataError(
            f"task Classes needs clicks of at least two classes ({have} so far): type another "
            f"class name under 'Next point' and click a few of its nuclei (Task T2 finds one "
            f"type against the rest)"
        )
    return np.array([order.index(n.strip()) for n in names], np.int64), order


def class_rgba(index: int) -> tuple[float, float, float, float]:
    """RGBA 0–1 of class ``index`` (0-based): the engine's export colour of class id index + 1."""
    from sampo_engine.predict.export import class_color

    r, g, b = class_color(index + 1)
    return (r / 255.0, g / 255.0, b / 255.0, 1.0)


def class_label_colors(nucleus, order: list[str]) -> dict:
    """{label id: RGBA} for a napari ``DirectLabelColormap``: each nucleus of ``nucleus`` (a
    class labelling) in its class' colour (``order``: the dock's class order), fainter where
    its probability is low (alpha 0.35 .. 1); background transparent."""
    colors: dict = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    index = [order.index(n) if n in order else len(order) + i
             for i, n in enumerate(nucleus.class_names)]  # fmt: skip
    for i, c, p in zip(nucleus.ids.tolist(), nucleus.classes.tolist(),
                       np.asarray(nucleus.probability, float).tolist()):  # fmt: skip
        r, g, b, _ = class_rgba(index[c])
        colors[int(i)] = (r, g, b, 0.35 + 0.65 * min(max(p, 0.0), 1.0))
    return colors


def class_counts_text(nucleus) -> str:
    """ "lymphocyte 120, tumour 292" for a class labelling."""
    counts = np.bincount(nucleus.classes, minlength=len(nucleus.class_names))
    return ", ".join(f"{n} {int(c)}" for n, c in zip(nucleus.class_names, counts))


class SegmentClasses:
    """The "classes" part of :class:`~napari_sampo._widget_segment.SegmentWidget` (a mixin).

    Uses the dock's ``points_combo``, ``polarity_button``, ``task_combo`` and
    ``prompts_layer()``; keeps ``class_order`` (the class names in the order first used).
    """

    def make_class_controls(self, parent) -> QWidget:
        """The class of the next click and "Set for selected" (shown for the task Classes)."""
        box = QWidget(parent)
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        self.class_order: list[str] = []
        self.next_class_combo = QComboBox(box)
        self.next_class_combo.setEditable(True)
        self.next_class_combo.addItems(SUGGESTED_CLASSES)
        self.next_class_combo.setToolTip(
            "task Classes: the class of the next click — pick one or type a name. Click a few "
            "nuclei of each class (at least two classes); every nucleus then gets one of them"
        )
        self.set_class_button = QPushButton("Set for selected", box)
        self.set_class_button.setToolTip("give the selected points this class")
        row.addWidget(self.next_class_combo, 1)
        row.addWidget(self.set_class_button)
        self.next_class_combo.currentTextChanged.connect(self._on_next_class)
        self.set_class_button.clicked.connect(self.set_class_of_selected)
        return box

    def classes_task(self) -> bool:
        return self.task_combo.currentData() == "classes"

    def _known_classes(self, layer) -> list[str]:
        """The dock's class order, extended by the classes of ``layer``'s points and the next
        class (first seen, first coloured)."""
        from napari_sampo._points import next_class, point_classes

        names = point_classes(layer) + [next_class(layer)] if layer is not None else []
        for name in names:
            if name and name not in self.class_order:
                self.class_order.append(name)
        return self.class_order

    def update_point_colors(self) -> None:
        """Points coloured by class under the task Classes, by polarity otherwise."""
        from napari_sampo._points import color_points_by, set_next_class

        layer = self.points_combo.current_layer()
        if layer is None:
            return
        if self.classes_task():
            set_next_class(layer, self.next_class_combo.currentText())
            order = self._known_classes(layer)
            colors = {name: class_rgba(i) for i, name in enumerate(order)}
            color_points_by(layer, "class", colors)
        else:
            color_points_by(layer, "polarity")

    def _on_next_class(self, *_: Any) -> None:
        if self.classes_task() and self.points_combo.current_layer() is not None:
            self.update_point_colors()

    def set_class_of_selected(self, *_: Any) -> int:
        """Give the selected points of the prompts layer the class in the class box; returns
        how many points were changed."""
        from napari_sampo._points import set_class

        layer = self.points_combo.current_layer()
        name = self.next_class_combo.currentText().strip()
        if layer is None or not name:
            return 0
        selected = sorted(layer.selected_data)
        if selected:
            set_class(layer, selected, name)
            self.update_point_colors()
        return len(selected)

    def class_prompts(
        self, points_layer, image_layer, shape
    ) -> tuple[np.ndarray, np.ndarray, list]:
        """(rc (P, 2) row/col, (P,) class index, class names) of the clicks, names in the dock's
        class order; ValueError with the remedy when they cannot make a class labelling."""
        from napari_sampo._points import class_prompts_from_layer

        rc, names = class_prompts_from_layer(points_layer, image_layer, shape)
        index, order = class_indices(names)
        known = self._known_classes(points_layer)
        ranked = sorted(order, key=known.index)
        remap = np.array([ranked.index(n) for n in order], np.int64)
        return rc, remap[index], ranked
