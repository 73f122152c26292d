"""The Segment dock's results: the Labels layers it makes, the T2-by-nucleus view, the exports.

A run's :class:`~sampo_engine.predict.predictor.Prediction` goes into a Labels layer named after
the task ("SAMPO T1 nuclei", "SAMPO T2 <class>") with a features table (label, area, centroid,
class). A new run replaces only the layer this dock made for that name, found by its napari
``unique_id`` and tagged with the dock's token in its metadata; if the user renamed or deleted it,
a new layer is made, and a user's own layer is never touched. A T2 answer made by nucleus is
coloured by probability and re-thresholded by the "keep p ≥" slider without recomputing
(:mod:`napari_sampo._nucleus_view`). "Export…" writes the engine's exports
(:func:`~sampo_engine.predict.export.write_prediction`: instance TIFF, QuPath GeoJSON, per-nucleus
CSV) of the current result layer, with the user's corrections painted into it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import QFileDialog

from napari_sampo._qt_common import error_text, find_layer, layer_uid

METADATA_KEY = "napari_sampo"
#: The export files of a result: ``<prefix>.tif``, ``.geojson`` and ``.csv``.
EXPORT_SUFFIXES = {"labels": ".tif", "geojson": ".geojson", "csv": ".csv"}


def result_layer_name(task: str, class_name: str | None) -> str:
    if task == "t1":
        return "SAMPO T1 nuclei"
    if task == "classes":
        from napari_sampo._segment_classes import CLASSES_LAYER

        return CLASSES_LAYER
    from sampo_engine.predict.config import DEFAULT_T2_CLASS

    if not class_name or class_name == DEFAULT_T2_CLASS:
        return "SAMPO T2 same type"
    return f"SAMPO T2 {class_name}"


def nuclei_features(
    labels: np.ndarray, class_name: str | None, nucleus=None
) -> dict[str, np.ndarray]:
    """The result layer's features: one row per nucleus (``index`` = its label, for napari).

    ``nucleus`` (the engine's ``NucleusClasses`` of a T2 by nucleus or a class labelling) adds
    each nucleus' ``probability``; a class labelling also gives each its own ``class``.
    """
    from skimage.measure import regionprops_table

    table = regionprops_table(labels, properties=("label", "area", "centroid"))
    ids = table["label"].astype(np.int64)
    classes = np.array([class_name or ""] * len(ids), dtype=object)
    features = {
        "index": ids,
        "label": ids,
        "area": table["area"].astype(np.int64),
        "centroid_y": table["centroid-0"].astype(np.float64),
        "centroid_x": table["centroid-1"].astype(np.float64),
        "class": classes,
    }
    if nucleus is not None:
        row = {int(i): k for k, i in enumerate(nucleus.ids)}
        at = np.array([row.get(int(i), -1) for i in ids], np.int64)
        known = at >= 0
        probability = np.full(len(ids), np.nan)
        probability[known] = nucleus.probability[at[known]]
        features["probability"] = probability
        if nucleus.mode == "classes":
            classes[known] = [nucleus.class_names[c] for c in nucleus.classes[at[known]]]
    return features


class SegmentResults:
    """The results part of :class:`~napari_sampo._widget_segment.SegmentWidget` (a mixin).

    Uses the dock's ``viewer``, ``_token``, ``_outputs`` (our layer name -> (unique_id, name)),
    ``result_layer``, ``last_prediction``, its image / prompts pickers, ``threshold_row``,
    ``count_label``, ``status_label``, ``export_button``, ``_model_choice()``,
    ``_report_error()`` and the corrections glue
    (:class:`~napari_sampo._segment_corrections.SegmentCorrections`).
    """

    def _our_layer(self, name: str):
        """The layer this widget made under ``name``, if it still exists under that name."""
        entry = self._outputs.get(name)
        if entry is None:
            return None
        layer = find_layer(self.viewer, entry[0])
        if layer is None or layer.name != entry[1]:
            return None
        meta = layer.metadata.get(METADATA_KEY, {})
        return layer if meta.get("widget") == self._token else None

    def show_prediction(self, prediction, reused: bool = False):
        """Put a :class:`Prediction` into this widget's result layer for its task and class."""
        name = result_layer_name(prediction.task, prediction.class_name)
        nucleus = getattr(prediction, "nucleus", None)
        if nucleus is not None and prediction.task == "t2":
            from napari_sampo._nucleus_view import threshold_labels

            labels = threshold_labels(nucleus, self.threshold_row.value())
            prediction.labels = labels
            prediction.num_nuclei = int(np.count_nonzero(np.unique(labels)))
        labels = prediction.labels.astype(np.int32, copy=False)
        features = nuclei_features(labels, prediction.class_name, nucleus)
        meta = {
            "widget": self._token,
            "task": prediction.task,
            "class_name": prediction.class_name,
            "model": self._model_choice()[1],
        }
        layer = self._our_layer(name)
        self._autosave_correction()  # the user's edits are saved before they are replaced
        if layer is not None:
            layer.data = labels
            layer.features = features
            layer.metadata = {**layer.metadata, METADATA_KEY: meta}
            layer.visible = True
        else:
            image = self.image_combo.current_layer()
            kwargs: dict[str, Any] = {}
            if image is not None:
                kwargs = {
                    "scale": tuple(image.scale[-2:]),
                    "translate": tuple(image.translate[-2:]),
                }
            layer = self.viewer.add_labels(
                labels, name=name, features=features, metadata={METADATA_KEY: meta}, **kwargs
            )
            self._outputs[name] = (layer_uid(layer), layer.name)
        self.threshold_row.setVisible(nucleus is not None and prediction.task == "t2")
        if nucleus is not None and prediction.task == "t2":
            from napari_sampo._nucleus_view import color_by_probability

            color_by_probability(layer, nucleus)
        elif nucleus is not None and prediction.task == "classes":
            from napari.utils.colormaps import DirectLabelColormap

            from napari_sampo._segment_classes import class_label_colors

            colors = class_label_colors(nucleus, self.class_order)
            layer.colormap = DirectLabelColormap(color_dict=colors)
        points = self.points_combo.current_layer()
        if points is not None:  # keep the clicks on top of the result, and selected
            self._raise_above(points, layer)
            self.viewer.layers.selection.active = points
        self.result_layer = layer
        self.last_prediction = prediction
        self._start_correction_session(layer, labels, prediction)  # follow the user's edits
        self.export_button.setEnabled(True)
        label = "nucleus" if prediction.num_nuclei == 1 else "nuclei"
        what = f" ({prediction.class_name})" if prediction.class_name else ""
        if nucleus is not None and prediction.task == "classes":
            from napari_sampo._segment_classes import class_counts_text

            what = f" ({class_counts_text(nucleus)})"
        self.count_label.setText(f"{prediction.num_nuclei} {label}{what} in '{layer.name}'")
        if nucleus is not None and prediction.task == "classes":
            how = f"{len(nucleus.ids)} nuclei given one of {len(nucleus.class_names)} classes"
        elif nucleus is not None and prediction.task == "t2":
            how = f"{len(nucleus.ids)} nuclei classified from your clicks (T2 by {nucleus.mode})"
        else:
            how = (
                f"{prediction.tiles_with_prompts} clicked tile(s), "
                f"{prediction.tiles_propagated} prompted by similarity"
            )
        self.status_label.setText(
            f"Done in {prediction.seconds:.1f} s: {how}"
            + (
                ", image embeddings reused"
                if reused or not prediction.encoder_seconds
                else f", image embedded in {prediction.encoder_seconds:.1f} s"
            )
            + "."
            + "".join(f" Note: {m}." for m in getattr(prediction, "messages", None) or [])
        )
        if not reused:  # once per image, not on every click
            self._warn_magnification(prediction)
        return layer

    def _warn_magnification(self, prediction) -> None:
        """A far-off nucleus size (the engine's "magnification:" message) as a napari warning,
        in this dock's words (the remedy names 'Pixel size' under Options)."""
        from napari.utils.notifications import show_warning

        from napari_sampo._qt_common import gui_text
        from napari_sampo._segment_fields import CONTROLS

        for message in getattr(prediction, "messages", None) or []:
            if message.startswith("magnification:"):
                show_warning(f"Segment nuclei: {gui_text(message, CONTROLS)}")

    def apply_threshold(self, threshold: float) -> bool:
        """Re-threshold the last T2-by-nucleus answer at ``threshold`` in its result layer,
        from the probabilities already computed (no model call). False when there is none."""
        prediction = self.last_prediction
        nucleus = getattr(prediction, "nucleus", None)
        layer = self.result_layer
        if nucleus is None or prediction.task != "t2" or layer is None:
            return False
        if self._our_layer(layer.name) is not layer:
            return False  # renamed or removed by the user: never touch it
        from napari_sampo._nucleus_view import threshold_labels

        labels = threshold_labels(nucleus, threshold)
        self._autosave_correction()  # edits of the previous answer are kept
        layer.data = labels
        layer.features = nuclei_features(labels, prediction.class_name, nucleus)
        prediction.labels = labels
        prediction.num_nuclei = int(np.count_nonzero(np.unique(labels)))
        self._start_correction_session(layer, labels, prediction)
        label = "nucleus" if prediction.num_nuclei == 1 else "nuclei"
        self.count_label.setText(
            f"{prediction.num_nuclei} {label} ({prediction.class_name}) with p ≥ "
            f"{threshold:.2f} in '{layer.name}'"
        )
        return True

    def _raise_above(self, top, below) -> None:
        """Move layer ``top`` just above layer ``below`` when it is under it (layer list order:
        later = drawn on top). Other layers keep their order."""
        layers = self.viewer.layers
        try:
            i, j = layers.index(top), layers.index(below)
        except ValueError:
            return
        if i < j:
            layers.move(i, j + 1)

    def _export_dialog(self) -> None:
        name = self.result_layer.name if self.result_layer is not None else "nuclei"
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Export nuclei (writes .tif, .geojson and .csv)",
            str(Path.home() / name.replace(" ", "_")),
            "All three (*.tif *.geojson *.csv)",
        )
        if path:
            self.export(path)

    def export(self, prefix) -> list[Path]:
        """Write ``<prefix>.tif`` (instances), ``.geojson`` (QuPath) and ``.csv`` (per nucleus)
        of the current result layer, with any corrections the user painted into it."""
        from napari.utils.notifications import show_info

        from napari_sampo._image import layer_to_rgb
        from sampo_engine.predict.export import write_prediction

        layer = self.result_layer
        if layer is None or find_layer(self.viewer, layer_uid(layer)) is None:
            self._report_error("nothing to export: run Segment first (the result layer is gone)")
            return []
        prefix = Path(prefix)
        if prefix.suffix.lower() in (".tif", ".tiff", ".geojson", ".csv", ".json"):
            prefix = prefix.with_suffix("")
        labels = np.asarray(layer.data)
        meta = layer.metadata.get(METADATA_KEY, {})
        prediction = self.last_prediction
        # the probabilities of a T2 answer made by nucleus and the classes of a class
        # labelling (painted labels have none)
        task = getattr(prediction, "task", "") or ""
        nucleus = getattr(prediction, "nucleus", None) if task in ("t2", "classes") else None
        image = self.image_combo.current_layer()
        pixels = None
        if image is not None:
            try:
                pixels = layer_to_rgb(image)
                if pixels.shape[:2] != labels.shape:
                    pixels = None
            except Exception:  # noqa: BLE001 - the CSV then has no intensity column values
                pixels = None
        paths = {kind: prefix.with_suffix(suffix) for kind, suffix in EXPORT_SUFFIXES.items()}
        try:
            written = write_prediction(
                paths, labels, image=pixels, class_name=meta.get("class_name"), nucleus=nucleus,
                task=task,
            )  # fmt: skip
        except Exception as err:  # noqa: BLE001 - shown to the user
            self._report_error(f"export failed: {error_text(err)}")
            return []
        ids = np.unique(labels[labels > 0])
        message = f"Exported {len(ids)} nuclei to {prefix}.tif/.geojson/.csv"
        self.status_label.setText(message)
        show_info(message)
        return written
