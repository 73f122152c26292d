"""Dock widget "Fine-tune on this layer": train a SAMPO adapter on the image's corrected labels.

The user picks the image, the instance Labels layer (for T2 also a class Labels layer or a class
column of the labels' features table), what to start from — a base model (listed with its state:
shipped, downloaded, random weights, or not downloaded yet, with a Download button) or an adapter
trained before, to continue it — and the training options (the fields of
:class:`~sampo_engine.train.config.TrainConfig`, with the CLI's help texts as tooltips), and
presses Start. :func:`napari_sampo._workers.training_job` runs
:meth:`~sampo_engine.train.trainer.Trainer.steps` in a napari ``thread_worker``; each step updates
the progress bar and the live plot. Stop ends the run after the current step; the trainer then
writes its checkpoint and the bundle as usual.

The bundle is saved in the adapter folder (``$SAMPO_ADAPTER_DIR`` or the user cache, see
:mod:`napari_sampo._adapters`) under the chosen name — a taken name gets a ``-2`` suffix, nothing
is overwritten — and *offered* to the "Segment nuclei (SAMPO)" dock of the same viewer with its
held-out score: the user decides whether to use it.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_sampo._qt_common import (
    LayerCombo,
    collapsible,
    config_field_widget,
    device_combo,
    error_text,
    find_layer,
    follow_layers,
    gui_text,
    layer_kind,
    layer_uid,
    set_widget_value,
    status_label,
    widget_value,
)

if TYPE_CHECKING:
    import napari

#: TrainConfig fields shown in the main form, then under "More options".
MAIN_FIELDS = ("task", "epochs")
OPTION_FIELDS = (
    "lora_rank",
    "alpha",
    "beta",
    "max_steps",
    "image_size",
    "batch_size",
    "lr",
    "eval_crops",
    "seed",
)
#: Defaults that differ from the CLI's for a single interactive image.
GUI_DEFAULTS = {"eval_crops": 8, "epochs": 10}
#: The form's label of each control (also what engine messages name instead of CLI flags).
LABELS = {
    "model": "Start from",
    "task": "Task(s)",
    "epochs": "Epochs",
    "lora_rank": "LoRA rank",
    "alpha": "α (preference weight)",
    "beta": "β (DPO temperature)",
    "device": "Device",
    "max_steps": "Max steps",
    "image_size": "Input size (px)",
    "batch_size": "Batch size",
    "lr": "Learning rate",
    "eval_crops": "Validation crops",
    "seed": "Seed",
}
#: CLI flags in engine messages -> this dock's controls (``_qt_common.gui_text``).
CONTROLS = {
    **{"--" + name.replace("_", "-"): label for name, label in LABELS.items()},
    **{
        "--" + name.replace("_", "-"): f"{LABELS[name]}' under 'More options"
        for name in (*OPTION_FIELDS, "device")
    },
    "--checkpoint": LABELS["model"],
    "--init-adapter": LABELS["model"],
    "--full": LABELS["model"],
}


def _split(data) -> tuple[str, str]:
    """'Start from' item data: ``"adapter:<path>"`` / ``"browse:"`` / a base model's name."""
    kind, sep, value = str(data or "").partition(":")
    return (kind, value) if sep and kind in ("adapter", "browse") else ("base", str(data or ""))


def _column_has_values(features, column: str) -> bool:
    """True when the features column holds at least one class (not only "", None or NaN)."""
    for value in features[column].tolist():
        if value is None or (isinstance(value, float) and value != value):
            continue
        if str(value).strip() not in ("", "0"):
            return True
    return False


