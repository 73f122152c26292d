"""The fine-tune dock's "Start from" choice: a base model or an adapter trained before.

Base models are listed with their state (shipped, downloaded, random weights, or not downloaded
yet, with a Download button); adapters of the adapter folder follow, then adapters picked from
other folders and "Adapter from folder…". Item data: a base model's name, ``adapter:<path>`` or
``browse:``. The form adapts to the choice: a model without pretrained weights trains every
weight (:func:`~sampo_engine.models.registry.must_train_in_full`); an adapter fixes the input
size and the LoRA rank to its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QFileDialog

from napari_sampo._finetune_fields import LABELS
from napari_sampo._qt_common import error_text, set_widget_value, widget_value


def split_start(data) -> tuple[str, str]:
    """'Start from' item data: ``"adapter:<path>"`` / ``"browse:"`` / a base model's name."""
    kind, sep, value = str(data or "").partition(":")
    return (kind, value) if sep and kind in ("adapter", "browse") else ("base", str(data or ""))


class FinetuneStart:
    """The "Start from" part of :class:`~napari_sampo._widget_finetune.FinetuneWidget` (a mixin).

    Uses the dock's ``fields`` (``model``, ``lora_rank``, ``image_size``), ``download_button``,
    ``model_note``, ``status_label`` and ``_refuse()``.
    """

    def refresh_start_choices(self) -> None:
        """List every base model with its state, then the adapters (keeps the choice; the first
        time selects :func:`~sampo_engine.models.availability.default_model`)."""
        from napari_sampo._adapters import list_adapters
        from napari_sampo._models import adapter_label, add_base_models
        from sampo_engine.models.availability import default_model

        combo = self.fields["model"]
        current = combo.currentData()
        if current is None:
            current = default_model()
        picked = [
            combo.itemData(i)
            for i in range(combo.count())
            if split_start(combo.itemData(i))[0] == "adapter"
        ]
        combo.blockSignals(True)
        combo.clear()
        add_base_models(combo, lambda name: name)
        listed = set()
        for info in list_adapters():
            combo.addItem(adapter_label(info), f"adapter:{info.path}")
            combo.setItemData(combo.count() - 1, str(info.path), 3)  # Qt.ToolTipRole
            listed.add(f"adapter:{info.path}")
        for data in picked:  # adapters chosen from other folders stay listed
            if data not in listed:
                self._add_adapter_item(Path(split_start(data)[1]))
        combo.addItem("Adapter from folder…", "browse:")
        index = combo.findData(current)
        combo.setCurrentIndex(index if index >= 0 else combo.findData(default_model()))
        combo.blockSignals(False)
        if combo.currentData() != current:
            self._on_model_changed()
        self.download_button.update_state()

    def _add_adapter_item(self, path: Path) -> int:
        from napari_sampo._models import adapter_label
        from sampo_engine.models.bundle import read_bundle

        combo = self.fields["model"]
        try:
            info = read_bundle(path)
        except Exception:  # noqa: BLE001 - an unreadable bundle is just not offered
            return -1
        browse = combo.findData("browse:")
        row = browse if browse >= 0 else combo.count()
        combo.insertItem(row, adapter_label(info), f"adapter:{info.path}")
        combo.setItemData(row, str(info.path), 3)  # Qt.ToolTipRole
        return row

    def select_start(self, path_or_model) -> bool:
        """Start from a base model (its name) or an adapter bundle (its folder); False if the
        bundle cannot be read (the reason is shown)."""
        combo = self.fields["model"]
        text = str(path_or_model)
        index = combo.findData(text)
        if index < 0 and Path(text).is_dir():
            index = combo.findData(f"adapter:{Path(text)}")
            if index < 0:
                try:
                    from sampo_engine.models.bundle import read_bundle

                    read_bundle(text)
                except Exception as err:  # noqa: BLE001 - shown to the user
                    self._refuse(error_text(err))
                    return False
                index = self._add_adapter_item(Path(text))
        if index < 0:
            self._refuse(f"no model or adapter {text!r}; choose one in '{LABELS['model']}'")
            return False
        combo.setCurrentIndex(index)
        return True

    def _on_start_activated(self, index: int) -> None:
        combo = self.fields["model"]
        if split_start(combo.itemData(index))[0] != "browse":
            return
        from napari_sampo._adapters import adapter_dir
        from sampo_engine.models.availability import default_model

        folder = QFileDialog.getExistingDirectory(
            self, "Choose an adapter folder (holding sampo_bundle.json)", str(adapter_dir())
        )
        if not folder or not self.select_start(folder):
            self.select_start(default_model())

    def _start_bundle(self):
        """The BundleInfo of the adapter chosen in 'Start from', or None for a base model."""
        kind, value = split_start(widget_value(self.fields["model"]))
        if kind != "adapter":
            return None
        from sampo_engine.models.bundle import read_bundle

        return read_bundle(value)

    def _base_to_download(self) -> str | None:
        kind, value = split_start(widget_value(self.fields["model"]))
        if kind == "base":
            return value or None
        if kind == "adapter":
            try:
                return self._start_bundle().model_type
            except Exception:  # noqa: BLE001 - the button just stays disabled
                return None
        return None

    def _on_download_finished(self, name: str, ok: bool, message: str) -> None:
        self.refresh_start_choices()
        self.status_label.setText(message)

    def _on_model_changed(self, *_: Any) -> None:
        """Adapt the form to the start point: a model without weights trains every weight; an
        adapter fixes the input size and LoRA rank to its own."""
        from napari_sampo._adapters import score_text
        from sampo_engine.models.registry import must_train_in_full

        kind, value = split_start(widget_value(self.fields["model"]))
        rank, size = self.fields["lora_rank"], self.fields["image_size"]
        size.setEnabled(True)
        note = ""
        if kind == "adapter":
            try:
                info = self._start_bundle()
            except Exception as err:  # noqa: BLE001 - shown in the note; Start refuses it
                info, note = None, f"This adapter cannot be read: {error_text(err)}"
            if info is not None:
                set_widget_value(size, info.image_size)
                size.setEnabled(False)
                if info.kind == "lora":
                    set_widget_value(rank, int(info.rank or 1))
                how = (
                    "every weight trained further"
                    if info.kind == "full"
                    else f"its LoRA weights (rank {info.rank}) trained further"
                )
                score = score_text(info.metrics) or "no held-out score"
                note = (
                    f"Continues '{info.name}' ({info.model_type}, {info.image_size} px; {score}): "
                    f"{how}. The new adapter is saved under 'Adapter name'; '{info.name}' is kept."
                )
            rank.setEnabled(False)
        elif kind == "base" and value:
            full = must_train_in_full(value)
            rank.setEnabled(not full)
            if full:
                note = f"{value} has no pretrained weights: every weight is trained."
        self.model_note.setText(note)
        self.model_note.setVisible(bool(note))
        self.download_button.update_state()
