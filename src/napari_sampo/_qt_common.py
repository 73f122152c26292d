"""Small Qt pieces shared by the two dock widgets: layer pickers, device picker, config forms,
and a status line that also notifies."""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable, Sequence
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtGui import QStandardItemModel
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QLabel,
    QLineEdit,
    QSpinBox,
    QWidget,
)

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def layer_kind(layer) -> str:
    """napari's layer type name in lower case ('image', 'labels', 'points', ...)."""
    return type(getattr(layer, "__wrapped__", layer)).__name__.lower()


def layer_uid(layer) -> str:
    """A layer's napari ``unique_id`` as text (stable across renames and moves)."""
    return str(layer.unique_id)


def find_layer(viewer, uid) -> Any | None:
    """The layer of ``viewer`` whose :func:`layer_uid` is ``uid``, or None."""
    if not uid:
        return None
    for layer in viewer.layers:
        if layer_uid(layer) == str(uid):
            return layer
    return None


class LayerCombo(QComboBox):
    """Pick a layer of one kind ('image', 'labels', 'points'); follows the viewer's layer list.

    Items are keyed by the layer's ``unique_id``, so the choice survives renames and reordering.
    ``extra`` items (text, data) are appended after the layers (e.g. "none").
    """

    def __init__(
        self,
        viewer,
        kind: str,
        parent: QWidget | None = None,
        extra: Sequence[tuple[str, Any]] = (),
        accept: Callable[[Any], bool] | None = None,
    ) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.kind = kind
        self.extra = list(extra)
        self.accept = accept
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        self.refresh()

    def layers(self) -> list:
        return [
            layer
            for layer in self.viewer.layers
            if layer_kind(layer) == self.kind and (self.accept is None or self.accept(layer))
        ]

    def refresh(self, *_: Any) -> None:
        current = self.currentData()
        self.blockSignals(True)
        try:
            self.clear()
            for layer in self.layers():
                self.addItem(layer.name, layer_uid(layer))
            for text, data in self.extra:
                self.addItem(text, data)
            index = self.findData(current) if current is not None else -1
            if index < 0 and self.count():
                index = self._default_index()
            self.setCurrentIndex(index)
        finally:
            self.blockSignals(False)
        if self.currentData() != current:
            self.currentIndexChanged.emit(self.currentIndex())

    def _default_index(self) -> int:
        """The selected layer of our kind if any, else the top-most one, else the first extra."""
        active = self.viewer.layers.selection.active
        if active is not None and layer_kind(active) == self.kind:
            index = self.findData(layer_uid(active))
            if index >= 0:
                return index
        n_layers = self.count() - len(self.extra)
        return n_layers - 1 if n_layers > 0 else 0

    def current_layer(self):
        return find_layer(self.viewer, self.currentData())

    def select_layer(self, layer) -> None:
        self.refresh()
        index = self.findData(layer_uid(layer))
        if index >= 0:
            self.setCurrentIndex(index)


def follow_layers(viewer, callback: Callable[..., None], owner: QWidget) -> None:
    """Call ``callback`` when layers are added, removed, moved or renamed, while ``owner`` lives.

    The connections are dropped when ``owner`` is destroyed, so a closed dock widget is never
    called by the viewer again.
    """
    layers_events = viewer.layers.events
    connected: list = []

    def on_name(event=None) -> None:
        callback()

    def watch(layer) -> None:
        layer.events.name.connect(on_name)
        connected.append(layer)

    def on_inserted(event) -> None:
        watch(event.value)
        callback()

    def on_removed(event) -> None:
        layer = event.value
        try:
            layer.events.name.disconnect(on_name)
        except (TypeError, ValueError, RuntimeError):
            pass
        callback()

    def on_moved(event=None) -> None:
        callback()

    for layer in viewer.layers:
        watch(layer)
    layers_events.inserted.connect(on_inserted)
    layers_events.removed.connect(on_removed)
    layers_events.moved.connect(on_moved)

    def disconnect(*_: Any) -> None:
        for emitter, fn in (
            (layers_events.inserted, on_inserted),
            (layers_events.removed, on_removed),
            (layers_events.moved, on_moved),
        ):
            try:
                emitter.disconnect(fn)
            except (TypeError, ValueError, RuntimeError):
                pass
        for layer in connected:
            try:
                layer.events.name.disconnect(on_name)
            except (TypeError, ValueError, RuntimeError):
                pass

    owner.destroyed.connect(disconnect)


def device_combo(parent: QWidget | None = None) -> QComboBox:
    """auto / cuda / mps / cpu; devices this machine lacks are listed but disabled."""
    from sampo_engine.utils.device import available_devices

    available = set(available_devices())
    combo = QComboBox(parent)
    for name in DEVICE_CHOICES:
        combo.addItem(name, name)
    model = combo.model()
    if isinstance(model, QStandardItemModel):
        for row, name in enumerate(DEVICE_CHOICES):
            item = model.item(row)
            if name != "auto" and name not in available:
                item.setEnabled(False)
                item.setToolTip(f"{name} is not available on this machine")
    combo.setToolTip(
        "auto = cuda, then mps, then cpu; available here: " + ", ".join(sorted(available))
    )
    return combo


