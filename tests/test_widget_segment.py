"""The "Segment nuclei (SAMPO)" dock in a real viewer (Xvfb), with the tiny random-weight model."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_sampo._image import to_rgb_uint8
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
    viewer = make_napari_viewer()
    image = viewer.add_image(sample.image, name="H&E")
    _, widget = viewer.window.add_plugin_dock_widget("napari-sampo", WIDGET)
    widget.select_model("tiny")
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
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

    # T2 with a class name: a second layer; the embeddings are reused (no encoder call)
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


@pytest.mark.parametrize(
    ("array", "rgb"),
    [
        (np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000, False),
        (np.full((3, 4, 4), 200, np.uint8), True),
        (np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4), False),
    ],
)
def test_gray_and_rgba_become_rgb(array, rgb):
    out = to_rgb_uint8(array, rgb=rgb)
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8
    assert out.max() > 0


def test_worker_errors_are_reported_and_the_widget_recovers(
    setup, sample, qtbot, monkeypatch, tmp_path
):
    from sampo_engine.predict.predictor import TilePredictor

    viewer, _, widget = setup
    _click(widget, sample, negative=False)

    # a user-facing error (no weights downloaded) is a message, not a traceback
    monkeypatch.setenv("SAMPO_CACHE_DIR", str(tmp_path / "empty-cache"))
    widget.select_model("vit_b")
    _run(qtbot, widget)
    assert "sampo-engine weights download" in widget.last_error

    # a bug inside the worker: napari shows it, the viewer and the widget carry on
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(TilePredictor, "predict", boom)
    widget.select_model("tiny")
    with qtbot.capture_exceptions() as raised:  # napari re-raises it for its error dialog
        _run(qtbot, widget)
    assert [type(e[1]).__name__ for e in raised] == ["WorkerCrash"]
    assert "RuntimeError: boom" in widget.status_label.text()
    assert widget.segment_button.isEnabled() and not widget.running
    assert "SAMPO T1 nuclei" not in viewer.layers
