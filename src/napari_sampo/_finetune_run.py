"""Running a fine-tuning: the worker, the progress bar and the live plot, the finished adapter.

:func:`napari_sampo._workers.training_job` runs :meth:`~sampo_engine.train.trainer.Trainer.steps`
in a napari ``thread_worker``; each step updates the progress bar and the live plot. Stop ends
the run after the current step; the trainer then writes its checkpoint and the bundle as usual.
The finished adapter is *offered* to the "Segment nuclei (SAMPO)" docks of the same viewer with
its held-out score: the user decides whether to use it. A run that fails before writing any
bundle leaves no folder behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from napari_sampo._finetune_fields import CONTROLS, LABELS
from napari_sampo._qt_common import error_text, gui_text


class FinetuneRun:
    """The running part of :class:`~napari_sampo._widget_finetune.FinetuneWidget` (a mixin).

    Uses the dock's ``viewer``, ``worker``, ``_stop``, ``_pbar``, ``adapter_path``,
    ``adapter_name``, ``last_event``, ``summary``, ``num_corrections``, ``plot``, its buttons,
    ``progress_bar``, ``status_label`` and ``refresh_start_choices()``.
    """

    @property
    def running(self) -> bool:
        return self.worker is not None

    def _launch(self, config, data, out: Path, name: str, note: str = "") -> None:
        from napari.qt.threading import create_worker
        from napari.utils import progress

        from napari_sampo._workers import guarded, preload_engine, training_job

        preload_engine(training=True)
        self._stop.clear()
        self.adapter_path, self.adapter_name = out, name
        self.last_event = None
        self.plot.clear()
        self.progress_bar.setRange(0, 0)
        self.status_label.setText(f"Preparing: {data.describe()}…")
        if config.corrections:
            self.status_label.setText(
                f"Preparing: {data.describe()} + {self.num_corrections} correction record(s)…"
            )
        self._pbar = progress(total=0, desc=f"Fine-tuning {name}")
        worker = create_worker(guarded, training_job(config, data.dataset, self._stop))
        worker.yielded.connect(self._on_update)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.summary = (
            data.describe()
            + (f" + {self.num_corrections} correction record(s)" if config.corrections else "")
            + (f"; {note}" if note else "")
        )
        self.status_label.setText(f"Preparing: {self.summary}…")
        worker.start()

    def stop(self) -> None:
        """Stop after the current step; the checkpoint and the bundle are still written."""
        if self.running:
            self._stop.set()
            self.stop_button.setEnabled(False)
            self.status_label.setText("Stopping after the current step…")

    # ------------------------------------------------------------------ worker signals
    def _on_update(self, update) -> None:
        event = update.event
        if event is None:
            total = max(1, update.total_steps)
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(0)
            pbar = self._pbar
            if pbar is not None:
                pbar.total = total
            log = " ".join(update.logs[-1:])
            self.status_label.setText(f"Training: {self.summary}. {log}")
            return
        self.last_event = event
        if event.kind == "step":
            self.plot.add_step(event.step, event.metrics)
            self.progress_bar.setValue(min(event.step, self.progress_bar.maximum()))
            pbar = self._pbar
            if pbar is not None:
                pbar.n = event.step
                pbar.refresh()
            m = event.metrics
            self.status_label.setText(
                f"Step {event.step}/{event.total_steps} (epoch {event.epoch + 1}): "
                f"loss {m.get('loss', float('nan')):.3f}, IoU {m.get('iou_best', float('nan')):.3f}, "
                f"margin {m.get('margin', float('nan')):.3f}"
                + (" — stopping after this step…" if self._stop.is_set() else "")
            )
        elif event.kind == "epoch":
            self.plot.add_validation(event.step, event.metrics)

    def _on_returned(self, result) -> None:
        from napari.utils.notifications import show_error, show_info

        from napari_sampo._workers import Failure

        if isinstance(result, Failure):
            message = gui_text(error_text(result.error), CONTROLS, model=LABELS["model"])
            self.status_label.setText(f"Training failed: {message}")
            show_error(f"Fine-tune: {message}")
            self._discard_incomplete()
            return
        from napari_sampo._adapters import score_text

        event = result
        stopped = bool(event.metrics.get("stopped")) if event is not None else False
        path = Path(event.metrics["bundle"]) if event is not None else self.adapter_path
        self.adapter_path = path
        score = score_text(event.metrics if event is not None else {})
        summary = (
            f"'{self.adapter_name}' ("
            + (score or "no held-out score: nothing was held out")
            + (", stopped early" if stopped else "")
            + ")"
        )
        message = f"Adapter {summary} saved in {path}"
        self.refresh_start_choices()  # it can be continued from here too
        if self._offer_to_segment_widgets(path, summary):
            message += "; offered in the Segment dock ('Use it' there to segment with it)"
        self.status_label.setText(message)
        show_info(message)

    def _on_errored(self, err: BaseException) -> None:
        # napari itself shows the exception with its traceback (a bug, not a user error).
        self.status_label.setText(f"Training failed: {error_text(err)}")
        self._discard_incomplete()

    def _on_finished(self) -> None:
        self.worker = None
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        if self.progress_bar.maximum() == 0:
            self.progress_bar.setRange(0, 1)
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None

    def _discard_incomplete(self) -> None:
        """Remove the output folder of a run that failed before writing any bundle."""
        from sampo_engine.models.bundle import is_bundle

        out = self.adapter_path
        if out is None or not out.is_dir() or is_bundle(out):
            return
        ours = {"sampo_run.json", "metrics.jsonl", "epochs.jsonl", "checkpoint.pt"}
        if all(p.name in ours or p.name.startswith(".") for p in out.iterdir()):
            shutil.rmtree(out, ignore_errors=True)

    def _offer_to_segment_widgets(self, path: Path, summary: str) -> bool:
        """Offer the new adapter to this viewer's Segment docks (never selected silently)."""
        from napari_sampo._widget_segment import live_segment_widgets

        offered = False
        for widget in live_segment_widgets(self.viewer):
            offered = widget.offer_adapter(path, summary) or offered
        return offered
