"""The "Segment nuclei (SAMPO)" dock in a real viewer (Xvfb), with the tiny random-weight model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_sampo._points import FEATURE, TOGGLE_KEY, prompts_from_layer

pytestmark = pytest.mark.viewer

WIDGET = "Segment nuclei (SAMPO)"
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def sample():
    from sampo_engine.data.synthetic import make_synthetic_sample

    return make_synthetic_sample(448, seed=1)


def _centres(sample, n: int, cls: int | None = None) -> np.ndarray:
    ids = np.unique(sample.inst[sample.inst > 0])
    if cls is not None:
        ids = np.array(
            [i for i in ids if np.bincount(sample.cls[sample.inst == i]).argmax() == cls]
        )
    ids = ids[:n]
    return np.array(ndi.center_of_mass(sample.inst > 0, sample.inst, ids))


@pytest.fixture
def setup(make_napari_viewer, sample, tmp_path, monkeypatch):
    monkeypatch.setenv("SAMPO_ADAPTER_DIR", str(tmp_path / "adapters"))
    monkeypatch.setenv("SAMPO_CACHE_DIR", str(tmp_path / "cache"))  # nothing downloaded
    viewer = make_napari_viewer()
    image = viewer.add_image(sample.image, name="H&E")
    _, widget = viewer.window.add_plugin_dock_widget("napari-sampo", WIDGET)
    widget.select_model("tiny")
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    # the untrained tiny model's probabilities hover near 0.45: at the shipped threshold (0.4,
    # docs/instances.md) the whole image would be one nucleus, so these tests cut at 0.5
    config = widget.predict_config
    monkeypatch.setattr(
        widget, "predict_config", lambda: dataclasses.replace(config(), threshold=0.5)
    )
    return viewer, image, widget


def _click(widget, sample, positives: int = 3, negative: bool = True, cls: int | None = None):
    points = widget.prompts_layer(create=True)
    points.add(_centres(sample, positives, cls))
    if negative:
        widget.toggle_polarity()
        points.add([[4.0, 4.0]])  # background corner
        widget.toggle_polarity()
    return points


def _run(qtbot, widget) -> None:
    assert widget.segment(), widget.last_error
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)


def test_t1_t2_runs_keep_the_viewer_live_and_reuse_embeddings(setup, sample, qtbot):
    from qtpy.QtCore import QTimer

    viewer, _, widget = setup
    points = _click(widget, sample)
    assert points.features[FEATURE].tolist() == [True, True, True, False]

    ticks = {"during": 0}
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.__setitem__("during", ticks["during"] + widget.running))
    timer.start()
    _run(qtbot, widget)
    timer.stop()
    assert widget.last_error is None
    assert ticks["during"] > 0  # the event loop ran while the worker computed

    t1 = viewer.layers["SAMPO T1 nuclei"]
    assert t1.data.shape == sample.inst.shape and t1.data.dtype == np.int32
    prediction = widget.last_prediction
    assert prediction.num_nuclei == int(t1.data.max())
    assert f"{prediction.num_nuclei} nuclei" in widget.count_label.text()
    for column in ("label", "area", "centroid_y", "centroid_x", "class"):
        assert column in t1.features.columns
    assert len(t1.features) == prediction.num_nuclei
    calls = widget._predictor.encoder_calls
    assert calls > 0

    # T2 with a class name: a second layer; the embeddings are reused (no encoder call). T2 is
    # made by nucleus (the default): the random model's nuclei stand in by the true ones
    widget._predictor.nuclei_from_labels(sample.inst, embeddings=False)
    widget.task_combo.setCurrentIndex(widget.task_combo.findData("t2"))
    widget.class_combo.setCurrentText("lymphocyte")
    _run(qtbot, widget)
    t2 = viewer.layers["SAMPO T2 lymphocyte"]
    assert set(t2.features["class"]) <= {"lymphocyte"}
    assert widget._predictor.encoder_calls == calls

    # T1 again: the same layer object is updated, no new layer
    n_layers = len(viewer.layers)
    widget.task_combo.setCurrentIndex(widget.task_combo.findData("t1"))
    points.add([[200.0, 200.0]])
    _run(qtbot, widget)
    assert len(viewer.layers) == n_layers
    assert viewer.layers["SAMPO T1 nuclei"] is t1
    assert widget._predictor.encoder_calls == calls


def test_user_layers_are_never_replaced(setup, sample, qtbot):
    viewer, _, widget = setup
    user = viewer.add_labels(np.full(sample.inst.shape, 7, np.int32), name="SAMPO T1 nuclei")
    _click(widget, sample, negative=False)
    _run(qtbot, widget)
    assert np.all(user.data == 7) and user.name == "SAMPO T1 nuclei"
    ours = widget.result_layer
    assert ours is not user and ours.name != user.name

    # the user renames our layer: it becomes theirs, the next run makes a new one
    ours.name = "my corrected nuclei"
    before = ours.data.copy()
    _run(qtbot, widget)
    assert np.array_equal(ours.data, before)
    assert widget.result_layer is not ours
    assert np.all(user.data == 7)

    # the user deletes our layer: a new one again
    viewer.layers.remove(widget.result_layer)
    _run(qtbot, widget)
    assert widget.result_layer in viewer.layers


def test_cancel_changes_no_layer(setup, sample, qtbot):
    viewer, _, widget = setup
    _click(widget, sample, negative=False)
    names = [layer.name for layer in viewer.layers]
    assert widget.segment()
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert "Cancelled" in widget.status_label.text()
    assert [layer.name for layer in viewer.layers] == names
    assert widget.segment_button.isEnabled()


def test_live_update_and_polarity_key(setup, sample, qtbot):
    viewer, _, widget = setup
    points = widget.new_prompts_layer()
    assert any(str(key) == TOGGLE_KEY for key in points.keymap)
    toggle = next(fn for key, fn in points.keymap.items() if str(key) == TOGGLE_KEY)
    toggle(points)  # what pressing T on the layer does
    points.add([[4.0, 4.0]])
    assert points.features[FEATURE].tolist() == [False]
    assert np.allclose(points.face_color[0], [1, 0, 0, 1])  # red
    assert "negative" in widget.polarity_button.text()
    toggle(points)
    assert "positive" in widget.polarity_button.text()

    widget.live_check.setChecked(True)
    points.add(_centres(sample, 2))
    qtbot.waitUntil(lambda: "SAMPO T1 nuclei" in viewer.layers, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert np.allclose(points.face_color[-1], [0, 1, 0, 1])  # lime


def test_refusals_and_export(setup, sample, qtbot, tmp_path):
    viewer, image, widget = setup
    points = widget.prompts_layer(create=True)
    assert not widget.segment()
    assert "positive" in widget.last_error
    widget.toggle_polarity()
    points.add([[10.0, 10.0]])  # only a negative point
    assert not widget.segment()
    widget.toggle_polarity()
    assert widget.export(tmp_path / "nothing") == []

    points.add(_centres(sample, 3))
    _run(qtbot, widget)
    paths = widget.export(tmp_path / "result.tif")
    assert [p.name for p in paths] == ["result.tif", "result.geojson", "result.csv"]
    assert all(p.stat().st_size > 0 for p in paths)
    lines = (tmp_path / "result.csv").read_text().splitlines()
    assert len(lines) == 1 + widget.last_prediction.num_nuclei


def test_points_map_through_layer_transforms(make_napari_viewer):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((100, 200), np.uint8), scale=(2, 2), translate=(10, 0))
    points = viewer.add_points([[10 + 2 * 30, 2 * 40], [-50, 0]])
    rc, labels = prompts_from_layer(points, image, (100, 200))
    assert np.allclose(rc, [[30, 40]]) and labels.tolist() == [1]


def test_worker_errors_are_reported_and_the_widget_recovers(
    setup, sample, qtbot, monkeypatch, tmp_path
):
    from sampo_engine.predict.predictor import TilePredictor

    viewer, _, widget = setup
    _click(widget, sample, negative=False)

    # a model that is not downloaded is refused before any work, in the dock's words
    widget.select_model("vit_b")
    assert not widget.segment()
    assert "vit_b is not downloaded: press 'Download' next to 'Model'" in widget.last_error
    assert "--" not in widget.last_error and not widget.running

    # a user-facing error inside the worker is a message, not a traceback
    from sampo_engine.errors import CheckpointError

    def missing(*args, **kwargs):
        raise CheckpointError(
            "no vit_b checkpoint found (looked for x); run `sampo-engine weights download "
            "vit_b` or pass --checkpoint FILE"
        )

    load_model = TilePredictor._load_model
    monkeypatch.setattr(TilePredictor, "_load_model", missing)
    widget.select_model("tiny")
    _run(qtbot, widget)
    assert "choose vit_b in 'Model' and press 'Download'" in widget.last_error
    assert "--checkpoint" not in widget.last_error
    monkeypatch.setattr(TilePredictor, "_load_model", load_model)

    # a bug inside the worker: napari shows it, the viewer and the widget carry on
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(TilePredictor, "predict", boom)
    widget._predictor = None
    with qtbot.capture_exceptions() as raised:  # napari re-raises it for its error dialog
        _run(qtbot, widget)
    assert [type(e[1]).__name__ for e in raised] == ["WorkerCrash"]
    assert "RuntimeError: boom" in widget.status_label.text()
    assert widget.segment_button.isEnabled() and not widget.running
    assert "SAMPO T1 nuclei" not in viewer.layers


def test_prompts_stay_above_the_result(setup, sample, qtbot):
    viewer, image, widget = setup
    points = _click(widget, sample, negative=False)
    other = viewer.add_labels(np.zeros(sample.inst.shape, np.int32), name="mine")
    _run(qtbot, widget)
    names = [layer.name for layer in viewer.layers]
    assert names.index("SAMPO T1 nuclei") < names.index(points.name)
    assert names.index("H&E") < names.index("SAMPO T1 nuclei")
    assert names.index("mine") < names.index(points.name)  # other layers keep their order
    assert viewer.layers.selection.active.name == points.name
    # the next run on the same layer keeps the order as it is
    points.add([[200.0, 200.0]])
    _run(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == names
    assert other in viewer.layers


def test_default_model_runs_here_and_every_model_is_listed(setup):
    _, _, widget = setup
    combo = widget.model_combo
    widget.refresh_models()
    texts = [combo.itemText(i) for i in range(combo.count())]
    for text in (
        "nuclei-small — shipped",
        "vit_b — not downloaded (375 MB)",
        "vit_l — not downloaded (1.2 GB)",
        "vit_h — not downloaded (2.6 GB)",
        "tiny — random weights",
        "small — random weights",
    ):
        assert text in texts
    assert texts[-1] == "Adapter from folder…"
    assert combo.itemData(texts.index("vit_b — not downloaded (375 MB)"), 3)  # a tooltip


def test_fresh_dock_defaults_to_a_usable_model(make_napari_viewer, tmp_path, monkeypatch):
    monkeypatch.setenv("SAMPO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SAMPO_ADAPTER_DIR", str(tmp_path / "adapters"))
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-sampo", WIDGET)
    # offline, nothing downloaded: the model shipped inside the package
    assert widget.model_combo.currentData() == "base:nuclei-small"
    assert not widget.download_button.isEnabled()
    widget.select_model("vit_b")
    assert widget.download_button.isEnabled()


def test_first_clicks_on_the_real_sample_give_nuclei_without_a_download(
    make_napari_viewer, tmp_path, monkeypatch, qtbot
):
    """A new user, offline: open the real H&E sample, click three nuclei, Segment."""
    monkeypatch.setenv("SAMPO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SAMPO_ADAPTER_DIR", str(tmp_path / "adapters"))
    viewer = make_napari_viewer()
    viewer.open_sample("napari-sampo", "brca_he")
    image, dots = viewer.layers[0], viewer.layers[1]
    _, widget = viewer.window.add_plugin_dock_widget("napari-sampo", WIDGET)
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    assert widget.image_combo.current_layer() is image
    assert widget.points_combo.current_layer() is None  # the experts' dots are no prompts
    points = widget.prompts_layer(create=True)
    assert points is not dots and len(points.data) == 0
    points.add(dots.data[:3])  # three nuclei the experts marked
    _run(qtbot, widget)
    assert widget.last_error is None, widget.last_error
    result = viewer.layers["SAMPO T1 nuclei"]
    assert widget.last_prediction.num_nuclei > 100
    rows, cols = np.round(dots.data).astype(int).T
    assert (result.data[rows, cols] > 0).mean() > 0.5  # most expert dots lie in a nucleus
    # the sample opens resampled to 40×: its nuclei have the trained size, no warning
    assert not any(m.startswith("magnification") for m in widget.last_prediction.messages)
    assert widget._predictor.splitter.method == "head"  # the shipped split head cut them
    # Options → Touching nuclei: the watershed instead (a predictor of its own)
    widget.split_combo.setCurrentIndex(widget.split_combo.findData("watershed"))
    assert widget.predict_config().split_by == "watershed"
    _run(qtbot, widget)
    assert widget.last_error is None, widget.last_error
    assert widget._predictor.splitter.method == "watershed"
    assert widget.last_prediction.num_nuclei > 100
    # Options → Nucleus types: the packaged type head by default, off on request
    assert widget.predict_config().type_head == "auto" and widget._predictor.type_head is not None
    widget.types_combo.setCurrentIndex(widget.types_combo.findData("off"))
    assert widget.predict_config().type_head == "off"


@pytest.fixture
def fake_vit_b(tmp_path, monkeypatch):
    """vit_b's registry entry pointing at a small local file served through file://."""
    import hashlib

    from sampo_engine.models import checkpoints as weights

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    payload = np.random.default_rng(0).bytes(300_000)
    (mirror / "fake_vit_b.pth").write_bytes(payload)
    info = weights.CheckpointInfo(
        "vit_b", "fake_vit_b.pth", hashlib.sha256(payload).hexdigest(), len(payload)
    )
    monkeypatch.setitem(weights.CHECKPOINTS, "vit_b", info)
    monkeypatch.setenv("SAMPO_WEIGHTS_BASE_URL", mirror.as_uri())
    return info


