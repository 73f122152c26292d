"""Running a Segment: the worker, its progress and its answer; live updates.

:meth:`SegmentRun.segment` checks the prompts and the model, then runs
:func:`napari_sampo._workers.segment_job` in a napari ``thread_worker``: the viewer stays
responsive, a progress bar follows the tiles and Cancel stops between batches. The dock keeps
the :class:`~sampo_engine.predict.predictor.TilePredictor`, so the first run on an image computes
its tile embeddings and later runs (new clicks) reuse them. With "Update on every point change" a
run starts shortly after the clicks stop changing.
"""

from __future__ import annotations

from typing import Any

from napari_sampo._qt_common import error_text, layer_uid


class SegmentRun:
    """The running part of :class:`~napari_sampo._widget_segment.SegmentWidget` (a mixin).

    Uses the dock's ``worker``, ``_stop``, ``_rerun``, ``_pbar``, ``_predictor*`` fields,
    ``_pending_prompts``, its pickers and buttons, ``progress_bar``, ``status_label``,
    ``_live_timer``, ``prompts_layer()``, ``predict_config()``, ``_model_choice()``,
    ``show_prediction()`` and ``_report_error()``.
    """

    @property
    def running(self) -> bool:
        return self.worker is not None

    def segment(self, *_: Any, quiet: bool = False) -> bool:
        """Start a run with the current prompts; False (with the reason shown) if not started.

        ``quiet``: for live updates — problems go to the status line, not to notifications.
        """
        from napari_sampo._image import layer_image_shape
        from napari_sampo._points import prompts_from_layer
        from napari_sampo._workers import SegmentRequest

        if self.running:
            if quiet:
                self._rerun = True
                return False
            self._report_error("a segmentation is already running; wait or Cancel it")
            return False
        image_layer = self.image_combo.current_layer()
        if image_layer is None:
            self._report_error("open an image first (File > Open, or a sample)", not quiet)
            return False
        points_layer = self.prompts_layer(create=not quiet)
        task = self.task_combo.currentData()
        class_names: list[str] = []
        try:
            shape = layer_image_shape(image_layer)
            if task == "classes":  # each click names its nucleus' class
                rc, labels, class_names = self.class_prompts(points_layer, image_layer, shape)
            else:
                rc, labels = prompts_from_layer(points_layer, image_layer, shape)
                if not (labels == 1).any():
                    self._report_error(
                        "click at least one nucleus with a positive (green) point first", not quiet
                    )
                    return False
            config = self.predict_config()
            config.validate()
        except Exception as err:  # noqa: BLE001 - every refusal is shown, none crashes napari
            self._report_error(error_text(err), not quiet)
            return False
        key = (*self._model_choice(), config.device, config.um_per_px, config.split_by,
               config.type_head)  # fmt: skip
        image_key = (layer_uid(image_layer), id(image_layer.data), shape)
        same_model = self._predictor is not None and self._predictor_key == key
        request = SegmentRequest(
            image_layer=image_layer,
            image_key=image_key,
            points_rc=rc,
            labels=labels,
            task=task,
            predictor_key=key,
            make_config=lambda: config,
            class_name=self.class_combo.currentText().strip() if task == "t2" else "",
            predictor=self._predictor if same_model else None,
            predictor_image_key=self._predictor_image_key if same_model else None,
            t2_mode=self.t2_mode_combo.currentData(),
            class_names=tuple(class_names),
        )
        if not same_model:
            self._predictor = None  # free the old model before loading another
        # what the next result came from, for its correction session
        self._pending_prompts = (rc, labels, task, request.class_name, image_layer)
        self._launch(request)
        return True

    def _launch(self, request) -> None:
        from napari.qt.threading import create_worker
        from napari.utils import progress

        from napari_sampo._workers import guarded, preload_engine, segment_job

        preload_engine()
        self._stop.clear()
        self._rerun = False
        self.last_error = None
        self._pbar = progress(total=0, desc="SAMPO: starting")
        worker = create_worker(guarded, segment_job(request, self._stop))
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.segment_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress_bar.setRange(0, 0)
        self.status_label.setText("Starting…")
        worker.start()

    def cancel(self) -> None:
        """Stop the running segmentation between two batches; no layer is changed."""
        if self.running:
            self._stop.set()
            self._rerun = False
            self.cancel_button.setEnabled(False)
            self.status_label.setText("Cancelling…")

    def _on_progress(self, item) -> None:
        if item.total > 0:
            self.progress_bar.setRange(0, item.total)
            self.progress_bar.setValue(item.done)
        else:
            self.progress_bar.setRange(0, 0)
        text = f"{item.stage}" + (f" {item.done}/{item.total}" if item.total else "") + "…"
        self.status_label.setText(text[:1].upper() + text[1:])
        pbar = self._pbar  # napari's progress may process events: _on_finished can run inside
        if pbar is not None:
            if item.total:
                pbar.total = item.total
                pbar.n = item.done
            pbar.set_description(f"SAMPO: {item.stage}")

    def _on_returned(self, result) -> None:
        from napari_sampo._workers import Failure

        if isinstance(result, Failure):
            if result.cancelled:
                self.status_label.setText("Cancelled; no layer was changed.")
            else:
                self._report_error(error_text(result.error))
            return
        self._predictor = result.predictor
        self._predictor_key = result.predictor_key
        self._predictor_image_key = result.image_key
        self.show_prediction(result.prediction, reused=not result.embedded)

    def _on_errored(self, err: BaseException) -> None:
        # napari shows the exception with its traceback (a bug, not a user error); keep the
        # widget usable and say what happened.
        self.last_error = error_text(err)
        self.status_label.setText(f"Segmentation failed: {self.last_error}")

    def _on_finished(self) -> None:
        self.worker = None
        self.segment_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self.progress_bar.maximum() == 0:
            self.progress_bar.setRange(0, 1)
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        if self._rerun:
            self._rerun = False
            self._live_timer.start()

    # ------------------------------------------------------------------ live updates
    def _on_live_toggled(self, checked: bool) -> None:
        if checked:
            self._live_timer.start()
        else:
            self._live_timer.stop()

    def _on_points_changed(self, event=None) -> None:
        action = getattr(event, "action", None)
        if action is not None and str(action).lower().endswith(("adding", "removing", "changing")):
            return  # the "before" half of napari's paired data events
        try:
            if self.live_check.isChecked():
                self._live_timer.start()  # restarts: runs once the clicks settle
        except RuntimeError:  # the dock was closed; napari still held this callback
            pass

    def _live_run(self) -> None:
        if self.live_check.isChecked():
            self.segment(quiet=True)
