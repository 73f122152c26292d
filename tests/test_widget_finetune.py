"""The "Fine-tune on this layer" dock in a real viewer (Xvfb), training the tiny model briefly.

Each workflow is driven the way a user clicks it: segment, correct the result layer, fine-tune
on it (with and without classes); continue from an adapter; the finished run offered to the
Segment dock. The cache is a temporary folder (no checkpoint downloaded: tiny is the default).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_sampo._adapters import list_adapters, new_adapter_path
from napari_sampo._training_data import classes_from_table, region_grid, training_data

WIDGET = "Fine-tune on this layer"
SEGMENT = "Segment nuclei (SAMPO)"
TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def sample():
    from sampo_engine.data.synthetic import make_synthetic_sample

    return make_synthetic_sample(448, seed=2)


@pytest.fixture(scope="module")
def small_sample():
    from sampo_engine.data.synthetic import make_synthetic_sample

    return make_synthetic_sample(256, seed=5)


@pytest.fixture
def adapters(tmp_path, monkeypatch):
    folder = tmp_path / "adapters"
    monkeypatch.setenv("SAMPO_ADAPTER_DIR", str(folder))
    monkeypatch.setenv("SAMPO_CACHE_DIR", str(tmp_path / "cache"))  # nothing downloaded
    monkeypatch.delenv("SAMPO_CORRECTIONS_DIR", raising=False)
    return folder


def _dock(viewer, name):
    return viewer.window.add_plugin_dock_widget("napari-sampo", name)[1]


def _quick(widget, task="t1", model="tiny", steps=0):
    widget.set_value("model", model)
    widget.set_value("task", task)
    widget.set_value("device", "cpu")
    widget.set_value("batch_size", 1)
    widget.set_value("eval_crops", 2)
    if steps:
        widget.set_value("epochs", 1)
        widget.set_value("max_steps", steps)


def _train(qtbot, widget):
    assert widget.start(), widget.status_label.text()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.last_event is not None and widget.last_event.kind == "done"
    return widget.adapter_path


def _same(a, b) -> bool:
    """The same napari layer (widgets see layers through napari's public proxy)."""
    return a is not None and b is not None and a.unique_id == b.unique_id


def _centres(sample, n):
    ids = np.unique(sample.inst[sample.inst > 0])[:n]
    return ids, np.array(ndi.center_of_mass(sample.inst > 0, sample.inst, ids))


def _segment_and_correct(viewer, segment, sample, qtbot, task="t1", class_name=""):
    """Click three nuclei, Segment, then paint eight nuclei into the result (the correction)."""
    _, centres = _centres(sample, 8)
    segment.select_model("tiny")
    segment.device_combo.setCurrentIndex(segment.device_combo.findData("cpu"))
    segment.task_combo.setCurrentIndex(segment.task_combo.findData(task))
    if class_name:
        segment.class_combo.setCurrentText(class_name)
    segment.prompts_layer(create=True).add(centres[:3])
    assert segment.segment(), segment.last_error
    qtbot.waitUntil(lambda: not segment.running, timeout=TIMEOUT_MS)
    assert segment.last_error is None
    result = segment.result_layer
    result.brush_size = 9
    for k, (r, c) in enumerate(centres):
        result.paint((int(r), int(c)), 1000 + k)
    return result


@pytest.mark.viewer
def test_finetune_plots_stops_and_offers_the_adapter(make_napari_viewer, sample, adapters, qtbot):
    viewer = make_napari_viewer()
    image = viewer.add_image(sample.image, name="H&E")
    labels = viewer.add_labels(sample.inst, name="corrected nuclei")
    classes = viewer.add_labels(sample.cls, name="classes")
    segment = _dock(viewer, SEGMENT)
    segment.select_model("tiny")
    widget = _dock(viewer, WIDGET)
    widget.image_combo.select_layer(image)
    widget.labels_combo.select_layer(labels)
    widget.select_class_source("layer", classes)
    _quick(widget, task="both")
    widget.set_value("epochs", 50)
    widget.name_edit.setText("my adapter")
    assert widget.model_note.isVisibleTo(widget)  # tiny: "every weight is trained"
    assert "every weight" in widget.model_note.text()
    assert not widget.fields["lora_rank"].isEnabled()
    assert all(widget.plot.is_empty(t) for t in ("loss", "IoU", "reward margin"))

    assert widget.start(), widget.status_label.text()
    assert not widget.start()  # a training is already running
    assert "already running" in widget.status_label.text()

    qtbot.waitUntil(lambda: widget.plot.line_length("loss") >= 2, timeout=TIMEOUT_MS)
    assert widget.plot.line_length("iou_best") >= 2
    assert widget.plot.line_length("margin") >= 1
    assert not widget.plot.is_empty("loss")
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
    assert "offered in the Segment dock" in widget.status_label.text()

    # offered in the Segment dock, with its score — not selected behind the user's back
    assert segment.model_combo.currentData() == "base:tiny"
    assert segment.offer_box.isVisibleTo(segment)
    offer = segment.offer_label.text()
    assert "my adapter" in offer and "stopped early" in offer and "In use now: tiny" in offer
    assert segment.model_combo.findData(f"adapter:{bundle}") >= 0  # listed
    segment.use_offer_button.click()
    assert segment.model_combo.currentData() == f"adapter:{bundle}"
    assert "my adapter" in segment.model_combo.currentText()
    assert not segment.offer_box.isVisibleTo(segment)
    points = segment.prompts_layer(create=True)
    points.add([[200.0, 200.0]])
    assert segment.segment(), segment.last_error
    qtbot.waitUntil(lambda: not segment.running, timeout=TIMEOUT_MS)
    assert segment.last_error is None and "SAMPO T1 nuclei" in viewer.layers

    # the same name again: a new folder with a suffix, nothing overwritten
    path, name = new_adapter_path("my adapter")
    assert name == "my adapter-2" and path.name == "my_adapter-2"


@pytest.mark.viewer
def test_segment_correct_finetune_without_classes(
    make_napari_viewer, small_sample, adapters, qtbot
):
    """A T1 result's empty 'class' column with task 'both' once crashed the dock."""
    viewer = make_napari_viewer()
    viewer.add_image(small_sample.image, name="H&E")
    segment = _dock(viewer, SEGMENT)
    result = _segment_and_correct(viewer, segment, small_sample, qtbot)
    assert set(result.features["class"]) <= {""}

    widget = _dock(viewer, WIDGET)
    assert _same(widget.labels_combo.current_layer(), result)  # the result is preselected
    assert widget.fields["task"].currentData() == "both"
    assert widget.class_combo.currentData() == "none:"  # an empty column is not a class source
    widget.select_class_source("column", "class")  # ... even when the user picks it
    _quick(widget, task="both", steps=2)
    widget.set_value("model", "tiny")
    bundle = _train(qtbot, widget)
    meta = json.loads((bundle / "sampo_bundle.json").read_text())
    assert meta["task"] == "t1" and meta["class_names"] == {}
    assert "offered in the Segment dock" in widget.status_label.text()

    # T2 from the empty column is refused in the dock's words
    widget.set_value("task", "t2")
    assert not widget.start()
    text = widget.status_label.text()
    assert "gives no class to any nucleus" in text and "'Classes (T2)'" in text
    assert "--" not in text


@pytest.mark.viewer
def test_segment_correct_finetune_with_classes(make_napari_viewer, small_sample, adapters, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(small_sample.image, name="H&E")
    segment = _dock(viewer, SEGMENT)
    result = _segment_and_correct(
        viewer, segment, small_sample, qtbot, task="t2", class_name="lymphocyte"
    )
    assert result.name == "SAMPO T2 lymphocyte"
    # the user fills the class of the nuclei they painted (the layer's features table)
    ids = [1000 + k for k in range(8)]
    result.features = {
        "index": ids,
        "class": ["lymphocyte" if k % 2 else "epithelial" for k in range(8)],
    }

    widget = _dock(viewer, WIDGET)
    assert _same(widget.labels_combo.current_layer(), result)
    assert widget.class_combo.currentData() == "column:class"  # a filled column is picked
    _quick(widget, task="both", steps=2)
    bundle = _train(qtbot, widget)
    meta = json.loads((bundle / "sampo_bundle.json").read_text())
    assert meta["task"] == "both"
    assert meta["class_names"] == {"1": "epithelial", "2": "lymphocyte"}


@pytest.mark.viewer
def test_continue_from_an_adapter(make_napari_viewer, small_sample, adapters, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(small_sample.image, name="H&E")
    viewer.add_labels(small_sample.inst, name="nuclei")
    widget = _dock(viewer, WIDGET)
    _quick(widget, steps=2)
    widget.name_edit.setText("first")
    first = _train(qtbot, widget)
    start = widget.fields["model"]
    index = start.findData(f"adapter:{first}")
    assert index >= 0 and "adapter: first (tiny" in start.itemText(index)
    assert start.currentData() == "tiny"  # the choice is kept

    start.setCurrentIndex(index)  # the user picks the adapter in 'Start from'
    assert "Continues 'first'" in widget.model_note.text()
    assert not widget.fields["image_size"].isEnabled()
    widget.name_edit.setText("second")
    second = _train(qtbot, widget)
    meta = json.loads((second / "sampo_bundle.json").read_text())
    assert meta["config"]["init_adapter"] == str(first)
    assert meta["kind"] == "full" and meta["base_checkpoint"].endswith("first/base.pth")
    assert json.loads((first / "sampo_bundle.json").read_text())["name"] == "first"  # kept
    assert widget.select_start("tiny") and start.currentData() == "tiny"
    assert widget.fields["image_size"].isEnabled()


@pytest.mark.viewer
def test_defaults_and_models_that_cannot_run(make_napari_viewer, sample, adapters):
    viewer = make_napari_viewer()
    viewer.add_image(sample.image, name="H&E")
    viewer.add_labels(sample.inst, name="nuclei")
    widget = _dock(viewer, WIDGET)
    start = widget.fields["model"]
    assert start.currentData() == "nuclei-small"  # nothing downloaded: the shipped model
    texts = [start.itemText(i) for i in range(start.count())]
    assert "nuclei-small — shipped" in texts
    assert "vit_b — not downloaded (375 MB)" in texts and "tiny — random weights" in texts
    assert "small — random weights" in texts and texts[-1] == "Adapter from folder…"
    assert not widget.download_button.isEnabled()

    widget.set_value("model", "vit_b")
    assert widget.download_button.isEnabled()
    widget.set_value("device", "cpu")
    assert not widget.start()
    text = widget.status_label.text()
    assert "vit_b is not downloaded" in text and "'Download' next to 'Start from'" in text
    assert "--" not in text

    # small has no pretrained weights: the dock trains every weight instead of refusing
    widget.set_value("model", "small")
    assert "every weight" in widget.model_note.text()
    config = widget.build_config(str(adapters / "x"), "x", 0.25, "nuclei")
    assert config.model == "small" and config.full
    config.validate()


@pytest.mark.viewer
def test_full_training_follows_the_engines_rule(make_napari_viewer, sample, adapters):
    """The dock asks the engine which models train in full: ``small`` (random weights, like
    ``tiny``) gets full=True and a config that validates, with no "--full" refusal."""
    from sampo_engine.errors import ConfigError
    from sampo_engine.models.registry import must_train_in_full

    viewer = make_napari_viewer()
    viewer.add_image(sample.image, name="H&E")
    viewer.add_labels(sample.inst, name="nuclei")
    widget = _dock(viewer, WIDGET)
    for model in ("small", "tiny", "nuclei-small"):
        widget.set_value("model", model)
        config = widget.build_config(str(adapters / "x"), "x", 0.25, "nuclei")
        assert config.model == model and config.full == must_train_in_full(model)
        assert widget.fields["lora_rank"].isEnabled() == (not config.full)
        config.validate()
    assert must_train_in_full("small") and not must_train_in_full("nuclei-small")

    widget.set_value("model", "small")
    config = widget.build_config(str(adapters / "x"), "x", 0.25, "nuclei")
    config.full = False  # LoRA on small's random weights: what the engine refuses
    with pytest.raises(ConfigError, match="--full"):
        config.validate()


@pytest.mark.viewer
def test_both_docks_fit_a_1080px_screen(make_napari_viewer, sample):
    from qtpy.QtWidgets import QApplication

    viewer = make_napari_viewer()
    viewer.add_image(sample.image, name="H&E")
    viewer.add_labels(sample.inst, name="nuclei")
    segment = _dock(viewer, SEGMENT)
    finetune = _dock(viewer, WIDGET)
    QApplication.processEvents()
    heights = [w.sizeHint().height() for w in (segment, finetune)]
    minimums = [w.minimumSizeHint().height() for w in (segment, finetune)]
    assert max(heights) <= 700, heights
    # stacked in one dock area, under napari's menu bar and the two dock titles
    assert sum(minimums) <= 900, minimums
    finetune.options_section.expand(animate=False)
    QApplication.processEvents()
    assert finetune.sizeHint().height() <= 950


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
    # a T1 Segment result's class column: every value "" (once crashed with int(""))
    cls, names = classes_from_table(inst, [1, 2, 3], ["", "", ""])
    assert names == {} and not cls.any()
    cls, names = classes_from_table(inst, [1, 2, 3], ["", float("nan"), " x "])
    assert names == {1: "x"} and cls.tolist() == [[0, 0, 0], [1, 1, 0]]
    cls, names = classes_from_table(inst, [1, 2, 3], [2.0, float("nan"), 1.0])
    assert names == {1: "class 1", 2: "class 2"} and cls.tolist() == [[0, 2, 0], [1, 1, 0]]


def test_engine_messages_name_the_docks_controls():
    from napari_sampo._qt_common import gui_text
    from napari_sampo._widget_finetune import CONTROLS

    text = gui_text(
        "CUDA ran out of memory at batch size 2, input 224 px; use a smaller --batch-size or "
        "--image-size",
        CONTROLS,
        model="Start from",
    )
    assert text.endswith(
        "'Batch size' under 'More options' or 'Input size (px)' under 'More options'"
    )
    text = gui_text(
        "adapter x does not fit this model: it was trained on vit_b, not tiny. Use the matching "
        "--model/--image-size/--checkpoint, or another adapter.",
        CONTROLS,
        model="Start from",
    )
    assert text.endswith("Choose another adapter, or its base model, in 'Start from'.")
    assert gui_text("--lora-rank must be ≥ 1 (or train every weight with --full)", CONTROLS) == (
        "'LoRA rank' under 'More options' must be ≥ 1"
    )
    assert gui_text("use --unknown-flag") == "use --unknown-flag"  # no control: left as it is


def test_the_beta_box_cannot_reach_zero_and_the_engine_says_why(make_napari_viewer):
    """β = 0 would switch the preference term off without a word: the form stops above it (its
    minimum comes from the config field), and the config refuses it with the remedy."""
    from sampo_engine.errors import ConfigError
    from sampo_engine.train.config import TrainConfig

    widget = _dock(make_napari_viewer(), WIDGET)
    beta = widget.fields["beta"]
    assert 0 < beta.minimum() <= 0.01 and beta.value() == 2.0
    beta.setValue(0.0)
    assert beta.value() == beta.minimum() > 0
    with pytest.raises(ConfigError, match="pass --alpha 0"):
        TrainConfig(data="d", out="o", beta=0.0).validate()
