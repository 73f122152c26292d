"""Model choice shared by both docks: every model with its state, and a "Download" button.

The lists come from :func:`sampo_engine.models.availability.model_states` (shipped, downloaded,
not downloaded, random weights, needs a base); the default is
:func:`~sampo_engine.models.availability.default_model`, so nothing that cannot run here is
preselected. :class:`ModelCombo` re-reads the states each time its list opens, so a checkpoint
copied into the cache by hand shows up without restarting napari. :class:`DownloadButton`
downloads the official checkpoint of the chosen model in a napari worker, with its progress on
the button, and can be cancelled.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QComboBox, QPushButton, QWidget

from napari_sampo._qt_common import error_text


class ModelCombo(QComboBox):
    """A combo box that calls ``on_open`` just before its list is shown (to refresh it)."""

    def __init__(self, on_open: Callable[[], None] | None = None, parent=None) -> None:
        super().__init__(parent)
        self.on_open = on_open
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(18)

    def showPopup(self) -> None:  # noqa: N802 - Qt's name
        if self.on_open is not None:
            self.on_open()
        super().showPopup()


def add_base_models(combo: QComboBox, data: Callable[[str], Any]) -> None:
    """Append one item per registry model, labelled with its state (tooltip: the details)."""
    from sampo_engine.models.availability import model_states

    for state in model_states():
        combo.addItem(state.label, data(state.name))
        combo.setItemData(combo.count() - 1, state.detail, Qt.ItemDataRole.ToolTipRole)


def adapter_label(info) -> str:
    """``adapter: name (tiny, T1 Dice 0.85)`` for a :class:`BundleInfo`."""
    from napari_sampo._adapters import score_text

    parts = [info.model_type]
    if not info.complete:
        parts.append("stopped early")
    score = score_text(info.metrics, short=True)
    if score:
        parts.append(score)
    return f"adapter: {info.name} ({', '.join(parts)})"


def unusable_message(name: str, control: str) -> str | None:
    """Why base model ``name`` cannot run here, naming the dock's ``control``; None if it can."""
    from sampo_engine.models.availability import NOT_DOWNLOADED, model_state

    try:
        state = model_state(name)
    except KeyError:
        return f"unknown model {name!r}; choose one in '{control}'"
    if state.usable:
        return None
    if state.state == NOT_DOWNLOADED:
        return (
            f"{name} is not downloaded: press 'Download' next to '{control}' "
            f"({state.label.rsplit('(', 1)[-1].rstrip(')')}), or choose a model that is "
            f"downloaded, shipped or has random weights in '{control}'"
        )
    return f"{state.detail}; choose another model in '{control}'"


def base_needed_by(info) -> str | None:
    """The base model an adapter bundle still needs, when it is not here (None: it can run)."""
    if info.kind == "full":
        return None
    if info.base_checkpoint and Path(info.base_checkpoint).is_file():
        return None
    from sampo_engine.models.availability import model_state

    try:
        return None if model_state(info.model_type).usable else info.model_type
    except KeyError:
        return info.model_type


def download_failure_text(name: str, err: BaseException) -> str:
    """A download error in the dock's words: what failed, and how to continue offline."""
    from sampo_engine.errors import Cancelled
    from sampo_engine.models.checkpoints import BASE_URL_ENV, CHECKPOINTS, checkpoint_dir

    if isinstance(err, Cancelled):
        return f"Download of {name} cancelled; nothing was kept."
    reason = error_text(err).split(". To continue", 1)[0].split(". Try again", 1)[0]
    info = CHECKPOINTS.get(name)
    if info is None:
        return f"Could not download {name}: {reason}"
    return (
        f"Could not download {name}: {reason}. Offline? Copy {info.filename} "
        f"({info.size / 1e6:.0f} MB) from a machine with internet access into {checkpoint_dir()} "
        f"(or set {BASE_URL_ENV} to a reachable mirror); it then shows as downloaded in the "
        f"model list."
    )


class DownloadButton(QPushButton):
    """The "Download" button for the official checkpoint of the model ``current()`` names.

    Enabled only when that model can be downloaded (see :meth:`update_state`). A click starts
    :func:`napari_sampo._workers.download_job` in a worker; the button then shows the progress
    and a second click cancels. ``finished(model, ok, message)`` is emitted at the end (message:
    what to show the user).
    """

    finished = Signal(str, bool, str)

    def __init__(self, current: Callable[[], str | None], parent: QWidget | None = None) -> None:
        super().__init__("Download", parent)
        self.current = current
        self.worker = None
        self.model: str | None = None
        self.last_message = ""
        self._stop = threading.Event()
        stop = self._stop
        self.destroyed.connect(lambda *_: stop.set())
        self.clicked.connect(self._on_clicked)
        self.update_state()

    @property
    def running(self) -> bool:
        return self.worker is not None

    def update_state(self, *_: Any) -> None:
        """Enable for a model that can be downloaded; the tooltip says why not otherwise."""
        if self.running:
            return
        from sampo_engine.models.availability import model_state

        name = self.current()
        try:
            state = model_state(name) if name else None
        except KeyError:
            state = None
        self.setText("Download")
        if state is not None and state.downloadable:
            self.setEnabled(True)
            self.setToolTip(
                f"download the official {name} checkpoint ({state.label.rsplit('(', 1)[-1]}"
                f" once into the cache; needs internet access"
            )
        else:
            self.setEnabled(False)
            self.setToolTip(
                "the chosen model needs no download"
                if state is None or state.usable
                else state.detail
            )

    def _on_clicked(self) -> None:
        if self.running:
            self.cancel()
        else:
            self.start()

    def start(self) -> bool:
        """Download the current model's checkpoint in a worker; False if there is nothing to do."""
        from napari.qt.threading import create_worker

        from napari_sampo._workers import download_job, guarded

        name = self.current()
        if self.running or not name or not self.isEnabled():
            return False
        self.model = name
        self._stop.clear()
        worker = create_worker(guarded, download_job(name, self._stop))
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.setText(f"Downloading {name}… (click to cancel)")
        self.setToolTip("click to cancel the download; nothing partial is kept")
        worker.start()
        return True

    def cancel(self) -> None:
        """Stop the running download; the partial file is removed."""
        if self.running:
            self._stop.set()
            self.setText("Cancelling…")

    def _on_progress(self, item) -> None:
        if item.total > 0:
            percent = min(100, math.floor(100 * item.done / item.total))
            self.setText(f"{percent} % of {item.total / 1000:.0f} MB (click to cancel)")

    def _on_returned(self, result) -> None:
        from napari_sampo._workers import Failure

        name = self.model or "?"
        if isinstance(result, Failure):
            self._finish(name, False, download_failure_text(name, result.error))
        else:
            self._finish(name, True, f"{name} downloaded to {result}; it is ready to use.")

    def _on_errored(self, err: BaseException) -> None:
        self._finish(self.model or "?", False, download_failure_text(self.model or "?", err))

    def _finish(self, name: str, ok: bool, message: str) -> None:
        from napari.utils.notifications import show_error, show_info

        self.last_message = message
        (show_info if ok else show_error)(message)
        self.finished.emit(name, ok, message)

    def _on_finished(self) -> None:
        self.worker = None
        self.update_state()
