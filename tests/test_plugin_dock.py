"""The plugin inside a real napari viewer (Qt, under Xvfb via pytest-xvfb)."""

from __future__ import annotations

import pytest

from napari_sampo._widget_finetune import FinetuneWidget
from napari_sampo._widget_segment import SegmentWidget

pytestmark = pytest.mark.viewer


@pytest.mark.parametrize(
    ("widget_name", "widget_class"),
    [("Segment nuclei (SAMPO)", SegmentWidget), ("Fine-tune on this layer", FinetuneWidget)],
)
def test_widget_docks(make_napari_viewer, widget_name, widget_class) -> None:
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-sampo", widget_name)
    assert isinstance(widget, widget_class)
    # napari hands plugins a PublicOnlyProxy of the viewer, not the viewer itself.
    assert getattr(widget.viewer, "__wrapped__", widget.viewer) is viewer
    assert "not yet available" not in widget.status_label.text()
    assert widget_name in dock.name
    assert any(widget is w for w in viewer.window.dock_widgets.values())


def test_both_widgets_dock_together(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    _, segment = viewer.window.add_plugin_dock_widget("napari-sampo", "Segment nuclei (SAMPO)")
    _, finetune = viewer.window.add_plugin_dock_widget("napari-sampo", "Fine-tune on this layer")
    docked = list(viewer.window.dock_widgets.values())
    assert any(segment is w for w in docked)
    assert any(finetune is w for w in docked)


def test_open_sample(make_napari_viewer) -> None:
    try:
        import sampo_engine.data.synthetic  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "sampo_engine.data.synthetic":
            raise
        pytest.skip("sampo_engine.data.synthetic is not written yet")
    viewer = make_napari_viewer()
    viewer.open_sample("napari-sampo", "synthetic_he")
    assert [layer.name for layer in viewer.layers] == ["synthetic H&E", "synthetic nuclei"]
    image, labels = viewer.layers
    assert image.rgb
    assert labels.data.shape == image.data.shape[:2]
