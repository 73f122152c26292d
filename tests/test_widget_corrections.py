"""Learning from corrections in a real viewer (Xvfb): edit a Segment result, save the correction,
list, delete, and see it offered by "Fine-tune on this layer"."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from sampo_engine.corrections.store import CorrectionStore

pytestmark = pytest.mark.viewer

TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def sample():
    from sampo_engine.data.synthetic import make_synthetic_sample

    return make_synthetic_sample(256, seed=3)


def _dock(viewer, name):
    return viewer.window.add_plugin_dock_widget("napari-sampo", name)[1]


def _segment_dock_on(make_napari_viewer, sample, tmp_path, monkeypatch):
    """A viewer with the sample image and a Segment dock set to tiny on the CPU."""
    monkeypatch.setenv("SAMPO_ADAPTER_DIR", str(tmp_path / "adapters"))
    monkeypatch.delenv("SAMPO_CORRECTIONS_DIR", raising=False)
    viewer = make_napari_viewer()
    viewer.add_image(sample.image, name="H&E")
    segment = _dock(viewer, "Segment nuclei (SAMPO)")
    segment.select_model("tiny")
    segment.device_combo.setCurrentIndex(segment.device_combo.findData("cpu"))
    return viewer, segment


def test_edit_save_list_delete_and_offer_to_finetune(
    make_napari_viewer, sample, tmp_path, monkeypatch, qtbot
):
    viewer, segment = _segment_dock_on(make_napari_viewer, sample, tmp_path, monkeypatch)
    finetune = _dock(viewer, "Fine-tune on this layer")
    assert finetune.corrections_label.text() == "0 correction records"
    assert not finetune.corrections_check.isEnabled()

    ids = np.unique(sample.inst[sample.inst > 0])[:2]
    points = segment.prompts_layer(create=True)
    points.add(np.array(ndi.center_of_mass(sample.inst > 0, sample.inst, ids)))
    assert segment.segment(), segment.last_error
    qtbot.waitUntil(lambda: not segment.running, timeout=TIMEOUT_MS)
    layer = viewer.layers["SAMPO T1 nuclei"]
    original = np.array(layer.data)
    assert segment.correction is not None and not segment.correction.edited
    assert segment.save_correction() is None  # unchanged: nothing to save

    # the user paints a nucleus the model missed and erases a stripe
    layer.brush_size = 9
    layer.paint((40, 40), 77)
    layer.paint((120, 120), 0)
    assert segment.correction.edited
    assert "unsaved edits" in segment.corrections_panel.state_label.text()
    record_id = segment.save_correction()
    assert record_id
    store = CorrectionStore(tmp_path / "adapters" / "corrections", create=False)
    assert [e["id"] for e in store.list()] == [record_id]
    assert segment.corrections_panel.list.count() == 1
    assert segment.corrections_panel.state_label.text() == "1 correction record"
    record = store.load(record_id)
    s = record.shape
    top, left = record.origin
    assert min(s) >= min(224, *sample.inst.shape)  # padded to the model input size
    assert np.array_equal(record.original, original[top : top + s[0], left : left + s[1]] > 0)
    assert record.corrected[40 - top, 40 - left]
    assert record.task == "t1" and len(record.points) == 2 and record.model["model"] == "tiny"

    # the fine-tune dock offers it
    assert finetune.corrections_label.text() == "1 correction record"
    assert finetune.corrections_check.isEnabled() and finetune.corrections_check.isChecked()
    config = finetune.build_config(str(tmp_path / "out"), "x", 0.0, "nuclei")
    assert config.corrections == str(tmp_path / "adapters" / "corrections")
    finetune.corrections_check.setChecked(False)
    assert finetune.build_config(str(tmp_path / "out"), "x", 0.0, "nuclei").corrections == ""

    # one record per result: saving again updates it, and unsaved edits are saved (into it)
    # when a new run replaces the layer
    layer.paint((60, 200), 78)
    assert segment.save_correction() == record_id and len(store.list()) == 1
    layer.paint((200, 60), 79)
    assert segment.segment(), segment.last_error
    qtbot.waitUntil(lambda: not segment.running, timeout=TIMEOUT_MS)
    assert [e["id"] for e in store.list()] == [record_id]
    again = store.load(record_id)
    assert again.corrected_instances[200 - again.origin[0], 60 - again.origin[1]] == 79
    assert not segment.correction.edited  # a new session for the new result
    layer.paint((100, 30), 80)
    assert segment.save_correction() not in (None, record_id)
    assert len(store.list()) == 2 and finetune.corrections_label.text() == "2 correction records"

    # delete from the list
    segment.corrections_panel.list.item(0).setSelected(True)
    assert segment.corrections_panel.delete_selected() == 1
    assert len(store.list()) == 1 and segment.corrections_panel.list.count() == 1
    assert finetune.corrections_label.text() == "1 correction record"


def test_unsaved_edits_survive_layer_deletion_and_quit(
    make_napari_viewer, sample, tmp_path, monkeypatch, qtbot
):
    from qtpy.QtWidgets import QApplication

    viewer, segment = _segment_dock_on(make_napari_viewer, sample, tmp_path, monkeypatch)
    ids = np.unique(sample.inst[sample.inst > 0])[:2]
    segment.prompts_layer(create=True).add(
        np.array(ndi.center_of_mass(sample.inst > 0, sample.inst, ids))
    )
    store = CorrectionStore(tmp_path / "adapters" / "corrections")

    def run():
        assert segment.segment(), segment.last_error
        qtbot.waitUntil(lambda: not segment.running, timeout=TIMEOUT_MS)
        return viewer.layers["SAMPO T1 nuclei"]

    # the user edits, never presses Save, and deletes the layer: the edit is kept
    layer = run()
    layer.brush_size = 7
    layer.paint((50, 50), 91)
    viewer.layers.remove(layer)
    assert len(store.list()) == 1
    # edits, then napari quits
    layer = run()
    layer.paint((90, 90), 92)
    QApplication.instance().aboutToQuit.emit()
    assert len(store.list()) == 2
    assert not segment.correction.edited  # saved, so a second quit signal writes nothing new
    QApplication.instance().aboutToQuit.emit()
    assert len(store.list()) == 2
