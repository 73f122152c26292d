"""The Segment dock's "Model" choice: base models, adapters, downloads, the adapter offer.

The list holds every base model with its state (shipped, downloaded, random weights, or not
downloaded yet; :mod:`napari_sampo._models`), the adapters of the adapter folder
(:mod:`napari_sampo._adapters`), adapters picked from other folders and "Adapter from folder…".
Item data is ``"kind:value"``: ``base:<name>``, ``adapter:<path>``, ``picked:<path>``,
``browse:``. A finished fine-tuning run is *offered* ("Use it" / "Keep current", with its
held-out score beside the current model's), never switched to silently. :meth:`predict_config`
turns the choice into the engine's :class:`~sampo_engine.predict.config.PredictConfig`, refusing
a model that cannot run here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QFileDialog

from napari_sampo._qt_common import error_text, set_combo_data


def _split(data) -> tuple[str, str]:
    """Model combo item data ``"kind:value"`` -> (kind, value)."""
    kind, _, value = str(data or "").partition(":")
    return kind, value


class SegmentModels:
    """The model part of :class:`~napari_sampo._widget_segment.SegmentWidget` (a mixin).

    Uses the dock's ``model_combo``, ``download_button``, ``class_combo``, ``device_combo``, the
    offer box (``offer_box``, ``offer_label``, ``offered_adapter``), ``_predictor``,
    ``status_label``, ``last_error`` and ``_report_error()``.
    """

    def refresh_models(self) -> None:
        """List every base model with its state and the adapters in the adapter folder.

        Keeps the current choice; the first time (nothing chosen yet) selects
        :func:`~sampo_engine.models.availability.default_model`, a model that runs here.
        """
        from napari_sampo._adapters import list_adapters
        from napari_sampo._models import add_base_models
        from sampo_engine.models.availability import default_model

        current = self.model_combo.currentData()
        if current is None:
            current = f"base:{default_model()}"
        extra = [
            _split(self.model_combo.itemData(i))
            for i in range(self.model_combo.count())
            if _split(self.model_combo.itemData(i))[0] == "picked"
        ]
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        add_base_models(self.model_combo, lambda name: f"base:{name}")
        for info in list_adapters():
            self._add_adapter_item(info, "adapter")
        for data in extra:
            path = Path(data[1])
            if self.model_combo.findData(f"adapter:{path}") < 0:
                self._add_adapter_path(path, "picked")
        self.model_combo.addItem("Adapter from folder…", "browse:")
        index = self.model_combo.findData(current) if current is not None else -1
        self.model_combo.setCurrentIndex(max(index, 0))
        self.model_combo.blockSignals(False)
        self._refresh_classes()
        self.download_button.update_state()

    def _add_adapter_item(self, info, kind: str) -> None:
        from napari_sampo._models import adapter_label

        self.model_combo.addItem(adapter_label(info), f"{kind}:{info.path}")
        self.model_combo.setItemData(
            self.model_combo.count() - 1, f"{info.path}", role=3
        )  # Qt.ToolTipRole

    def _add_adapter_path(self, path: Path, kind: str) -> int:
        from sampo_engine.models.bundle import read_bundle

        info = read_bundle(path)
        browse = self.model_combo.findData("browse:")
        self._add_adapter_item(info, kind)
        index = self.model_combo.count() - 1
        if browse >= 0:  # keep "Adapter from folder…" last
            text = self.model_combo.itemText(browse)
            self.model_combo.removeItem(browse)
            self.model_combo.addItem(text, "browse:")
            index -= 1
        return index

    def select_adapter(self, path) -> bool:
        """Select the adapter bundle at ``path`` (adding it to the list); False if unreadable."""
        path = Path(path)
        for kind in ("adapter", "picked"):
            index = self.model_combo.findData(f"{kind}:{path}")
            if index >= 0:
                self.model_combo.setCurrentIndex(index)
                return True
        try:
            index = self._add_adapter_path(path, "picked")
        except Exception as err:  # noqa: BLE001 - shown to the user
            self._report_error(error_text(err))
            return False
        self.model_combo.setCurrentIndex(index)
        return True

    def select_model(self, name: str) -> None:
        """Select a base model ('vit_b', 'vit_l', 'vit_h', 'tiny', ...)."""
        if not set_combo_data(self.model_combo, f"base:{name}"):
            raise ValueError(f"unknown base model {name!r}")

    def _base_to_download(self) -> str | None:
        """The base model the Download button would fetch: the chosen one, or an adapter's."""
        kind, value = _split(self.model_combo.currentData())
        if kind == "base":
            return value
        if kind in ("adapter", "picked"):
            try:
                from sampo_engine.models.bundle import read_bundle

                return read_bundle(value).model_type
            except Exception:  # noqa: BLE001 - the button just stays disabled
                return None
        return None

    def _on_download_finished(self, name: str, ok: bool, message: str) -> None:
        self.refresh_models()
        if ok and _split(self.model_combo.currentData()) == ("base", name):
            self._predictor = None  # the new weights replace the random or missing ones
        self.status_label.setText(message)
        if not ok:
            self.last_error = message

    # ------------------------------------------------------------------ adapter offer
    def offer_adapter(self, path, summary: str = "") -> bool:
        """Offer a newly trained adapter without selecting it: list it, and show "Use it" /
        "Keep current" with its held-out score (``summary``) beside the current model's."""
        from napari_sampo._adapters import score_text

        path = Path(path)
        self.refresh_models()
        if self.model_combo.findData(f"adapter:{path}") < 0:
            try:
                self._add_adapter_path(path, "picked")
            except Exception as err:  # noqa: BLE001 - shown to the user
                self._report_error(error_text(err))
                return False
        kind, value = self._model_choice()
        current = self.model_combo.currentText()
        if kind == "adapter":
            try:
                from sampo_engine.models.bundle import read_bundle

                score = score_text(read_bundle(value).metrics) or "no held-out score"
                current += f" — {score}"
            except Exception:  # noqa: BLE001 - the comparison is a convenience
                pass
        self.offered_adapter = path
        self.offer_label.setText(
            f"New adapter: {summary or path.name}.\nIn use now: {current}.\nUse the new one?"
        )
        self.offer_box.setVisible(True)
        return True

    def accept_offer(self) -> bool:
        """Select the offered adapter ("Use it")."""
        path, self.offered_adapter = self.offered_adapter, None
        self.offer_box.setVisible(False)
        if path is None:
            return False
        ok = self.select_adapter(path)
        if ok:
            self.status_label.setText(f"Now using {self.model_combo.currentText()}.")
        return ok

    def dismiss_offer(self) -> None:
        """Keep the current model ("Keep current"); the new adapter stays in the list."""
        self.offered_adapter = None
        self.offer_box.setVisible(False)

    def _on_model_activated(self, index: int) -> None:
        if _split(self.model_combo.itemData(index))[0] == "browse":
            from napari_sampo._adapters import adapter_dir

            folder = QFileDialog.getExistingDirectory(
                self, "Choose an adapter folder (holding sampo_bundle.json)", str(adapter_dir())
            )
            if folder:
                self.select_adapter(folder)
            else:
                from sampo_engine.models.availability import default_model

                self.select_model(default_model())

    def _refresh_classes(self, *_: Any) -> None:
        data = _split(self.model_combo.currentData())
        names: list[str] = []
        if data[0] in ("adapter", "picked"):
            try:
                from sampo_engine.models.bundle import read_bundle

                names = list(read_bundle(data[1]).class_names.values())
            except Exception:  # noqa: BLE001 - the class list is a convenience
                names = []
        text = self.class_combo.currentText()
        self.class_combo.clear()
        self.class_combo.addItem("")
        self.class_combo.addItems(names)
        self.class_combo.setCurrentText(text)

    def _model_choice(self) -> tuple[str, str]:
        data = _split(self.model_combo.currentData())
        if data[0] not in ("base", "adapter", "picked"):
            from sampo_engine.models.availability import default_model

            return ("base", default_model())
        return ("base", data[1]) if data[0] == "base" else ("adapter", data[1])

    def predict_config(self):
        """The :class:`PredictConfig` for the chosen model, device, pixel size and split.

        Refuses (ConfigError naming this dock's controls) a model that cannot run here: an
        official checkpoint not downloaded yet, or an adapter whose base is missing.
        """
        from napari_sampo._models import base_needed_by, unusable_message
        from sampo_engine.errors import ConfigError
        from sampo_engine.models.availability import SHIPPED, model_state
        from sampo_engine.predict.config import PredictConfig

        kind, value = self._model_choice()
        device = self.device_combo.currentData()
        um_per_px = float(self.pixel_size_spin.value())
        split = self.split_combo.currentData()
        types = self.types_combo.currentData()
        if kind == "base":
            problem = unusable_message(value, "Model")
            if problem:
                raise ConfigError(problem)
            state = model_state(value)
            checkpoint = str(state.path) if state.state == SHIPPED else ""
            return PredictConfig(
                model=value, checkpoint=checkpoint, device=device, um_per_px=um_per_px,
                split_by=split, type_head=types,
            )  # fmt: skip
        from sampo_engine.models.bundle import read_bundle

        info = read_bundle(value)
        missing = base_needed_by(info)
        if missing:
            raise ConfigError(
                f"adapter '{info.name}' needs the {missing} checkpoint, which is not here: "
                f"press 'Download' next to 'Model' (it fetches {missing}), or choose another "
                f"model in 'Model'"
            )
        return PredictConfig(
            model=info.model_type, adapter=value, device=device, um_per_px=um_per_px,
            split_by=split, type_head=types,
        )  # fmt: skip