class FinetuneWidget(QWidget):
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
        # corrections (issue #10): the user's saved edits as extra preference pairs
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

        # every other option, collapsed: both docks fit a 1080 px screen (issue #19)
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
        """corrections (issue #10): count the stored records; returns how many."""
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

    def _refresh_class_choices(self, *_: Any) -> None:
        current = self.class_combo.currentData()
        self.class_combo.blockSignals(True)
        self.class_combo.clear()
        self.class_combo.addItem("none", "none:")
        nuclei = self.labels_combo.current_layer()
        for layer in self.viewer.layers:
            if layer_kind(layer) == "labels" and (
                nuclei is None or layer_uid(layer) != layer_uid(nuclei)
            ):
                self.class_combo.addItem(f"layer: {layer.name}", f"layer:{layer_uid(layer)}")
        useful_class_column = False
        if nuclei is not None:
            features = nuclei.features
            for column in features.columns:
                if column != "index":
                    self.class_combo.addItem(f"column: {column}", f"column:{column}")
            # a Segment result has a "class" column; for T1 results it is empty
            useful_class_column = "class" in features.columns and _column_has_values(
                features, "class"
            )
        index = self.class_combo.findData(current)
        new_class_column = "column:class" not in self._class_items
        self._class_items = {self.class_combo.itemData(i) for i in range(self.class_combo.count())}
        if (index <= 0 or new_class_column) and useful_class_column:
            index = self.class_combo.findData("column:class")  # a filled "class" column appeared
        self.class_combo.setCurrentIndex(max(index, 0))
        self.class_combo.blockSignals(False)

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
            if _split(combo.itemData(i))[0] == "adapter"
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
                self._add_adapter_item(Path(_split(data)[1]))
        combo.addItem("Adapter from folder…", "browse:")
        index = combo.findData(current)
        combo.setCurrentIndex(index if index >= 0 else combo.findData(default_model()))
        combo.blockSignals(False)
        if combo.currentData() != current:
            self._on_model_changed()
        self.download_button.update_state()

    def _add_adapter_item(self, path: Path) -> int:
        from napari_sampo._models import adapter_label
        from sampo_engine.train.bundle import read_bundle

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
                    from sampo_engine.train.bundle import read_bundle

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
        if _split(combo.itemData(index))[0] != "browse":
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
        kind, value = _split(widget_value(self.fields["model"]))
        if kind != "adapter":
            return None
        from sampo_engine.train.bundle import read_bundle

        return read_bundle(value)

    def _base_to_download(self) -> str | None:
        kind, value = _split(widget_value(self.fields["model"]))
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
        from sampo_engine.models.availability import needs_full_training

        kind, value = _split(widget_value(self.fields["model"]))
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
            full = needs_full_training(value)
            rank.setEnabled(not full)
            if full:
                note = f"{value} has no pretrained weights: every weight is trained."
        self.model_note.setText(note)
        self.model_note.setVisible(bool(note))
        self.download_button.update_state()

    def set_value(self, name: str, value: Any) -> None:
        """Set one form field (tests, scripts). ``model``: a base model's name."""
        set_widget_value(self.fields[name], value)

    def select_class_source(self, kind: str, value: Any = None) -> None:
        """``("layer", layer)`` / ``("column", name)`` / ``("none",)`` as the T2 class source."""
        self._refresh_class_choices()
        data = f"layer:{layer_uid(value)}" if kind == "layer" else f"{kind}:{value or ''}"
        index = self.class_combo.findData(data)
        if index < 0:
            raise ValueError(f"no class source {kind} {value!r}")
        self.class_combo.setCurrentIndex(index)

    # ------------------------------------------------------------------ messages
    def _refuse(self, message: str) -> None:
        from napari.utils.notifications import show_warning

        message = gui_text(message, CONTROLS, model=LABELS["model"])
        self.status_label.setText(f"Not started: {message}")
        show_warning(f"Fine-tune: {message}")

    @property
    def running(self) -> bool:
        return self.worker is not None

    # ------------------------------------------------------------------ start
    def build_config(self, out: str, name: str, val_fraction: float, data_name: str):
        """The :class:`TrainConfig` for the form's values.

        From a base model: ``full`` when it has no pretrained weights
        (:func:`~sampo_engine.models.availability.needs_full_training`), its packaged weights as
        ``checkpoint`` when shipped. From an adapter: its model type, input size and rank, and
        ``init_adapter`` = its folder (a --full bundle keeps training every weight).
        """
        from napari_sampo._models import base_needed_by, unusable_message
        from sampo_engine.errors import ConfigError
        from sampo_engine.models.availability import SHIPPED, model_state, needs_full_training
        from sampo_engine.train.config import TrainConfig

        values = {key: widget_value(w) for key, w in self.fields.items()}
        kind, start = _split(values["model"])
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
            model, full = start, needs_full_training(start)
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
            corrections=self._corrections_folder(),  # corrections (issue #10)
        )

    def _corrections_folder(self) -> str:
        from napari_sampo._corrections import corrections_dir

        if self.corrections_check.isChecked() and self.refresh_corrections() > 0:
            return str(corrections_dir())
        return ""

    def _classes(self, inst: np.ndarray, task: str):
        """(class map or None, class names) from the chosen class source."""
        from napari_sampo._training_data import classes_from_map, classes_from_table
        from sampo_engine.errors import DataError

        kind, _, value = str(self.class_combo.currentData() or "none:").partition(":")
        if kind == "layer":
            layer = find_layer(self.viewer, value)
            if layer is None:
                raise DataError("the class Labels layer is gone; pick another class source")
            class_map = np.asarray(layer.data)
            names = {}
            features = layer.features
            for column in ("name", "class", "class_name"):
                if column in features.columns:
                    ids = features["index"] if "index" in features.columns else features.index
                    names = {int(i): str(n) for i, n in zip(ids, features[column], strict=False)}
                    break
            return classes_from_map(inst, class_map), names
        if kind == "column":
            features = self.labels_combo.current_layer().features
            if value not in features.columns:
                raise DataError(f"the nuclei layer has no feature column {value!r} any more")
            ids = features["index"] if "index" in features.columns else features.index
            return classes_from_table(inst, ids.to_numpy(), features[value].tolist())
        return None, {}

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
        if config.corrections:  # corrections (issue #10)
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
        from sampo_engine.train.bundle import is_bundle

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


def raise_shape(image_shape, labels_shape, image_name: str, labels_name: str) -> None:
    from sampo_engine.errors import DataError

    raise DataError(
        f"image {image_name!r} is {image_shape[1]} x {image_shape[0]} px but labels "
        f"{labels_name!r} are {labels_shape[1]} x {labels_shape[0]} px (or not 2-D); pick the "
        f"Labels layer drawn on this image"
    )