def test_download_button_fetches_the_checkpoint(setup, fake_vit_b, tmp_path, qtbot, monkeypatch):
    _, _, widget = setup
    widget.refresh_models()
    widget.select_model("vit_b")
    assert widget.model_combo.currentText() == "vit_b — not downloaded (300 kB)"
    button = widget.download_button
    assert button.isEnabled()
    button.click()
    assert button.running
    qtbot.waitUntil(lambda: not button.running, timeout=TIMEOUT_MS)
    assert (tmp_path / "cache" / "checkpoints" / "fake_vit_b.pth").is_file()
    assert widget.model_combo.currentData() == "base:vit_b"
    assert widget.model_combo.currentText() == "vit_b — downloaded"
    assert "vit_b downloaded" in widget.status_label.text()
    assert not button.isEnabled()  # nothing left to download


def test_download_offline_fails_with_what_to_do(setup, fake_vit_b, tmp_path, qtbot, monkeypatch):
    _, _, widget = setup
    monkeypatch.setenv("SAMPO_WEIGHTS_BASE_URL", (tmp_path / "unreachable").as_uri())
    widget.refresh_models()
    widget.select_model("vit_b")
    widget.download_button.click()
    qtbot.waitUntil(lambda: not widget.download_button.running, timeout=TIMEOUT_MS)
    text = widget.status_label.text()
    assert text.startswith("Could not download vit_b: cannot reach")
    assert "Offline? Copy fake_vit_b.pth" in text and str(tmp_path / "cache") in text
    assert "run the command" not in text
    assert widget.model_combo.currentText() == "vit_b — not downloaded (300 kB)"
    assert widget.download_button.isEnabled()  # try again later
    assert not (tmp_path / "cache" / "checkpoints" / "fake_vit_b.pth").exists()


