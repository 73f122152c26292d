"""The README's pictures on real tissue: the plugin on the shipped BRCA-M2C tile, T1, T2 and
Classes.

    python tools/real_tile_screenshots.py     # docs/images/real_t1.png, real_t2.png, real_classes.png

Opens napari's sample "Real H&E tile (BRCA-M2C breast)" (resampled to 40×), with the default
model (the shipped ``nuclei-small``, no download); T1 from three clicks on nuclei the experts
marked; T2 by nucleus from three lymphocytes (positive) and three tumour/stromal nuclei
(negative). Prints the numbers that go with the pictures: nuclei found, the share of the experts'
dots inside a nucleus, and for T2 the share of picked nuclei (holding a dot) that are
lymphocytes and the share of lymphocyte dots picked. Classes: three nuclei of each of the
experts' three classes clicked under their names; printed: per class, the share of the nuclei
given that class (holding a dot) whose dot is of it. Starts a virtual display when needed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from screenshots import _ensure_display, _wait  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args(argv)
    display = _ensure_display()
    os.environ.setdefault("SAMPO_ADAPTER_DIR", str(Path("/tmp") / "sampo_screens_adapters"))
    import napari
    from qtpy.QtWidgets import QApplication

    from sampo_engine.eval.nucleus_match import point_agreement

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    viewer.open_sample("napari-sampo", "brca_he")
    image, dots = viewer.layers[0], viewer.layers[1]
    _, widget = viewer.window.add_plugin_dock_widget("napari-sampo", "Segment nuclei (SAMPO)")
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    app = QApplication.instance()
    classes = np.asarray(dots.features["class"])
    rc = np.asarray(dots.data)
    xy = rc[:, ::-1]
    cls_id = np.array([{"lymphocyte": 1, "tumour": 2, "stromal": 3}[c] for c in classes])
    rng = np.random.default_rng(0)
    centre = np.array(image.data.shape[:2]) / 2
    near = np.argsort(((rc - centre) ** 2).sum(1))  # click near the middle, as a user would

    points = widget.prompts_layer(create=True)
    points.add(rc[near[:3]])
    start = time.perf_counter()
    widget.segment()
    _wait(app, lambda: not widget.running)
    t1 = widget.last_prediction
    t1_seconds = time.perf_counter() - start
    inside = point_agreement(t1.labels, xy, cls_id, 1)
    hit = (t1.labels[np.round(rc[:, 0]).astype(int), np.round(rc[:, 1]).astype(int)] > 0).mean()
    viewer.reset_view()
    _wait(app, lambda: True)
    args.out.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.out / "real_t1.png"), canvas_only=False)
    print(
        f"T1: {t1.num_nuclei} nuclei, {100 * hit:.0f} % of the 315 expert dots inside one, "
        f"{t1_seconds:.1f} s (first run: model load + embedding)"
    )

    points.data = np.zeros((0, 2))
    lymph = [i for i in near if cls_id[i] == 1][:3]
    other = [i for i in near if cls_id[i] != 1][:3]
    points.add(rc[lymph])
    widget.toggle_polarity()
    points.add(rc[other])
    widget.toggle_polarity()
    widget.task_combo.setCurrentIndex(widget.task_combo.findData("t2"))
    widget.class_combo.setCurrentText("lymphocyte")
    start = time.perf_counter()
    widget.segment()
    _wait(app, lambda: not widget.running)
    t2 = widget.last_prediction
    agree = point_agreement(t2.labels, xy, cls_id, 1)
    viewer.layers["SAMPO T1 nuclei"].visible = False
    _wait(app, lambda: True)
    viewer.screenshot(str(args.out / "real_t2.png"), canvas_only=False)
    print(
        f"T2 (lymphocytes, by nucleus): {t2.num_nuclei} nuclei; of those holding an expert dot "
        f"{100 * agree['precision']:.0f} % are lymphocytes; {100 * agree['coverage']:.0f} % of "
        f"the {agree['class_points']} lymphocyte dots picked; {time.perf_counter() - start:.1f} s"
    )
    # several classes at once: three clicks of each class, under its name
    points.data = np.zeros((0, 2))
    widget.task_combo.setCurrentIndex(widget.task_combo.findData("classes"))
    names = {1: "lymphocyte", 2: "tumour", 3: "stromal"}
    for c, name in names.items():
        widget.next_class_combo.setEditText(name)
        points.add(rc[[i for i in near if cls_id[i] == c][:3]])
    start = time.perf_counter()
    widget.segment()
    _wait(app, lambda: not widget.running)
    labelled = widget.last_prediction
    viewer.layers["SAMPO T2 lymphocyte"].visible = False
    _wait(app, lambda: True)
    viewer.screenshot(str(args.out / "real_classes.png"), canvas_only=False)
    nucleus = labelled.nucleus
    shares = []
    for k, name in enumerate(nucleus.class_names):
        from sampo_engine.predict.nucleus_classes import only_ids

        c = {v: i for i, v in names.items()}[name]
        agree = point_agreement(only_ids(labelled.labels, nucleus.ids[nucleus.classes == k]),
                                xy, cls_id, c)  # fmt: skip
        shares.append(f"{name} {100 * agree['precision']:.0f} %")
    print(
        f"Classes: {labelled.num_nuclei} nuclei labelled; of those given a class and holding a "
        f"dot, the share of that class: {', '.join(shares)}; {time.perf_counter() - start:.1f} s"
    )
    del rng, inside
    viewer.close()
    if display is not None:
        display.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
