"""The plugin side of "learn from my corrections": where records live, the panel.

Records are kept in ``$SAMPO_CORRECTIONS_DIR`` when set, else in ``corrections/`` inside the
adapter folder (:func:`napari_sampo._adapters.adapter_dir`) — beside the adapters, so nothing is
lost when napari closes. The format is :mod:`sampo_engine.corrections.store` (docs/corrections.md).

:class:`CorrectionSession` is one Segment result the user may edit: the model's original labels,
the prompts and the image they came from. :class:`CorrectionsPanel` (inside the Segment dock)
shows the record count, lists the records and offers "Save correction", "Delete" and
"Open folder".
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
)

from sampo_engine.corrections.store import CORRECTIONS_DIR_ENV, CorrectionStore, make_record

#: Callbacks run after a record was saved or deleted (the fine-tune docks refresh their count).
_LISTENERS: weakref.WeakSet = weakref.WeakSet()


def corrections_dir() -> Path:
    explicit = os.environ.get(CORRECTIONS_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    from napari_sampo._adapters import adapter_dir

    return adapter_dir() / "corrections"


def correction_store() -> CorrectionStore:
    return CorrectionStore(corrections_dir())


def count_records() -> int:
    """Records in the corrections folder (0 when it is missing or unreadable)."""
    try:
        return len(correction_store())
    except Exception:  # noqa: BLE001 - a count for a label only
        return 0


def add_listener(obj) -> None:
    """``obj.refresh_corrections()`` is called after every save or delete."""
    _LISTENERS.add(obj)


def notify_changed() -> None:
    for obj in list(_LISTENERS):
        try:
            obj.refresh_corrections()
        except RuntimeError:  # a closed dock
            continue


@dataclass
class CorrectionSession:
    """One Segment result as the model produced it, before the user's edits."""

    layer_uid: str
    original: np.ndarray  # (H, W) int32 instance labels
    points_rc: np.ndarray  # (N, 2) napari (row, col) image pixels
    labels: np.ndarray  # (N,)
    task: str
    class_name: str
    image_layer: Any  # weakref.ref to the image layer
    min_size: int
    model: dict = field(default_factory=dict)
    edited: bool = False
    saved: bool = False
    record_id: str = ""  # the session's record once saved (a later save replaces it)

    def record(self, corrected: np.ndarray):
        """The record of the current edits, or None when the labels are unchanged."""
        from napari_sampo._image import layer_to_rgb

        layer = self.image_layer()
        if layer is None:
            return None
        image = layer_to_rgb(layer)
        if image.shape[:2] != self.original.shape or corrected.shape != self.original.shape:
            return None
        return make_record(
            image,
            self.original,
            corrected,
            self.points_rc,
            self.labels,
            self.task,
            self.min_size,
            class_name=self.class_name or "",
            model=self.model,
            image_name=layer.name,
        )


class CorrectionsPanel(QGroupBox):
    """Count + list of the stored corrections, with Save correction / Delete / Open folder."""

    def __init__(self, parent=None) -> None:
        super().__init__("Corrections (learn from my edits)", parent)
        layout = QVBoxLayout(self)
        self.state_label = QLabel("", self)
        self.state_label.setWordWrap(True)
        layout.addWidget(self.state_label)
        self.list = QListWidget(self)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.list.setMaximumHeight(90)
        layout.addWidget(self.list)
        row = QHBoxLayout()
        self.save_button = QPushButton("Save correction", self)
        self.save_button.setToolTip(
            "store the edited result layer (with the model's original output and your prompts) "
            "as a preference pair for 'Fine-tune on this layer' → include my corrections"
        )
        self.delete_button = QPushButton("Delete", self)
        self.delete_button.setToolTip("delete the selected correction records")
        self.open_button = QPushButton("Open folder", self)
        self.open_button.setToolTip(str(corrections_dir()))
        for button in (self.save_button, self.delete_button, self.open_button):
            row.addWidget(button)
        layout.addLayout(row)
        self.delete_button.clicked.connect(self.delete_selected)
        self.open_button.clicked.connect(self.open_folder)
        self.refresh()

    def records(self) -> list[dict]:
        try:
            return correction_store().list()
        except Exception as err:  # noqa: BLE001 - shown, never crashes napari
            self.state_label.setText(f"Cannot read {corrections_dir()}: {err}")
            return []

    def refresh(self, edited: bool | None = None) -> None:
        entries = self.records()
        self.list.clear()
        for e in entries:
            what = "T1" if e.get("task") == "t1" else f"T2 {e.get('class_name') or ''}".strip()
            item = QListWidgetItem(
                f"{e['id']}  {what}  {e.get('image_name', '')}  {e.get('changed_pixels', 0)} px"
            )
            item.setData(256, e["id"])  # Qt.UserRole
            self.list.addItem(item)
        n = len(entries)
        text = f"{n} correction record{'s' if n != 1 else ''}"
        if edited:
            text += " — the result layer has unsaved edits"
        self.state_label.setText(text)
        self.delete_button.setEnabled(n > 0)

    def delete_selected(self) -> int:
        ids = [item.data(256) for item in self.list.selectedItems()]
        store = correction_store()
        for record_id in ids:
            try:
                store.delete(record_id)
            except Exception:  # noqa: BLE001 - already gone
                continue
        self.refresh()
        notify_changed()
        return len(ids)

    def open_folder(self) -> None:
        from qtpy.QtCore import QUrl
        from qtpy.QtGui import QDesktopServices

        folder = corrections_dir()
        folder.mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))