def test_offered_adapter_can_be_declined(setup, tmp_path, qtbot):
    from sampo_engine.data.synthetic import make_synthetic_dataset
    from sampo_engine.train.config import TrainConfig
    from sampo_engine.train.trainer import Trainer

    _, _, widget = setup
    out = tmp_path / "adapters" / "fresh"
    config = TrainConfig(
        data="generated", out=str(out), model="tiny", full=True, task="t1", epochs=1,
        max_steps=1, batch_size=1, eval_crops=1, device="cpu", name="fresh",
    )  # fmt: skip
    Trainer(config, dataset=make_synthetic_dataset(2, 224, seed=0), log=lambda *_: None).run()
    assert widget.offer_adapter(out, "'fresh' (held-out T1 Dice 0.123)")
    assert widget.offer_box.isVisibleTo(widget)
    assert "'fresh' (held-out T1 Dice 0.123)" in widget.offer_label.text()
    assert widget.model_combo.currentData() == "base:tiny"
    widget.dismiss_offer_button.click()
    assert not widget.offer_box.isVisibleTo(widget)
    assert widget.model_combo.currentData() == "base:tiny"
    index = widget.model_combo.findData(f"adapter:{out}")
    assert index >= 0 and "T1 Dice" in widget.model_combo.itemText(index)


