"""The Segment dock's side of "learn from my corrections": one session per result layer.

Each result starts a :class:`~napari_sampo._corrections.CorrectionSession` (the model's labels,
the prompts and the image they came from) and follows the layer's paint and data events. "Save
correction" stores the edited layer as a record (docs/corrections.md); nothing is lost: unsaved
edits are saved before a new run replaces them, when the result layer is deleted, when the dock
closes and when napari quits.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from napari_sampo._qt_common import error_text, find_layer, layer_uid


class SegmentCorrections:
    """The corrections part of :class:`~napari_sampo._widget_segment.SegmentWidget` (a mixin).

    Uses the dock's ``viewer``, ``correction`` (the current session), ``_pending_prompts`` (what
    the next result comes from), ``_watched_results``, ``_predictor``, ``corrections_panel``,
    ``status_label``, ``_model_choice()`` and ``_report_error()``.
    """

    def _start_correction_session(self, layer, labels: np.ndarray, prediction) -> None:
        """Keep the model's output and its prompts; follow the layer's edits."""
        from napari_sampo._corrections import CorrectionSession

        pending, self._pending_prompts = self._pending_prompts, None
        if pending is None or prediction.task not in ("t1", "t2"):
            self.correction = None  # a class labelling's edits are not training data (yet)
            return
        rc, point_labels, task, class_name, image_layer = pending
        uid = layer_uid(layer)
        if uid not in self._watched_results:
            layer.events.paint.connect(self._on_result_edited)
            layer.events.data.connect(self._on_result_edited)
            self._watched_results.add(uid)
        predictor = self._predictor
        size = int(getattr(predictor, "image_size", 0) or 224)
        kind, value = self._model_choice()
        self.correction = CorrectionSession(
            layer_uid=uid,
            original=np.array(labels, dtype=np.int32, copy=True),
            points_rc=np.asarray(rc, float).copy(),
            labels=np.asarray(point_labels).copy(),
            task=task,
            class_name=prediction.class_name or class_name or "",
            image_layer=weakref.ref(image_layer),
            min_size=size,
            model={
                "kind": kind,
                "model": value,
                "model_type": getattr(predictor, "model_type", None),
                "image_size": size,
            },
        )
        self.corrections_panel.refresh()

    def _on_result_edited(self, event=None) -> None:
        session = self.correction
        source = getattr(event, "source", None)
        if session is None or (source is not None and layer_uid(source) != session.layer_uid):
            return
        first = not session.edited
        session.edited, session.saved = True, False
        try:
            if first:
                self.corrections_panel.refresh(edited=True)
        except RuntimeError:  # the dock was closed; napari still held this callback
            pass

    def save_correction(self, *_: Any) -> str | None:
        """Store the current result layer's edits as a correction record; returns its id.

        Nothing is stored (and the reason shown) when there is no result or it is unchanged.
        """
        from napari_sampo._corrections import correction_store, notify_changed

        session = self.correction
        layer = find_layer(self.viewer, session.layer_uid) if session is not None else None
        if session is None or layer is None:
            self.status_label.setText("No correction to save: run Segment, edit the result layer.")
            return None
        try:
            record = session.record(np.asarray(layer.data))
            if record is None:
                self.status_label.setText("The result layer is unchanged: nothing to save.")
                return None
            record.id = session.record_id  # saving again updates this session's record
            record_id = correction_store().add(record)
        except Exception as err:  # noqa: BLE001 - shown, never crashes napari
            self._report_error(f"could not save the correction: {error_text(err)}")
            return None
        session.record_id = record_id
        session.edited, session.saved = False, True
        self.corrections_panel.refresh()
        self.status_label.setText(
            f"Saved correction {record_id} ({record.changed_pixels} px changed)."
        )
        notify_changed()
        return record_id

    def _autosave_correction(self) -> None:
        """Save unsaved edits of the result layer (before a new run replaces it, before it is
        deleted, when the dock closes, when napari quits)."""
        session = self.correction
        if session is not None and session.edited and not session.saved:
            try:
                self.save_correction()
            except RuntimeError:  # the dock's Qt objects are already gone at quit
                pass

    def _on_layer_removing(self, event=None) -> None:
        session = self.correction
        if session is None or event is None:
            return
        try:
            layer = self.viewer.layers[event.index]
        except (IndexError, AttributeError, TypeError):
            return
        if layer_uid(layer) == session.layer_uid:
            self._autosave_correction()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self._autosave_correction()
        super().closeEvent(event)
