"""Dock widget "Segment nuclei (SAMPO)": click a few nuclei, segment all (T1) or the same type (T2).

Workflow: pick the image; add points on the prompts layer (created on demand; green = positive,
red = negative, ``T`` toggles the polarity of the next point); pick the task, the model (a base
SAM or a trained adapter) and the device; press Segment.

The run is :func:`napari_sampo._workers.segment_job` in a napari ``thread_worker``: the viewer
stays responsive, a progress bar follows the tiles and Cancel stops between batches. The widget
keeps the :class:`~sampo_engine.predict.predictor.TilePredictor`, so the first run on an image
computes its tile embeddings and later runs (new clicks) reuse them. With "Update on every point
change" a run starts shortly after the clicks stop changing.

The result is a Labels layer named after the task ("SAMPO T1 nuclei", "SAMPO T2 <class>") with a
features table (label, area, centroid, class). A new run replaces only the layer this widget made
for that name, found by its napari ``unique_id``; if the user renamed or deleted it, a new layer
is made, and a user's own layer is never touched. "Export…" writes the instance TIFF, a QuPath
GeoJSON and a per-nucleus CSV of the current result layer (with the user's corrections).
"""

from __future__ import annotations

import threading
import uuid
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_sampo._qt_common import (
    LayerCombo,
    collapsible,
    device_combo,
    error_text,
    find_layer,
    follow_layers,
    gui_text,
    layer_uid,
    set_combo_data,
    status_label,
)

if TYPE_CHECKING:
    import napari

#: Every live SegmentWidget, so the fine-tune widget can offer it a freshly trained adapter.
_LIVE: weakref.WeakSet = weakref.WeakSet()

TASKS = (("t1", "T1 — all nuclei"), ("t2", "T2 — nuclei of the clicked type"))
T2_MODES = (
    ("exemplar", "nucleus (few-shot classifier)"),
    ("decoder", "decoder (SAM reads the type)"),
    ("hybrid", "both (mean per nucleus)"),
)
METADATA_KEY = "napari_sampo"
LIVE_DELAY_MS = 400
#: CLI flags in engine messages -> this dock's controls (see ``_qt_common.gui_text``).
CONTROLS = {"--model": "Model", "--adapter": "Model", "--device": "Device"}


def _unwrap(obj):
    return getattr(obj, "__wrapped__", obj)


def live_segment_widgets(viewer=None) -> list[SegmentWidget]:
    """The SegmentWidgets that still exist (of ``viewer`` only, when given)."""
    found = []
    for widget in list(_LIVE):
        try:
            widget.objectName()  # raises once Qt deleted the C++ object
        except RuntimeError:
            continue
        if viewer is None or _unwrap(widget.viewer) is _unwrap(viewer):
            found.append(widget)
    return found


def _split(data) -> tuple[str, str]:
    """Model combo item data ``"kind:value"`` -> (kind, value)."""
    kind, _, value = str(data or "").partition(":")
    return kind, value


def result_layer_name(task: str, class_name: str | None) -> str:
    if task == "t1":
        return "SAMPO T1 nuclei"
    from sampo_engine.predict.config import DEFAULT_T2_CLASS

    if not class_name or class_name == DEFAULT_T2_CLASS:
        return "SAMPO T2 same type"
    return f"SAMPO T2 {class_name}"


def nuclei_features(labels: np.ndarray, class_name: str | None) -> dict[str, np.ndarray]:
    """The result layer's features: one row per nucleus (``index`` = its label, for napari)."""
    from skimage.measure import regionprops_table

    table = regionprops_table(labels, properties=("label", "area", "centroid"))
    n = len(table["label"])
    return {
        "index": table["label"].astype(np.int64),
        "label": table["label"].astype(np.int64),
        "area": table["area"].astype(np.int64),
        "centroid_y": table["centroid-0"].astype(np.float64),
        "centroid_x": table["centroid-1"].astype(np.float64),
        "class": np.array([class_name or ""] * n, dtype=object),
    }