def test_download_job_cancels_and_keeps_nothing(fake_vit_b, tmp_path, monkeypatch):
    import threading
    import time

    from napari_sampo._workers import Failure, Progress, download_job, guarded
    from sampo_engine.models import checkpoints as weights

    monkeypatch.setenv("SAMPO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(weights, "CHUNK", 10_000)
    real_download = weights.download_checkpoint

    def slow_download(model, progress=None, **kwargs):  # a slow network: the click comes first
        def report(done, total):
            progress(done, total)
            time.sleep(0.05)

        return real_download(model, progress=report, **kwargs)

    monkeypatch.setattr(weights, "download_checkpoint", slow_download)
    stop = threading.Event()
    job = guarded(download_job("vit_b", stop))
    seen = []
    try:
        while True:
            item = next(job)
            seen.append(item)
            if isinstance(item, Progress) and item.done:
                stop.set()  # the user clicks the button again
    except StopIteration as end:
        result = end.value
    assert isinstance(result, Failure) and result.cancelled
    assert any(p.total == 300 for p in seen)  # kB
    folder = tmp_path / "cache" / "checkpoints"
    assert not folder.exists() or not any(folder.iterdir())  # no partial file


def test_t2_by_nucleus_colours_probability_and_rethresholds_live(setup, sample, qtbot, tmp_path):
    import csv

    from napari.utils.colormaps import DirectLabelColormap

    viewer, _, widget = setup
    assert widget.t2_mode_combo.currentData() == "exemplar"  # the default: measured best
    # the dock's behaviour, not the packaged type head's view of generated tissue
    widget.types_combo.setCurrentIndex(widget.types_combo.findData("off"))
    points = widget.prompts_layer(create=True)
    points.add(_centres(sample, 3, cls=1))  # three lymphocytes ...
    widget.toggle_polarity()
    points.add(_centres(sample, 2, cls=2))  # ... and two epithelial nuclei as negatives
    points.add(_centres(sample, 1, cls=3))
    widget.toggle_polarity()
    widget.task_combo.setCurrentIndex(widget.task_combo.findData("t2"))
    _run(qtbot, widget)  # the first run embeds the image (and segments T1 with the model)
    widget._predictor.nuclei_from_labels(sample.inst, embeddings=False)
    _run(qtbot, widget)
    assert widget.last_error is None
    prediction = widget.last_prediction
    layer = viewer.layers["SAMPO T2 same type"]
    nucleus = prediction.nucleus
    assert nucleus is not None and not widget.threshold_row.isHidden()
    ids = np.unique(layer.data)[1:]
    truth = {i: np.bincount(sample.cls[sample.inst == i]).argmax() for i in ids}
    assert np.mean([truth[i] == 1 for i in ids]) > 0.8  # mostly lymphocytes
    # each nucleus is coloured by its probability
    assert isinstance(layer.colormap, DirectLabelColormap)
    colors = layer.colormap.color_dict
    p = dict(zip(nucleus.ids.tolist(), nucleus.probability.tolist()))
    lo, hi = min(ids, key=p.get), max(ids, key=p.get)
    if p[hi] - p[lo] > 0.2:
        assert not np.allclose(colors[int(lo)], colors[int(hi)])
    # the slider re-thresholds from the stored probabilities: no model call
    calls = widget._predictor.encoder_calls
    before = len(ids)
    widget.threshold_row.slider.setValue(95)
    after = np.unique(layer.data)[1:]
    assert len(after) <= before and all(p[i] >= 0.95 for i in after)
    assert "p ≥ 0.95" in widget.count_label.text()
    widget.threshold_row.slider.setValue(5)
    assert len(np.unique(layer.data)) - 1 >= before
    assert widget._predictor.encoder_calls == calls
    # the exports carry each nucleus' probability
    widget.threshold_row.slider.setValue(50)
    paths = widget.export(tmp_path / "t2")
    with open([q for q in paths if q.suffix == ".csv"][0]) as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(0.5 <= float(r["probability"]) <= 1 for r in rows)
    # a click on background is named in the status line, not silently ignored
    points.add([[2.0, 440.0]])
    _run(qtbot, widget)
    assert "is on background" in widget.status_label.text()


def test_far_off_magnification_is_warned_once_and_the_pixel_size_fixes_it(
    setup, qtbot, monkeypatch
):
    """An image whose nuclei are far smaller than 40× ones: a napari warning naming the dock's
    'Pixel size'; told 0.5 µm there, the model sees the image ×2 and no warning comes."""
    import napari.utils.notifications as notifications

    from sampo_engine.data.synthetic import make_round_nuclei_tile

    viewer, _, widget = setup
    warned: list[str] = []
    monkeypatch.setattr(notifications, "show_warning", warned.append)
    small = viewer.add_image(make_round_nuclei_tile(4, 224), name="20x tile")
    widget.image_combo.select_layer(small)
    points = widget.prompts_layer(create=True)
    points.add([[20.0, 20.0]])
    _run(qtbot, widget)
    assert len(warned) == 1 and "magnification" in warned[0]
    assert "'Pixel size'" in warned[0] and "--um-per-px" not in warned[0]
    points.add([[60.0, 60.0]])  # another click on the same image: no second warning
    _run(qtbot, widget)
    assert len(warned) == 1
    widget.pixel_size_spin.setValue(0.5)
    assert widget.predict_config().um_per_px == 0.5
    _run(qtbot, widget)
    assert widget._predictor.resample == pytest.approx(2.0)  # tiny's own 1 × 0.5 / 0.25
    assert len(warned) == 1, warned
    assert widget.last_prediction.labels.shape == (224, 224)


def test_classes_task_labels_every_nucleus_with_the_clicked_classes(setup, sample, qtbot, tmp_path):
    import csv
    import json

    from napari.utils.colormaps import DirectLabelColormap

    from napari_sampo._segment_classes import class_rgba

    viewer, _, widget = setup
    widget.types_combo.setCurrentIndex(widget.types_combo.findData("off"))  # the dock, not the head
    widget.task_combo.setCurrentIndex(widget.task_combo.findData("classes"))
    assert widget.polarity_button.isHidden() and not widget.class_controls.isHidden()
    points = widget.prompts_layer(create=True)
    widget.next_class_combo.setEditText("lymphocyte")
    points.add(_centres(sample, 3, cls=1))
    # one class is refused with the remedy, and no layer appears
    assert not widget.segment()
    assert "at least two classes" in widget.last_error and "Next point" in widget.last_error
    assert not widget.last_error.startswith(("ValueError", "DataError"))
    assert "SAMPO classes" not in viewer.layers
    widget.next_class_combo.setEditText("tumour")  # a name the user types
    points.add(_centres(sample, 3, cls=2))
    # the points are coloured by class, in the order the classes were first clicked
    face = np.asarray(points.face_color)
    assert np.allclose(face[0], class_rgba(0)) and np.allclose(face[3], class_rgba(1))
    _run(qtbot, widget)  # embeds the image and segments every nucleus with the model
    widget._predictor.nuclei_from_labels(sample.inst, embeddings=False)
    _run(qtbot, widget)
    assert widget.last_error is None
    layer = viewer.layers["SAMPO classes"]
    nucleus = widget.last_prediction.nucleus
    assert nucleus.class_names == ["lymphocyte", "tumour"]
    # every nucleus has one of the two classes, mostly the right one
    table = layer.features
    assert set(table["class"]) <= {"lymphocyte", "tumour"} and len(table) == len(nucleus.ids)
    truth = {i: np.bincount(sample.cls[sample.inst == i]).argmax() for i in table["label"]}
    named = dict(zip(table["label"], table["class"]))
    lymph = [named[i] == "lymphocyte" for i in named if truth[i] == 1]
    tumour = [named[i] == "tumour" for i in named if truth[i] == 2]
    assert np.mean(lymph) > 0.8 and np.mean(tumour) > 0.8
    assert np.all((table["probability"] >= 0.5 - 1e-6) & (table["probability"] <= 1))
    # the result is coloured by class, as the points are
    assert isinstance(layer.colormap, DirectLabelColormap)
    one = int(next(i for i in named if named[i] == "lymphocyte"))
    assert np.allclose(layer.colormap.color_dict[one][:3], class_rgba(0)[:3])
    assert "lymphocyte" in widget.count_label.text() and "tumour" in widget.count_label.text()
    # QuPath GeoJSON and the CSV carry each nucleus' class and probability
    paths = widget.export(tmp_path / "classes")
    with open([q for q in paths if q.suffix == ".csv"][0]) as fh:
        rows = list(csv.DictReader(fh))
    assert {r["class"] for r in rows} == {"lymphocyte", "tumour"}
    geo = json.loads([q for q in paths if q.suffix == ".geojson"][0].read_text())
    names = {f["properties"]["classification"]["name"] for f in geo["features"]}
    assert names == {"lymphocyte", "tumour"}
    # a click without a class is named; "Set for selected" gives it one
    points.features = points.features.assign(**{"class": [*points.features["class"][:-1], ""]})
    assert not widget.segment()
    assert "point(s) 6 have no class" in widget.last_error
    points.selected_data = {5}
    widget.next_class_combo.setEditText("tumour")
    assert widget.set_class_of_selected() == 1
    assert list(points.features["class"])[-1] == "tumour"
    # back to T2: the points are green / red again
    widget.task_combo.setCurrentIndex(widget.task_combo.findData("t2"))
    assert np.allclose(np.asarray(points.face_color)[0][:3], (0, 1, 0))
