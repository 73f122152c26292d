"""Dock widget "Fine-tune on this layer": train a SAMPO adapter on the image's corrected labels.

The user picks the image, the instance Labels layer (for T2 also a class Labels layer or a class
column of the labels' features table), what to start from — a base model (listed with its state:
shipped, downloaded, random weights, or not downloaded yet, with a Download button) or an adapter
trained before, to continue it — and the training options (the fields of
:class:`~sampo_engine.train.config.TrainConfig`, with the CLI's help texts as tooltips), and
presses Start. See docs/plugin.md.

The bundle is saved in the adapter folder (``$SAMPO_ADAPTER_DIR`` or the user cache, see
:mod:`napari_sampo._adapters`) under the chosen name — a taken name gets a ``-2`` suffix, nothing
is overwritten — and offered to the Segment dock of the same viewer.

This module is the dock's form and its :meth:`FinetuneWidget.build_config` /
:meth:`FinetuneWidget.start`; the rest lives beside it, one part per module (mixins of
:class:`FinetuneWidget`): the fields and their labels (:mod:`napari_sampo._finetune_fields`),
"Start from" (:mod:`napari_sampo._finetune_start`), the T2 class source
(:mod:`napari_sampo._finetune_classes`) and the run (:mod:`napari_sampo._finetune_run`).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_sampo._finetune_classes import FinetuneClasses
from napari_sampo._finetune_fields import (
    CONTROLS,
    GUI_DEFAULTS,
    LABELS,
    MAIN_FIELDS,
    OPTION_FIELDS,
)
from napari_sampo._finetune_run import FinetuneRun
from napari_sampo._finetune_start import FinetuneStart, split_start
from napari_sampo._qt_common import (
    LayerCombo,
    collapsible,
    config_field_widget,
    device_combo,
    error_text,
    follow_layers,
    gui_text,
    set_widget_value,
    status_label,
    widget_value,
)

if TYPE_CHECKING:
    import napari


class FinetuneWidget(FinetuneStart, FinetuneClasses, FinetuneRun, QWidget):
    """Fine-tune a SAMPO adapter on the current image and its corrected Labels layer."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        from napari_sampo._adapters import adapter_dir
        from napari_sampo._models import DownloadButton, ModelCombo
        from napari_sampo._plot import TrainingPlot
        from sampo_engine.train.config import TrainConfig

        self.viewer = napari_viewer
        self.worker = None
        self.adapter_path: Path | None = None
        self.adapter_name: str | None = None
        self.last_event = None
        self.summary = ""
        self._stop = threading.Event()
        self._pbar = None
        self._class_items: set = set()
        stop_event = self._stop
        self.destroyed.connect(lambda *_: stop_event.set())

        layout = QVBoxLayout(self)
        form = QFormLayout()
        layout.addLayout(form)
        self.image_combo = LayerCombo(napari_viewer, "image", self)
        self.labels_combo = LayerCombo(napari_viewer, "labels", self)
        self.class_combo = QComboBox(self)
        self.class_combo.setToolTip(
            "For T2: a Labels layer of per-pixel class ids, or a column of the nuclei layer's "
            "features table (one class per nucleus). 'none': T1 only"
        )
        form.addRow("Image", self.image_combo)
        form.addRow("Nuclei (labels)", self.labels_combo)
        form.addRow("Classes (T2)", self.class_combo)

        self.fields: dict[str, QWidget] = {}
        start_row = QHBoxLayout()
        start = ModelCombo(self.refresh_start_choices, self)
        start.setObjectName("model")
        start.setToolTip(
            "a base model (its state says whether it runs here) or an adapter trained before, "
            "to continue training it"
        )
        self.fields["model"] = start
        self.download_button = DownloadButton(self._base_to_download, self)
        start_row.addWidget(start, 1)
        start_row.addWidget(self.download_button)
        form.addRow(LABELS["model"], start_row)
        task_row = QHBoxLayout()  # task and epochs share a row: the dock stays short
        for name in MAIN_FIELDS:
            self.fields[name] = config_field_widget(TrainConfig, name, self)
        task_row.addWidget(self.fields["task"], 1)
        task_row.addWidget(QLabel(LABELS["epochs"], self))
        task_row.addWidget(self.fields["epochs"])
        form.addRow(LABELS["task"], task_row)
        self.name_edit = QLineEdit(time.strftime("sampo-%Y%m%d-%H%M"), self)
        self.name_edit.setToolTip(
            f"the adapter's name in the Segment widget (a taken name gets a suffix: nothing is "
            f"overwritten). Saved in {adapter_dir()}; set SAMPO_ADAPTER_DIR for another folder"
        )
        form.addRow("Adapter name", self.name_edit)
        # the user's saved corrections as extra preference pairs
        corr_row = QHBoxLayout()
        self.corrections_check = QCheckBox("Include my corrections", self)
        self.corrections_check.setChecked(True)
        self.corrections_check.setToolTip(
            "add the corrections saved in 'Segment nuclei (SAMPO)' as preference pairs "
            "(preferred = your corrected mask, dispreferred = the model's output)"
        )
        self.corrections_label = QLabel("", self)
        corr_row.addWidget(self.corrections_check)
        corr_row.addWidget(self.corrections_label, 1)
        form.addRow("Corrections", corr_row)
        self.model_note = QLabel("", self)
        self.model_note.setWordWrap(True)
        layout.addWidget(self.model_note)

        # every other option, collapsed: both docks fit a 1080 px screen
        options = QWidget(self)
        options_form = QFormLayout(options)
        self.fields["device"] = device_combo(options)
        options_form.addRow(LABELS["device"], self.fields["device"])
        for name in OPTION_FIELDS:
            widget = config_field_widget(TrainConfig, name, options)
            self.fields[name] = widget
            options_form.addRow(LABELS[name], widget)
        for name, value in GUI_DEFAULTS.items():
            set_widget_value(self.fields[name], value)
        self.options_section = collapsible("More options", options, self)
        layout.addWidget(self.options_section)

        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start", self)
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.setEnabled(False)
        self.stop_button.setToolTip("stop after the current step; the adapter is still saved")
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        layout.addLayout(buttons)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        layout.addWidget(self.progress_bar)
        self.status_label = status_label(self)
        self.status_label.setText("Pick the image and its corrected nuclei, then Start.")
        layout.addWidget(self.status_label)
        self.plot = TrainingPlot(getattr(napari_viewer, "theme", None), self)
        layout.addWidget(self.plot, 1)

        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.refresh_start_choices()
        start.currentIndexChanged.connect(self._on_model_changed)
        start.activated.connect(self._on_start_activated)
        self.download_button.finished.connect(self._on_download_finished)
        self.labels_combo.currentIndexChanged.connect(self._refresh_class_choices)
        follow_layers(napari_viewer, self._on_layers_changed, self)
        self._refresh_class_choices()
        self._on_model_changed()
        from napari_sampo._corrections import add_listener

        add_listener(self)
        self.refresh_corrections()

    def refresh_corrections(self) -> int:
        """Count the stored correction records (shown beside the check box); returns how many."""
        from napari_sampo._corrections import corrections_dir, count_records

        n = count_records()
        self.num_corrections = n
        self.corrections_label.setText(f"{n} correction record{'s' if n != 1 else ''}")
        self.corrections_label.setToolTip(str(corrections_dir()))
        self.corrections_check.setEnabled(n > 0)
        return n

    # ------------------------------------------------------------------ form
    def _on_layers_changed(self) -> None:
        self.image_combo.refresh()
        self.labels_combo.refresh()
        self._refresh_class_choices()

    def set_value(self, name: str, value: Any) -> None:
        """Set one form field (tests, scripts). ``model``: a base model's name."""
        set_widget_value(self.fields[name], value)

    # ------------------------------------------------------------------ messages
    def _refuse(self, message: str) -> None:
        from napari.utils.notifications import show_warning

        message = gui_text(message, CONTROLS, model=LABELS["model"])
        self.status_label.setText(f"Not started: {message}")
        show_warning(f"Fine-tune: {message}")

    # ------------------------------------------------------------------ start
    def build_config(self, out: str, name: str, val_fraction: float, data_name: str):
        """The :class:`TrainConfig` for the form's values.

        From a base model: ``full`` when it has no pretrained weights
        (:func:`~sampo_engine.models.registry.must_train_in_full`), its packaged weights as
        ``checkpoint`` when shipped. From an adapter: its model type, input size and rank, and
        ``init_adapter`` = its folder (a --full bundle keeps training every weight).
        """
        from napari_sampo._models import base_needed_by, unusable_message
        from sampo_engine.errors import ConfigError
        from sampo_engine.models.availability import SHIPPED, model_state
        from sampo_engine.models.registry import must_train_in_full
        from sampo_engine.train.config import TrainConfig

        values = {key: widget_value(w) for key, w in self.fields.items()}
        kind, start = split_start(values["model"])
        checkpoint, init_adapter = "", ""
        if kind == "adapter":
            info = self._start_bundle()
            missing = base_needed_by(info)
            if missing:
                raise ConfigError(
                    f"adapter '{info.name}' needs the {missing} checkpoint, which is not here: "
                    f"press 'Download' next to '{LABELS['model']}' (it fetches {missing})"
                )
            model, full, init_adapter = info.model_type, info.kind == "full", str(info.path)
            image_size = info.image_size
            rank = int(info.rank or values["lora_rank"])
        elif kind == "base" and start:
            problem = unusable_message(start, LABELS["model"])
            if problem:
                raise ConfigError(problem)
            model, full = start, must_train_in_full(start)
            state = model_state(start)
            checkpoint = str(state.path) if state.state == SHIPPED else ""
            image_size, rank = int(values["image_size"]), int(values["lora_rank"])
        else:
            raise ConfigError(f"choose a base model or an adapter in '{LABELS['model']}'")
        return TrainConfig(
            data=f"napari layer {data_name}",
            task=values["task"],
            val_fraction=val_fraction,
            out=out,
            model=model,
            checkpoint=checkpoint,
            init_adapter=init_adapter,
            image_size=image_size,
            full=full,
            lora_rank=rank,
            alpha=float(values["alpha"]),
            beta=float(values["beta"]),
            epochs=int(values["epochs"]),
            max_steps=int(values["max_steps"]),
            batch_size=int(values["batch_size"]),
            lr=float(values["lr"]),
            seed=int(values["seed"]),
            device=values["device"],
            eval_crops=int(values["eval_crops"]),
            name=name,
            corrections=self._corrections_folder(),
        )

    def _corrections_folder(self) -> str:
        from napari_sampo._corrections import corrections_dir

        if self.corrections_check.isChecked() and self.refresh_corrections() > 0:
            return str(corrections_dir())
        return ""

    def start(self) -> bool:
        """Check the inputs and start training; returns False (with the reason shown) if refused."""
        from napari_sampo._adapters import adapter_dir, new_adapter_path
        from napari_sampo._image import layer_to_rgb
        from napari_sampo._training_data import training_data
        from sampo_engine.errors import ConfigError

        if self.running:
            self._refuse("a training is already running; Stop it first or wait for it to end")
            return False
        image_layer = self.image_combo.current_layer()
        labels_layer = self.labels_combo.current_layer()
        if image_layer is None or labels_layer is None:
            self._refuse("pick an Image layer and the Labels layer of its nuclei")
            return False
        task = widget_value(self.fields["task"])
        source = self.class_combo.currentText()
        try:
            inst = np.asarray(labels_layer.data)
            image = layer_to_rgb(image_layer)
            if inst.shape != image.shape[:2]:
                raise_shape(image.shape[:2], inst.shape, image_layer.name, labels_layer.name)
            cls, names = self._classes(inst, task) if task in ("t2", "both") else (None, {})
            has_classes = cls is not None and bool(cls[inst > 0].any())
            if task == "t2" and not has_classes:
                empty = f" ({source} gives no class to any nucleus)" if cls is not None else ""
                raise ConfigError(
                    f"T2 needs the nuclei's classes{empty}: choose a class Labels layer or a "
                    f"filled class column of the nuclei layer's features under 'Classes (T2)', "
                    f"or train T1 in 'Task(s)'"
                )
            size = int(widget_value(self.fields["image_size"]))
            start = self._start_bundle()
            if start is not None:
                size = start.image_size
            data = training_data(image, inst, cls, names, image_size=size, name=labels_layer.name)
            root = adapter_dir()
            out, name = new_adapter_path(self.name_edit.text(), root)
            config = self.build_config(str(out), name, data.val_fraction, labels_layer.name)
            t1_only = ""
            if task == "both" and not data.dataset.has_classes:
                config.task = "t1"  # what the trainer would do; said here, in the dock's words
                t1_only = (
                    "T1 only — no nucleus has a class (choose a class source in 'Classes (T2)' "
                    "for T2)"
                )
            config.validate()
        except Exception as err:  # noqa: BLE001 - every refusal is shown, none crashes napari
            self._refuse(error_text(err))
            return False
        root.mkdir(parents=True, exist_ok=True)
        self._launch(config, data, out, name, note=t1_only)
        return True


def raise_shape(image_shape, labels_shape, image_name: str, labels_name: str) -> None:
    from sampo_engine.errors import DataError

    raise DataError(
        f"image {image_name!r} is {image_shape[1]} x {image_shape[0]} px but labels "
        f"{labels_name!r} are {labels_shape[1]} x {labels_shape[0]} px (or not 2-D); pick the "
        f"Labels layer drawn on this image"
    )