def set_combo_data(combo: QComboBox, data: Any) -> bool:
    index = combo.findData(data)
    if index >= 0:
        combo.setCurrentIndex(index)
    return index >= 0


# ------------------------------------------------------------------------------ config forms


def config_field_widget(cls, name: str, parent: QWidget | None = None) -> QWidget:
    """A form widget for field ``name`` of config dataclass ``cls``: its default, its choices,
    and its help text as tooltip (the same text the CLI prints in ``--help``)."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    hint = typing.get_type_hints(cls)[name]
    default = field.default if field.default is not dataclasses.MISSING else None
    choices = field.metadata.get("choices")
    widget: QWidget
    if choices:
        widget = QComboBox(parent)
        for choice in choices:
            widget.addItem(str(choice), choice)
        set_combo_data(widget, default)
    elif hint is bool:
        widget = QCheckBox(parent)
        widget.setChecked(bool(default))
    elif hint is int:
        widget = QSpinBox(parent)
        widget.setRange(int(field.metadata.get("minimum") or 0), 1_000_000)
        widget.setValue(int(default or 0))
    elif hint is float:
        widget = QDoubleSpinBox(parent)
        widget.setDecimals(4 if abs(float(default or 0)) < 0.01 else 3)
        widget.setRange(float(field.metadata.get("minimum") or 0.0), 1_000.0)
        widget.setSingleStep(0.1 if abs(float(default or 0)) >= 0.1 else 1e-4)
        widget.setValue(float(default or 0))
    else:
        widget = QLineEdit(parent)
        widget.setText(str(default or ""))
    widget.setToolTip(field.metadata.get("help", ""))
    widget.setObjectName(name)
    return widget


def widget_value(widget: QWidget) -> Any:
    if isinstance(widget, QComboBox):
        return widget.currentData()
    if isinstance(widget, QCheckBox):
        return widget.isChecked()
    if isinstance(widget, (QSpinBox, QDoubleSpinBox)):
        return widget.value()
    if isinstance(widget, QLineEdit):
        return widget.text()
    raise TypeError(f"no value for {type(widget).__name__}")


def set_widget_value(widget: QWidget, value: Any) -> None:
    if isinstance(widget, QComboBox):
        set_combo_data(widget, value)
    elif isinstance(widget, QCheckBox):
        widget.setChecked(bool(value))
    elif isinstance(widget, (QSpinBox, QDoubleSpinBox)):
        widget.setValue(value)
    elif isinstance(widget, QLineEdit):
        widget.setText(str(value))


def status_label(parent: QWidget | None = None) -> QLabel:
    label = QLabel(parent)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def error_text(err: BaseException) -> str:
    """A user-facing message: a SampoError's own message, otherwise type and message."""
    from sampo_engine.errors import SampoError

    if isinstance(err, SampoError) or type(err).__name__ == "WorkerCrash":
        return str(err)
    return f"{type(err).__name__}: {err}"


# ------------------------------------------------------------------------------ messages

#: CLI remedies in engine messages -> what a dock user does instead ({model}: the model control).
_PHRASES = (
    (
        re.compile(r"run `sampo-engine weights download (\w+)` or pass --checkpoint FILE"),
        r"choose \1 in '{model}' and press 'Download'",
    ),
    (
        re.compile(r"Use the matching --model/--image-size/--checkpoint, or another adapter\."),
        "Choose another adapter, or its base model, in '{model}'.",
    ),
    (
        re.compile(r"pass the --out folder of a `sampo-engine train` run"),
        "choose a folder holding sampo_bundle.json (made by 'Fine-tune on this layer')",
    ),
    (re.compile(r" \(or train every weight with --full\)"), ""),
    (re.compile(r" and --resume\b"), " and start again"),
)
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def gui_text(message: str, controls: dict[str, str] | None = None, model: str = "Model") -> str:
    """An engine message in a dock's words: ``--flag`` becomes the dock's control for it.

    ``controls`` maps CLI flags (``"--lora-rank"``) to control names (``"LoRA rank"``); CLI
    remedies the dock has a control for are rephrased ("download or pass --checkpoint" becomes
    "choose it in '<model>' and press 'Download'"). Flags without a control stay as they are.
    """
    text = message
    for pattern, replacement in _PHRASES:
        text = pattern.sub(replacement.replace("{model}", model), text)
    controls = controls or {}
    return _FLAG.sub(
        lambda m: f"'{controls[m.group(0)]}'" if m.group(0) in controls else m.group(0), text
    )


def collapsible(title: str, widget: QWidget, parent: QWidget | None = None, expanded=False):
    """A superqt ``QCollapsible`` section holding ``widget`` (collapsed unless ``expanded``)."""
    from superqt import QCollapsible

    section = QCollapsible(title, parent, expandedIcon="▾", collapsedIcon="▸")
    section.setContentsMargins(0, 0, 0, 0)
    layout = section.layout()
    if layout is not None:
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
    section.addWidget(widget)
    if expanded:
        section.expand(animate=False)
    else:
        section.collapse(animate=False)
    return section
