"""The fine-tune dock's T2 class source: a class Labels layer or a column of the nuclei layer's
features table.

A class Labels layer gives per-pixel class ids (each nucleus takes the most frequent non-zero
class under it); a features column gives one value per nucleus (class names or integer ids). A
Segment result's filled "class" column is chosen automatically when it appears.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_sampo._qt_common import find_layer, layer_kind, layer_uid


def _column_has_values(features, column: str) -> bool:
    """True when the features column holds at least one class (not only "", None or NaN)."""
    for value in features[column].tolist():
        if value is None or (isinstance(value, float) and value != value):
            continue
        if str(value).strip() not in ("", "0"):
            return True
    return False


class FinetuneClasses:
    """The class-source part of :class:`~napari_sampo._widget_finetune.FinetuneWidget` (a mixin).

    Uses the dock's ``viewer``, ``class_combo``, ``labels_combo`` and ``_class_items``.
    """

    def _refresh_class_choices(self, *_: Any) -> None:
        current = self.class_combo.currentData()
        self.class_combo.blockSignals(True)
        self.class_combo.clear()
        self.class_combo.addItem("none", "none:")
        nuclei = self.labels_combo.current_layer()
        for layer in self.viewer.layers:
            if layer_kind(layer) == "labels" and (
                nuclei is None or layer_uid(layer) != layer_uid(nuclei)
            ):
                self.class_combo.addItem(f"layer: {layer.name}", f"layer:{layer_uid(layer)}")
        useful_class_column = False
        if nuclei is not None:
            features = nuclei.features
            for column in features.columns:
                if column != "index":
                    self.class_combo.addItem(f"column: {column}", f"column:{column}")
            # a Segment result has a "class" column; for T1 results it is empty
            useful_class_column = "class" in features.columns and _column_has_values(
                features, "class"
            )
        index = self.class_combo.findData(current)
        new_class_column = "column:class" not in self._class_items
        self._class_items = {self.class_combo.itemData(i) for i in range(self.class_combo.count())}
        if (index <= 0 or new_class_column) and useful_class_column:
            index = self.class_combo.findData("column:class")  # a filled "class" column appeared
        self.class_combo.setCurrentIndex(max(index, 0))
        self.class_combo.blockSignals(False)

    def select_class_source(self, kind: str, value: Any = None) -> None:
        """``("layer", layer)`` / ``("column", name)`` / ``("none",)`` as the T2 class source."""
        self._refresh_class_choices()
        data = f"layer:{layer_uid(value)}" if kind == "layer" else f"{kind}:{value or ''}"
        index = self.class_combo.findData(data)
        if index < 0:
            raise ValueError(f"no class source {kind} {value!r}")
        self.class_combo.setCurrentIndex(index)

    def _classes(self, inst: np.ndarray, task: str):
        """(class map or None, class names) from the chosen class source."""
        from napari_sampo._training_data import classes_from_map, classes_from_table
        from sampo_engine.errors import DataError

        kind, _, value = str(self.class_combo.currentData() or "none:").partition(":")
        if kind == "layer":
            layer = find_layer(self.viewer, value)
            if layer is None:
                raise DataError("the class Labels layer is gone; pick another class source")
            class_map = np.asarray(layer.data)
            names = {}
            features = layer.features
            for column in ("name", "class", "class_name"):
                if column in features.columns:
                    ids = features["index"] if "index" in features.columns else features.index
                    names = {int(i): str(n) for i, n in zip(ids, features[column], strict=False)}
                    break
            return classes_from_map(inst, class_map), names
        if kind == "column":
            features = self.labels_combo.current_layer().features
            if value not in features.columns:
                raise DataError(f"the nuclei layer has no feature column {value!r} any more")
            ids = features["index"] if "index" in features.columns else features.index
            return classes_from_table(inst, ids.to_numpy(), features[value].tolist())
        return None, {}
