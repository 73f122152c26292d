"""Dock widget "Segment nuclei (SAMPO)": click a few nuclei, segment all (T1) or the same type (T2).

Workflow: pick the image; add points on the prompts layer (created on demand; green = positive,
red = negative, ``T`` toggles the polarity of the next point); pick the task, the model (a base
SAM or a trained adapter) and the device; press Segment. See docs/plugin.md.

This module is the dock's form: its controls, the prompts layer and the polarity of the next
point. The rest of the dock lives beside it, one part per module (mixins of
:class:`SegmentWidget`): the "Model" choice and the adapter offer
(:mod:`napari_sampo._segment_models`), running a segmentation and live updates
(:mod:`napari_sampo._segment_run`), the result layers, the T2-by-nucleus view and the exports
(:mod:`napari_sampo._segment_results`), and the correction session of the result
(:mod:`napari_sampo._segment_corrections`).
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
    QDoubleSpinBox,
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
    follow_layers,
    gui_text,
    layer_uid,
    status_label,
)
from napari_sampo._segment_classes import SegmentClasses
from napari_sampo._segment_corrections import SegmentCorrections
from napari_sampo._segment_fields import CONTROLS, T2_MODES, TASKS
from napari_sampo._segment_models import SegmentModels
from napari_sampo._segment_results import SegmentResults
from napari_sampo._segment_run import SegmentRun

if TYPE_CHECKING:
    import napari

#: Every live SegmentWidget, so the fine-tune widget can offer it a freshly trained adapter.
_LIVE: weakref.WeakSet = weakref.WeakSet()

LIVE_DELAY_MS = 400


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


class SegmentWidget(
    SegmentModels, SegmentRun, SegmentResults, SegmentCorrections, SegmentClasses, QWidget
):
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
        self.correction = None  # the CorrectionSession of the result (its edits)
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
        next_row = QHBoxLayout()
        next_row.addWidget(self.polarity_button, 1)
        # task Classes: the class of the next click instead of its polarity
        self.class_controls = self.make_class_controls(self)
        next_row.addWidget(self.class_controls, 1)
        form.addRow("Next point", next_row)

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
        # rarely changed settings, collapsed: both docks fit a 1080 px screen
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
            "segmented, then classified from the clicked ones by size, shape, stain, the "
            "model's features and the packaged type head, which knows four general types "
            "(inflammatory, epithelial, stromal, other) from 48,000 expert-classed nuclei — it "
            "measured best (docs/exemplars.md, docs/type_head.md). By the decoder: SAM reads "
            "the type from the clicks. Both: the mean of the two per nucleus"
        )
        options_form.addRow("T2 by", self.t2_mode_combo)
        self.pixel_size_spin = QDoubleSpinBox(options)
        self.pixel_size_spin.setRange(0.0, 2.0)
        self.pixel_size_spin.setDecimals(3)
        self.pixel_size_spin.setSingleStep(0.05)
        self.pixel_size_spin.setSuffix(" µm")
        self.pixel_size_spin.setSpecialValueText("as trained (0.25 µm, 40×)")
        self.pixel_size_spin.setToolTip(
            "the image's pixel size (0.25 µm at 40×, 0.5 µm at 20×; the slide's metadata says "
            "it). The image is resampled so that its nuclei have the size the model was trained "
            "on; a warning says when the nuclei look far off that size (docs/magnification.md)"
        )
        options_form.addRow("Pixel size", self.pixel_size_spin)
        self.split_combo = QComboBox(options)
        self.split_combo.addItem("learned split head (if the model has one)", "auto")
        self.split_combo.addItem("split head over 4 flips (slower; dense tissue)", "head+flips")
        self.split_combo.addItem("watershed of the probability", "watershed")
        self.split_combo.setToolTip(
            "how touching nuclei are cut apart. The shipped model's split head reads the image "
            "at full resolution and draws each nucleus' core: better nuclei on every held-out "
            "set we measured (docs/split_head.md). The watershed cuts the probability at its "
            "peaks (other models always use it)"
        )
        options_form.addRow("Touching nuclei", self.split_combo)
        self.types_combo = QComboBox(options)
        self.types_combo.addItem("type head (knows 4 general types)", "auto")
        self.types_combo.addItem("size, shape and stain only", "off")
        self.types_combo.setToolTip(
            "T2 by nucleus: what tells the clicked type from the others. The packaged type head "
            "was trained on 48,000 expert-classed nuclei and knows inflammatory, epithelial, "
            "stromal and other: with it, 75 % instead of 60 % of the picked nuclei were of the "
            "clicked type on held-out breast tissue (docs/type_head.md). Turn it off for tissue "
            "whose types it gets wrong"
        )
        options_form.addRow("Nucleus types", self.types_combo)
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
        from napari_sampo._corrections import CorrectionsPanel

        self.corrections_panel = CorrectionsPanel(self)
        self.corrections_panel.save_button.clicked.connect(self.save_correction)
        # collapsed by default: both docks fit a 1080 px screen
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
            if self.classes_task():
                self.update_point_colors()
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

    def _on_task_changed(self, *_: Any) -> None:
        self.class_combo.setEnabled(self.task_combo.currentData() == "t2")
        classes = self.classes_task()
        self.class_controls.setVisible(classes)
        self.polarity_button.setVisible(not classes)
        self.update_point_colors()
        if classes and self.result_layer is None:
            self.status_label.setText(
                "Pick or type a class under 'Next point' and click a few of its nuclei; then the "
                "next class (at least two), then Segment."
            )

    def _report_error(self, message: str, notify: bool = True) -> None:
        from napari.utils.notifications import show_error

        message = gui_text(message, CONTROLS)
        self.last_error = message
        self.status_label.setText(message)
        if notify:
            show_error(f"Segment nuclei: {message}")