class SegmentWidget(QWidget):
    """Segment nuclei in an image layer from point prompts with a SAMPO model."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.last_prediction = None
        self.last_error: str | None = None
        self.result_layer = None
        self._token = uuid.uuid4().hex
        self._outputs: dict[str, tuple[str, str]] = {}  # our layer name -> (unique_id, name)
        self._predictor = None
        self._predictor_key: tuple | None = None
        self._predictor_image_key: tuple | None = None
        self._stop = threading.Event()
        self._rerun = False
        self._pbar = None
        self._watched_points = None
        self.correction = None  # corrections (issue #10): the CorrectionSession of the result
        self._pending_prompts = None
        self._watched_results: set[str] = set()
        stop_event = self._stop
        self.destroyed.connect(lambda *_: stop_event.set())
        _LIVE.add(self)

        layout = QVBoxLayout(self)
        form = QFormLayout()
        layout.addLayout(form)
        self.image_combo = LayerCombo(napari_viewer, "image", self)
        form.addRow("Image", self.image_combo)

        prompts_row = QHBoxLayout()
        from napari_sampo._points import is_reference

        # reference dots (the real sample's experts' dots) are never taken as prompts
        self.points_combo = LayerCombo(
            napari_viewer, "points", self, accept=lambda layer: not is_reference(layer)
        )
        self.new_points_button = QPushButton("New", self)
        self.new_points_button.setToolTip("add an empty prompts layer and start clicking")
        prompts_row.addWidget(self.points_combo, 1)
        prompts_row.addWidget(self.new_points_button)
        form.addRow("Prompts", prompts_row)
        self.polarity_button = QPushButton(self)
        self.polarity_button.setToolTip("polarity of the next point (key T on the prompts layer)")
        form.addRow("Next point", self.polarity_button)

        self.task_combo = QComboBox(self)
        for value, text in TASKS:
            self.task_combo.addItem(text, value)
        form.addRow("Task", self.task_combo)
        self.class_combo = QComboBox(self)
        self.class_combo.setEditable(True)
        self.class_combo.setToolTip(
            "T2: the name of the clicked nuclei's class, used for the layer and the exports "
            "(optional; an adapter's classes are listed)"
        )
        form.addRow("T2 class", self.class_combo)

        from napari_sampo._models import DownloadButton, ModelCombo

        model_row = QHBoxLayout()
        self.model_combo = ModelCombo(self.refresh_models, self)
        self.model_combo.setToolTip(
            "a base model (its state says whether it runs here: shipped, downloaded, random "
            "weights, or not downloaded yet) or an adapter trained with 'Fine-tune on this layer'"
        )
        self.download_button = DownloadButton(self._base_to_download, self)
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.download_button)
        form.addRow("Model", model_row)
        # rarely changed settings, collapsed: both docks fit a 1080 px screen (issue #19)
        options = QWidget(self)
        options_form = QFormLayout(options)
        options_form.setContentsMargins(0, 0, 0, 0)
        self.device_combo = device_combo(options)
        options_form.addRow("Device", self.device_combo)
        self.live_check = QCheckBox("Update on every point change", options)
        options_form.addRow(self.live_check)
        self.t2_mode_combo = QComboBox(options)
        for value, text in T2_MODES:
            self.t2_mode_combo.addItem(text, value)
        self.t2_mode_combo.setToolTip(
            "how T2 picks the nuclei of the clicked type. By nucleus (default): every nucleus is "
            "segmented, then classified from the clicked ones by size, shape, stain and the "
            "model's features — it measured best (docs/exemplars.md). By the decoder: SAM reads "
            "the type from the clicks. Both: the mean of the two per nucleus"
        )
        options_form.addRow("T2 by", self.t2_mode_combo)
        self.options_section = collapsible("Options", options, self)

        # a finished fine-tuning run is offered here, never switched to silently
        self.offer_box = QWidget(self)
        offer_layout = QVBoxLayout(self.offer_box)
        offer_layout.setContentsMargins(0, 0, 0, 0)
        self.offer_label = QLabel("", self.offer_box)
        self.offer_label.setWordWrap(True)
        offer_buttons = QHBoxLayout()
        self.use_offer_button = QPushButton("Use it", self.offer_box)
        self.use_offer_button.setToolTip("select the new adapter in 'Model'")
        self.dismiss_offer_button = QPushButton("Keep current", self.offer_box)
        offer_buttons.addWidget(self.use_offer_button)
        offer_buttons.addWidget(self.dismiss_offer_button)
        offer_layout.addWidget(self.offer_label)
        offer_layout.addLayout(offer_buttons)
        self.offer_box.setVisible(False)
        self.offered_adapter: Path | None = None
        layout.addWidget(self.offer_box)

        layout.addWidget(self.options_section)
        buttons = QHBoxLayout()
        self.segment_button = QPushButton("Segment", self)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.segment_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        layout.addWidget(self.progress_bar)
        result_row = QHBoxLayout()
        self.count_label = QLabel("", self)
        self.count_label.setWordWrap(True)
        self.export_button = QPushButton("Export…", self)
        self.export_button.setToolTip("instance TIFF + QuPath GeoJSON + CSV of the result layer")
        self.export_button.setEnabled(False)
        result_row.addWidget(self.count_label, 1)
        result_row.addWidget(self.export_button)
        layout.addLayout(result_row)
        from napari_sampo._nucleus_view import ThresholdRow

        # T2 by nucleus: re-threshold the answer without recomputing (shown after such a run)
        self.threshold_row = ThresholdRow(self)
        self.threshold_row.setVisible(False)
        self.threshold_row.changed.connect(self.apply_threshold)
        layout.addWidget(self.threshold_row)
        self.status_label = status_label(self)
        self.status_label.setText(
            "Click a few nuclei on the prompts layer (T toggles positive/negative), then Segment."
        )
        layout.addWidget(self.status_label)
        from napari_sampo._corrections import CorrectionsPanel  # corrections (issue #10)

        self.corrections_panel = CorrectionsPanel(self)
        self.corrections_panel.save_button.clicked.connect(self.save_correction)
        # collapsed by default: both docks fit a 1080 px screen (issue #19)
        self.corrections_section = collapsible("Corrections", self.corrections_panel, self)
        layout.addWidget(self.corrections_section)
        # nothing is lost: unsaved edits are saved when the result layer is deleted, when this
        # dock closes and when napari quits
        self.viewer.layers.events.removing.connect(self._on_layer_removing)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self._autosave_correction)
        layout.addStretch(1)

        self._live_timer = QTimer(self)
        self._live_timer.setSingleShot(True)
        self._live_timer.setInterval(LIVE_DELAY_MS)
        self._live_timer.timeout.connect(self._live_run)

        self.refresh_models()
        self._update_polarity_button()
        self.new_points_button.clicked.connect(self.new_prompts_layer)
        self.polarity_button.clicked.connect(self.toggle_polarity)
        self.segment_button.clicked.connect(self.segment)
        self.cancel_button.clicked.connect(self.cancel)
        self.export_button.clicked.connect(self._export_dialog)
        self.model_combo.activated.connect(self._on_model_activated)
        self.model_combo.currentIndexChanged.connect(self._refresh_classes)
        self.model_combo.currentIndexChanged.connect(self.download_button.update_state)
        self.download_button.finished.connect(self._on_download_finished)
        self.use_offer_button.clicked.connect(self.accept_offer)
        self.dismiss_offer_button.clicked.connect(self.dismiss_offer)
        self.task_combo.currentIndexChanged.connect(self._on_task_changed)
        self.points_combo.currentIndexChanged.connect(self._watch_points)
        self.live_check.toggled.connect(self._on_live_toggled)
        follow_layers(napari_viewer, self._on_layers_changed, self)
        self._watch_points()
        self._on_task_changed()

    # ------------------------------------------------------------------ layers
    def _on_layers_changed(self) -> None:
        self.image_combo.refresh()
        self.points_combo.refresh()
        self._watch_points()

    def new_prompts_layer(self):
        """Add an empty prompts layer (positive next), select it and switch to adding points."""
        from napari_sampo._points import prompt_layer_kwargs

        image = self.image_combo.current_layer()
        kwargs = prompt_layer_kwargs(self._point_size(image))
        if image is not None:
            kwargs["scale"] = tuple(image.scale[-2:])
            kwargs["translate"] = tuple(image.translate[-2:])
        layer = self.viewer.add_points(**kwargs)
        self.points_combo.select_layer(layer)
        self._watch_points()
        self.viewer.layers.selection.active = layer
        layer.mode = "add"
        return layer

    def prompts_layer(self, create: bool = False):
        layer = self.points_combo.current_layer()
        if layer is None and create:
            layer = self.new_prompts_layer()
        return layer

    @staticmethod
    def _point_size(image) -> float:
        if image is None:
            return 12.0
        try:
            from napari_sampo._image import layer_image_shape

            h, w = layer_image_shape(image)
        except Exception:  # noqa: BLE001 - a size guess only
            return 12.0
        return float(np.clip(max(h, w) / 60, 8, 24))

    def _watch_points(self, *_: Any) -> None:
        """Follow the current prompts layer: polarity feature, T key, live updates."""
        from napari_sampo._points import setup_prompt_layer

        layer = self.points_combo.current_layer()
        old = self._watched_points
        if old is not None and (layer is None or layer_uid(old) != layer_uid(layer)):
            try:
                old.events.data.disconnect(self._on_points_changed)
            except (TypeError, ValueError, RuntimeError):
                pass
            self._watched_points = None
        if layer is not None and self._watched_points is None:
            setup_prompt_layer(layer, on_toggle=self._on_toggled)
            layer.events.data.connect(self._on_points_changed)
            self._watched_points = layer
        self._update_polarity_button()

    # ------------------------------------------------------------------ polarity
    def toggle_polarity(self) -> bool:
        """Flip the polarity of the next point (as the key T does); returns the new one."""
        from napari_sampo._points import toggle_polarity

        layer = self.prompts_layer(create=True)
        positive = toggle_polarity(layer)
        self._on_toggled(positive)
        return positive

    def _on_toggled(self, positive: bool) -> None:
        try:
            self._update_polarity_button()
        except RuntimeError:  # the dock was closed; the layer's T key outlived it
            pass

    def _update_polarity_button(self) -> None:
        from napari_sampo._points import next_is_positive

        layer = self.points_combo.current_layer()
        positive = True if layer is None else next_is_positive(layer)
        self.polarity_button.setText(
            "positive (green) — T toggles" if positive else "negative (red) — T toggles"
        )
        color = "#2e7d32" if positive else "#c62828"
        self.polarity_button.setStyleSheet(f"background-color: {color}; color: white;")

    # ------------------------------------------------------------------ models
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
        from sampo_engine.train.bundle import read_bundle

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
                from sampo_engine.train.bundle import read_bundle

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
                from sampo_engine.train.bundle import read_bundle

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
                from sampo_engine.train.bundle import read_bundle

                names = list(read_bundle(data[1]).class_names.values())
            except Exception:  # noqa: BLE001 - the class list is a convenience
                names = []
        text = self.class_combo.currentText()
        self.class_combo.clear()
        self.class_combo.addItem("")
        self.class_combo.addItems(names)
        self.class_combo.setCurrentText(text)

    def _on_task_changed(self, *_: Any) -> None:
        self.class_combo.setEnabled(self.task_combo.currentData() == "t2")

    def _model_choice(self) -> tuple[str, str]:
        data = _split(self.model_combo.currentData())
        if data[0] not in ("base", "adapter", "picked"):
            from sampo_engine.models.availability import default_model

            return ("base", default_model())
        return ("base", data[1]) if data[0] == "base" else ("adapter", data[1])

    def predict_config(self):
        """The :class:`PredictConfig` for the chosen model and device.

        Refuses (ConfigError naming this dock's controls) a model that cannot run here: an
        official checkpoint not downloaded yet, or an adapter whose base is missing.
        """
        from napari_sampo._models import base_needed_by, unusable_message
        from sampo_engine.errors import ConfigError
        from sampo_engine.models.availability import SHIPPED, model_state
        from sampo_engine.predict.config import PredictConfig

        kind, value = self._model_choice()
        device = self.device_combo.currentData()
        if kind == "base":
            problem = unusable_message(value, "Model")
            if problem:
                raise ConfigError(problem)
            state = model_state(value)
            checkpoint = str(state.path) if state.state == SHIPPED else ""
            return PredictConfig(model=value, checkpoint=checkpoint, device=device)
        from sampo_engine.train.bundle import read_bundle

        info = read_bundle(value)
        missing = base_needed_by(info)
        if missing:
            raise ConfigError(
                f"adapter '{info.name}' needs the {missing} checkpoint, which is not here: "
                f"press 'Download' next to 'Model' (it fetches {missing}), or choose another "
                f"model in 'Model'"
            )
        return PredictConfig(model=info.model_type, adapter=value, device=device)

    # ------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        return self.worker is not None

    def _report_error(self, message: str, notify: bool = True) -> None:
        from napari.utils.notifications import show_error

        message = gui_text(message, CONTROLS)
        self.last_error = message
        self.status_label.setText(message)
        if notify:
            show_error(f"Segment nuclei: {message}")

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
        try:
            shape = layer_image_shape(image_layer)
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
        task = self.task_combo.currentData()
        key = (*self._model_choice(), config.device)
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
        )
        if not same_model:
            self._predictor = None  # free the old model before loading another
        # corrections (issue #10): what the next result came from
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

    # ------------------------------------------------------------------ results
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
        features = nuclei_features(labels, prediction.class_name)
        meta = {
            "widget": self._token,
            "task": prediction.task,
            "class_name": prediction.class_name,
            "model": self._model_choice()[1],
        }
        layer = self._our_layer(name)
        self._autosave_correction()  # corrections (issue #10): before the edits are replaced
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
        points = self.points_combo.current_layer()
        if points is not None:  # keep the clicks on top of the result, and selected
            self._raise_above(points, layer)
            self.viewer.layers.selection.active = points
        self.result_layer = layer
        self.last_prediction = prediction
        self._start_correction_session(layer, labels, prediction)  # corrections (issue #10)
        self.export_button.setEnabled(True)
        label = "nucleus" if prediction.num_nuclei == 1 else "nuclei"
        what = f" ({prediction.class_name})" if prediction.class_name else ""
        self.count_label.setText(f"{prediction.num_nuclei} {label}{what} in '{layer.name}'")
        how = (
            f"{len(nucleus.ids)} nuclei classified from your clicks (T2 by {nucleus.mode})"
            if nucleus is not None and prediction.task == "t2"
            else f"{prediction.tiles_with_prompts} clicked tile(s), "
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
        return layer

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
        layer.features = nuclei_features(labels, prediction.class_name)
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

    # ------------------------------------------------------------------ corrections (issue #10)
    def _start_correction_session(self, layer, labels: np.ndarray, prediction) -> None:
        """Keep the model's output and its prompts; follow the layer's edits."""
        import weakref

        from napari_sampo._corrections import CorrectionSession

        pending, self._pending_prompts = self._pending_prompts, None
        if pending is None:
            self.correction = None
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

    # ------------------------------------------------------------------ export
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
        from sampo_engine.predict.export import write_csv, write_geojson, write_instance_tiff

        layer = self.result_layer
        if layer is None or find_layer(self.viewer, layer_uid(layer)) is None:
            self._report_error("nothing to export: run Segment first (the result layer is gone)")
            return []
        prefix = Path(prefix)
        if prefix.suffix.lower() in (".tif", ".tiff", ".geojson", ".csv", ".json"):
            prefix = prefix.with_suffix("")
        labels = np.asarray(layer.data)
        meta = layer.metadata.get(METADATA_KEY, {})
        class_name = meta.get("class_name")
        ids = np.unique(labels[labels > 0]).tolist()
        label_classes = {int(i): 1 for i in ids} if class_name else None
        class_names = {1: class_name} if class_name else None
        probability = None
        nucleus = getattr(self.last_prediction, "nucleus", None)
        if nucleus is not None and self.last_prediction.task == "t2":
            known = nucleus.label_probability()  # painted (new) labels have none
            probability = {int(i): known[int(i)] for i in ids if int(i) in known}
        image = self.image_combo.current_layer()
        pixels = None
        if image is not None:
            try:
                pixels = layer_to_rgb(image)
                if pixels.shape[:2] != labels.shape:
                    pixels = None
            except Exception:  # noqa: BLE001 - the CSV then has no intensity column values
                pixels = None
        try:
            paths = [
                write_instance_tiff(prefix.with_suffix(".tif"), labels),
                write_geojson(
                    prefix.with_suffix(".geojson"),
                    labels,
                    class_names=class_names,
                    label_classes=label_classes,
                    label_probability=probability,
                ),
                write_csv(
                    prefix.with_suffix(".csv"),
                    labels,
                    image=pixels,
                    class_names=class_names,
                    label_classes=label_classes,
                    label_probability=probability,
                ),
            ]
        except Exception as err:  # noqa: BLE001 - shown to the user
            self._report_error(f"export failed: {error_text(err)}")
            return []
        message = f"Exported {len(ids)} nuclei to {prefix}.tif/.geojson/.csv"
        self.status_label.setText(message)
        show_info(message)
        return paths
