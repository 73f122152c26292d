"""The "Fine-tune on this layer" dock in a real viewer (Xvfb), training the tiny model briefly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_sampo._adapters import list_adapters, new_adapter_path
from napari_sampo._training_data import classes_from_table, region_grid, training_data

WIDGET = "Fine-tune on this layer"
TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def sample():
    from sampo_engine.data.synthetic import make_synthetic_sample

    return make_synthetic_sample(448, seed=2)


@pytest.fixture
def adapters(tmp_path, monkeypatch):
    folder = tmp_path / "adapters"
    monkeypatch.setenv("SAMPO_ADAPTER_DIR", str(folder))
    return folder


def _dock(viewer, name):
    return viewer.window.add_plugin_dock_widget("napari-sampo", name)[1]


def _quick(widget, task="t1", model="tiny"):
    widget.set_value("model", model)
    widget.set_value("task", task)
    widget.set_value("device", "cpu")
    widget.set_value("batch_size", 1)
    widget.set_value("eval_crops", 2)


@pytest.mark.viewer
def test_finetune_plots_stops_and_offers_the_adapter(make_napari_viewer, sample, adapters, qtbot):
    viewer = make_napari_viewer()
    image = viewer.add_image(sample.image, name="H&E")
    labels = viewer.add_labels(sample.inst, name="corrected nuclei")
    classes = viewer.add_labels(sample.cls, name="classes")
    segment = _dock(viewer, "Segment nuclei (SAMPO)")
    widget = _dock(viewer, WIDGET)
    widget.image_combo.select_layer(image)
    widget.labels_combo.select_layer(labels)
    widget.select_class_source("layer", classes)
    _quick(widget, task="both")
    widget.set_value("epochs", 50)
    widget.name_edit.setText("my adapter")
    assert widget.model_note.isVisibleTo(widget)  # tiny: "every weight is trained"
    assert not widget.fields["lora_rank"].isEnabled()

    assert widget.start(), widget.status_label.text()
    assert not widget.start()  # a training is already running
    assert "already running" in widget.status_label.text()

    qtbot.waitUntil(lambda: widget.plot.line_length("loss") >= 2, timeout=TIMEOUT_MS)
    assert widget.plot.line_length("iou_best") >= 2
    assert widget.plot.line_length("margin") >= 1
    widget.stop()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.last_event is not None and widget.last_event.kind == "done"
    assert widget.last_event.metrics["stopped"] is True
    steps = widget.plot.line_length("loss")
    assert steps < 50

    bundle = adapters / "my_adapter"
    meta = json.loads((bundle / "sampo_bundle.json").read_text())
    assert meta["name"] == "my adapter" and meta["kind"] == "full" and meta["model_type"] == "tiny"
    assert (bundle / "checkpoint.pt").is_file() and (bundle / "base.pth").is_file()
    assert meta["complete"] is False
    assert len(meta["class_names"]) == 3
    assert [info.name for info in list_adapters()] == ["my adapter"]

    # selected in the Segment dock, and usable there
    assert segment.model_combo.currentData() == f"adapter:{bundle}"
    assert "my adapter" in segment.model_combo.currentText()
    points = segment.prompts_layer(create=True)
    points.add([[200.0, 200.0]])
    assert segment.segment(), segment.last_error
    qtbot.waitUntil(lambda: not segment.running, timeout=TIMEOUT_MS)
    assert segment.last_error is None and "SAMPO T1 nuclei" in viewer.layers

    # the same name again: a new folder with a suffix, nothing overwritten
    path, name = new_adapter_path("my adapter")
    assert name == "my adapter-2" and path.name == "my_adapter-2"


@pytest.mark.viewer
def test_refusals(make_napari_viewer, sample, adapters):
    viewer = make_napari_viewer()
    widget = _dock(viewer, WIDGET)
    assert not widget.start()  # no layers at all
    image = viewer.add_image(sample.image, name="H&E")
    small = viewer.add_labels(np.zeros((100, 100), np.int32), name="wrong size")
    widget.image_combo.select_layer(image)
    widget.labels_combo.select_layer(small)
    _quick(widget)
    assert not widget.start()
    assert "px" in widget.status_label.text() and "Labels layer" in widget.status_label.text()

    few = np.zeros(sample.inst.shape, np.int32)
    few[10:20, 10:20], few[50:60, 50:60] = 1, 2
    few_layer = viewer.add_labels(few, name="two nuclei")
    widget.labels_combo.select_layer(few_layer)
    assert not widget.start()
    assert "only 2 annotated nuclei" in widget.status_label.text()

    nuclei = viewer.add_labels(sample.inst, name="nuclei")
    widget.labels_combo.select_layer(nuclei)
    widget.set_value("task", "t2")
    widget.select_class_source("none")
    assert not widget.start()
    assert "T2 needs" in widget.status_label.text()
    assert not widget.running and widget.start_button.isEnabled()
    assert not adapters.exists() or not any(adapters.iterdir())

    # a class column in the labels' features is a class source
    ids = np.unique(sample.inst[sample.inst > 0])
    names = ["lymphocyte" if i % 2 else "epithelial" for i in ids]
    nuclei.features = {"index": ids, "class": names}
    widget._refresh_class_choices()
    assert widget.class_combo.currentData() == "column:class"
    assert widget._classes(sample.inst, "t2")[1] == {1: "epithelial", 2: "lymphocyte"}


def test_training_data_holds_out_whole_regions(sample):
    data = training_data(sample.image, sample.inst, sample.cls, image_size=224)
    assert data.num_regions == 4 and data.num_val_regions == 1
    assert data.val_fraction == pytest.approx(0.25)
    assert len(data.dataset) == 4 and data.dataset.has_classes
    assert sum(s.inst.shape[0] * s.inst.shape[1] for s in data.dataset) == 448 * 448
    assert len(region_grid(1000, 1000, 224)) == 9
    assert len(region_grid(200, 200, 224)) == 1


def test_classes_from_table():
    inst = np.array([[0, 1, 2], [3, 3, 0]])
    cls, names = classes_from_table(inst, [1, 2, 3], ["b", None, "a"])
    assert names == {1: "a", 2: "b"}
    assert cls.tolist() == [[0, 2, 0], [1, 1, 0]]
    cls, names = classes_from_table(inst, [1, 2, 3], [2, 0, 1])
    assert names == {1: "class 1", 2: "class 2"} and cls.tolist() == [[0, 2, 0], [1, 1, 0]]
