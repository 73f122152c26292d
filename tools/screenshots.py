"""Render the plugin's screenshots for docs/plugin.md into docs/images/*.png.

    python tools/screenshots.py            # starts a virtual display (Xvfb) itself when needed
    python tools/screenshots.py --out DIR  # elsewhere

What it shows, on the synthetic H&E sample tile (1024 x 1024 px) with the ``tiny`` model on the CPU:

1. ``segment.png``   — the Segment dock with 3 positive + 1 negative clicks and a T1 result of
   tiny's *random* weights (the widget in use; the mask itself means nothing yet);
2. ``finetune.png``  — the Fine-tune dock training tiny on the sample's nuclei, its live loss /
   IoU / reward-margin plot after a few steps;
3. ``segment_adapter_selected.png`` — the Segment dock afterwards, the new adapter selected.

Plus the docks alone (``segment_dock.png``, ``finetune_dock.png``). Takes about a minute on a laptop
CPU. Run from the repository root with the package installed (``pip install -e .[napari]``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ensure_display():
    """Start Xvfb through pyvirtualdisplay when there is no display (returns it, or None)."""
    if os.environ.get("DISPLAY") or sys.platform in ("darwin", "win32"):
        return None
    from pyvirtualdisplay import Display

    display = Display(visible=False, size=(1600, 1000), color_depth=24)
    display.start()
    return display


def _wait(app, condition, timeout: float = 600.0) -> None:
    start = time.time()
    while not condition():
        app.processEvents()
        time.sleep(0.02)
        if time.time() - start > timeout:
            raise TimeoutError("the plugin did not finish in time")
    for _ in range(20):  # let the canvas and the docks repaint
        app.processEvents()
        time.sleep(0.01)


def _save(path: Path, image) -> None:
    from imageio.v3 import imwrite

    imwrite(path, image)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def _grab(widget, path: Path) -> None:
    widget.grab().save(str(path))
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def _zoom(viewer, centres, size: float = 420.0) -> None:
    """Centre the canvas on the clicks, about ``size`` px of the image across."""
    import numpy as np

    viewer.scene.camera.center = tuple(np.mean(centres, axis=0))
    try:
        canvas_h = float(viewer._canvas_size[0])  # screenshots only: private is fine here
    except Exception:  # noqa: BLE001
        canvas_h = 900.0
    viewer.scene.camera.zoom = canvas_h / size


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--steps", type=int, default=30, help="fine-tuning steps to show")
    parser.add_argument(
        "--adapter",
        type=Path,
        default=None,
        help="segment with this trained adapter bundle (e.g. runs/demo/adapter from the main job) "
        "instead of tiny's random weights; also renders a T2 result (segment_t2.png)",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SAMPO_ADAPTER_DIR", tempfile.mkdtemp(prefix="sampo-adapters-"))

    display = _ensure_display()
    try:
        return _render(args)
    finally:
        if display is not None:
            display.stop()


def _render_t2(app, viewer, segment, inst, truth, args) -> None:
    """T2 with the trained adapter: click 3 nuclei of one class, get all nuclei of that class."""
    import numpy as np
    from scipy import ndimage as ndi

    cls = (
        np.asarray(viewer.layers["synthetic classes"].data)
        if "synthetic classes" in viewer.layers
        else None
    )
    if cls is None:
        from sampo_engine.data.synthetic import synthetic_tile

        cls = synthetic_tile().cls
    target = 1  # lymphocyte-like: small, dark, round
    ids = [
        i
        for i in np.unique(inst[:400, :400])
        if i and np.bincount(cls[inst == i]).argmax() == target
    ][:3]
    others = [
        i
        for i in np.unique(inst[:400, :400])
        if i and np.bincount(cls[inst == i]).argmax() != target
    ][:2]
    points = segment.new_prompts_layer()
    points.add(np.array(ndi.center_of_mass(inst > 0, inst, ids)))
    segment.toggle_polarity()
    points.add(np.array(ndi.center_of_mass(inst > 0, inst, others)))
    segment.toggle_polarity()
    points.mode = "pan_zoom"
    segment.task_combo.setCurrentIndex(1)
    for layer in viewer.layers:
        if layer.name.startswith("SAMPO T1"):
            layer.visible = False
    assert segment.segment(), segment.last_error
    _wait(app, lambda: not segment.running)
    _save(args.out / "segment_t2.png", viewer.screenshot(canvas_only=False, flash=False))


def _render(args) -> int:
    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication
    from scipy import ndimage as ndi

    viewer = napari.Viewer(title="napari-sampo")
    viewer.window.resize(1500, 950)
    app = QApplication.instance()
    viewer.open_sample("napari-sampo", "synthetic_he")
    image, truth = viewer.layers["synthetic H&E"], viewer.layers["synthetic nuclei"]
    truth.visible = False
    seg_dock, segment = viewer.window.add_plugin_dock_widget(
        "napari-sampo", "Segment nuclei (SAMPO)"
    )
    if args.adapter is not None:
        assert segment.select_adapter(args.adapter), segment.last_error
    else:
        segment.select_model("tiny")

    # 3 positive clicks on nuclei in the upper left, 1 negative on background
    inst = np.asarray(truth.data)
    ids = [i for i in np.unique(inst[:300, :300]) if i][:3]
    centres = np.array(ndi.center_of_mass(inst > 0, inst, ids))
    points = segment.new_prompts_layer()
    points.add(centres)
    segment.toggle_polarity()
    background = np.argwhere(ndi.distance_transform_edt(inst[:300, :300] == 0) > 12)
    points.add(background[len(background) // 2 : len(background) // 2 + 1].astype(float))
    segment.toggle_polarity()
    points.mode = "pan_zoom"
    assert segment.segment(), segment.last_error
    _wait(app, lambda: not segment.running)
    _zoom(viewer, centres)
    _save(args.out / "segment.png", viewer.screenshot(canvas_only=False, flash=False))
    _grab(segment, args.out / "segment_dock.png")
    if args.adapter is not None:
        _render_t2(app, viewer, segment, inst, truth, args)

    # fine-tune tiny on the sample's nuclei for a few steps
    seg_dock.hide()
    _, finetune = viewer.window.add_plugin_dock_widget("napari-sampo", "Fine-tune on this layer")
    truth.visible = True
    viewer.layers["SAMPO T1 nuclei"].visible = False
    finetune.image_combo.select_layer(image)
    finetune.labels_combo.select_layer(truth)
    finetune.set_value("model", "tiny")
    finetune.set_value("task", "t1")
    finetune.set_value("epochs", 100)
    finetune.set_value("max_steps", args.steps)
    finetune.set_value("device", "cpu")
    finetune.name_edit.setText("sample-demo")
    assert finetune.start(), finetune.status_label.text()
    _wait(app, lambda: not finetune.running)
    _save(args.out / "finetune.png", viewer.screenshot(canvas_only=False, flash=False))
    _grab(finetune, args.out / "finetune_dock.png")

    # the adapter just trained is now selected in the Segment dock
    _grab(segment, args.out / "segment_adapter_selected.png")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
