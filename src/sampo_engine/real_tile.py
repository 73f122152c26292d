"""The main job's real-tissue stages, on the H&E tile shipped with the package (BRCA-M2C,
BSD-3-Clause) and the model shipped with it (``nuclei-small``, no download):

- :func:`segment_real_tile`: T1 from three clicks, then T2 by nucleus from three lymphocytes and
  three other nuclei; TIFF, GeoJSON, CSV and an overlay PNG; how well the nuclei match the
  experts' dots.
- :func:`finetune_on_real_tile`: a short SAMPO fine-tune (LoRA) of the shipped model on the
  tile's left half, its labels the T1 nuclei classed by the experts' dots
  (:mod:`sampo_engine.data.pseudo`), and the right half's T2 answer by the decoder before and
  after, scored against the dots there.

The tile is 20×; both stages resample it by 2 to the model's 40×. Points are (x, y).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def real_tile_inputs():
    """(tile, image, dots, order): the shipped tile, its image resampled ×2 (H, W, 3) uint8, the
    experts' dots on it (N, 2) (x, y), and the dots' order by distance to the image centre."""
    from skimage.transform import rescale

    from sampo_engine.samples import brca_tile

    tile = brca_tile()
    image = rescale(tile.image, 2, order=1, channel_axis=2, preserve_range=True)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    dots = tile.dots_xy * 2 + 0.5  # (x, y) on the resampled grid
    order = np.argsort(((dots - np.array(image.shape[1::-1]) / 2) ** 2).sum(1))
    return tile, image, dots, order


def segment_real_tile(out: Path, device: str = "auto") -> dict:
    """Segment the real tile (module docstring); returns the printed numbers and the T1 labels.

    The tile is 20×; it is resampled by 2 to the model's 40×. Clicks: the experts' dots nearest
    the tile's centre — three of any class for T1; three lymphocytes and three others for T2.
    """
    import time

    from sampo_engine.eval.nucleus_match import point_agreement
    from sampo_engine.models.availability import SHIPPED, default_model, model_state
    from sampo_engine.predict.export import write_prediction
    from sampo_engine.predict.predictor import PredictConfig, TilePredictor

    name = default_model()
    if model_state(name).state != SHIPPED:
        name = "nuclei-small"  # the real-tile stage shows the shipped model, whatever is cached
    tile, image, dots, order = real_tile_inputs()
    lymph = tile.dot_classes == 1
    folder = out / "real_tile"
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    predictor = TilePredictor(PredictConfig(model=name, device=device))
    predictor.set_image(image)
    t1 = predictor.predict(dots[order[:3]], np.ones(3, np.int64), task="t1")
    pos = [i for i in order if lymph[i]][:3]
    neg = [i for i in order if not lymph[i]][:3]
    t2 = predictor.predict(
        dots[pos + neg], np.array([1] * 3 + [0] * 3), task="t2", class_name="lymphocyte"
    )
    seconds = time.perf_counter() - start
    rows = np.clip(np.round(dots[:, 1]).astype(int), 0, image.shape[0] - 1)
    cols = np.clip(np.round(dots[:, 0]).astype(int), 0, image.shape[1] - 1)
    inside = float((t1.labels[rows, cols] > 0).mean())
    agree = point_agreement(t2.labels, dots, tile.dot_classes, 1)
    for tag, result, class_name in (("t1", t1, None), ("t2_lymphocyte", t2, "lymphocyte")):
        paths = {
            "labels": folder / f"{tag}_labels.tif",
            "geojson": folder / f"{tag}.geojson",
            "csv": folder / f"{tag}.csv",
        }
        write_prediction(
            paths, result.labels, image=image, class_name=class_name, nucleus=result.nucleus,
            task=result.task,
        )  # fmt: skip
    _write_overlay(
        folder / "overlay.png", image, t1.labels, t2.labels, dots[order[:3]], dots[pos + neg]
    )
    numbers = {
        "model": name,
        "t1_nuclei": t1.num_nuclei,
        "dots_inside_t1": inside,
        "t2_nuclei": t2.num_nuclei,
        "t2_precision": agree["precision"],
        "t2_coverage": agree["coverage"],
        "lymphocyte_dots": agree["class_points"],
        "seconds": seconds,
        "t1_labels": t1.labels,  # (H, W) on the resampled image, for the fine-tune stage
    }
    print(
        f"real H&E tile (BRCA-M2C, {tile.image.shape[1]}×{tile.image.shape[0]} px at 20×, "
        f"resampled to 40×), model {name} (shipped, no download), {seconds:.1f} s:\n"
        f"  T1 from 3 clicks: {t1.num_nuclei} nuclei; {100 * inside:.0f} % of the "
        f"{len(dots)} nuclei the experts marked lie inside one\n"
        f"  T2 (3 lymphocytes + 3 others, by nucleus): {t2.num_nuclei} nuclei; of those holding "
        f"an expert dot {100 * agree['precision']:.0f} % are lymphocytes; "
        f"{100 * agree['coverage']:.0f} % of the {agree['class_points']} lymphocytes found\n"
        f"  outputs: {folder} (labels TIFF, GeoJSON, CSV; overlay.png)"
    )
    return numbers


def _write_overlay(path: Path, image, t1_labels, t2_labels, t1_clicks, t2_clicks) -> None:
    """A side-by-side PNG: T1 outlines (yellow) and T2 nuclei (red) over the tile, clicks as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    from sampo_engine.utils.atomic import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(12, 6.2), dpi=110)
    for ax, labels, clicks, title, colour in (
        (axes[0], t1_labels, t1_clicks, f"T1: {len(np.unique(t1_labels)) - 1} nuclei", (1, 0.9, 0)),
        (axes[1], t2_labels, t2_clicks, "T2 by nucleus: lymphocytes", (1, 0.1, 0.1)),
    ):
        shown = image.astype(np.float32) / 255
        inside = labels > 0
        shown[inside] = 0.55 * shown[inside] + 0.45 * np.asarray(colour, np.float32)
        shown[find_boundaries(labels, mode="thick")] = colour
        ax.imshow(shown)
        n = len(clicks)
        ax.scatter(clicks[:, 0], clicks[:, 1], s=40, c=["lime"] * min(n, 3) + ["red"] * max(n - 3, 0),
                   edgecolors="white")  # fmt: skip
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _half_clicks(dots, classes, centre, lymph_class: int = 1):
    """Three lymphocyte dots and three others nearest ``centre`` (x, y): (6, 2) and labels."""
    order = np.argsort(((dots - centre) ** 2).sum(1))
    pos = [i for i in order if classes[i] == lymph_class][:3]
    neg = [i for i in order if classes[i] != lymph_class][:3]
    return dots[pos + neg], np.array([1] * len(pos) + [0] * len(neg), np.int64)


def _t2_by_decoder(image, clicks, labels, dots, classes, device, adapter: str = "") -> dict:
    """The decoder's T2 answer on ``image`` from the clicks, scored against the dots."""
    from sampo_engine.eval.nucleus_match import point_agreement
    from sampo_engine.predict.predictor import PredictConfig, TilePredictor

    config = PredictConfig(model="nuclei-small", adapter=adapter, device=device, t2_mode="decoder")
    predictor = TilePredictor(config)
    predictor.set_image(image)
    result = predictor.predict(clicks, labels, task="t2")
    return point_agreement(result.labels, dots, classes, 1)


def finetune_on_real_tile(
    out: Path,
    t1_labels: np.ndarray,
    device: str = "auto",
    threads: int = 0,
    seed: int = 0,
    steps: int = 40,
) -> dict:
    """Fine-tune the shipped model with SAMPO on the tile's left half and score T2 on its right.

    Labels of the left half: the nuclei of ``t1_labels`` ((H, W), the T1 answer on the resampled
    tile) classed by the experts' dots inside them; the adapter (LoRA rank 8, ``steps`` steps of
    batch 2, T2) goes to ``OUT/real_tile/adapter``. Before and after, the decoder answers T2 on
    the right half from 3 lymphocytes + 3 others; returns and prints precision and coverage
    against the right half's dots.
    """
    import time

    from sampo_engine.data.folder import write_folder
    from sampo_engine.data.pseudo import pseudo_labels_from_points
    from sampo_engine.data.sample import NucleiSample
    from sampo_engine.models.bundle import is_bundle
    from sampo_engine.samples import CLASS_NAMES
    from sampo_engine.train.config import TrainConfig
    from sampo_engine.train.trainer import Trainer

    tile, image, dots, _ = real_tile_inputs()
    classes = tile.dot_classes
    half = image.shape[1] // 2
    left = dots[:, 0] < half - 0.5
    pseudo = pseudo_labels_from_points(t1_labels[:, :half], dots[left], classes[left])
    folder = out / "real_tile"
    write_folder(
        [NucleiSample(image[:, :half], pseudo.inst, pseudo.cls, "brca_left_half")],
        folder / "train_left_half",
        class_names={0: "background", **CLASS_NAMES},
    )
    right_image = image[:, half:]
    right_dots = dots[~left] - np.array([half, 0.0])
    right_classes = classes[~left]
    centre = np.array(right_image.shape[1::-1], np.float64) / 2
    clicks, labels = _half_clicks(right_dots, right_classes, centre)
    before = _t2_by_decoder(right_image, clicks, labels, right_dots, right_classes, device)
    start = time.perf_counter()
    adapter = folder / "adapter"
    config = TrainConfig(
        data=str(folder / "train_left_half"), out=str(adapter), model="nuclei-small", task="t2",
        lora_rank=8, epochs=1000, max_steps=steps, batch_size=2, lr=1e-3, warmup_steps=5,
        val_fraction=0.0, seed=seed, device=device, threads=threads, name="real-tile-left-half",
        overwrite=is_bundle(adapter) or (adapter / "sampo_run.json").exists(),
    )  # fmt: skip
    Trainer(config, log=lambda *a, **k: None).run()
    seconds = time.perf_counter() - start
    after = _t2_by_decoder(
        right_image, clicks, labels, right_dots, right_classes, device, adapter=str(adapter)
    )
    numbers = {
        "pseudo_nuclei": pseudo.kept,
        "steps": steps,
        "seconds": seconds,
        "precision_before": before["precision"],
        "precision_after": after["precision"],
        "coverage_before": before["coverage"],
        "coverage_after": after["coverage"],
        "lymphocyte_dots": after["class_points"],
    }
    print(
        f"  SAMPO fine-tune of nuclei-small on the left half ({pseudo.kept} nuclei classed by "
        f"the experts' dots; LoRA, {steps} steps, {seconds:.0f} s; adapter: {adapter}):\n"
        f"  right half, T2 by the decoder from 3 + 3 clicks: of the nuclei holding a dot "
        f"{100 * before['precision']:.0f} % → {100 * after['precision']:.0f} % are lymphocytes; "
        f"{100 * before['coverage']:.0f} % → {100 * after['coverage']:.0f} % of its "
        f"{after['class_points']} lymphocytes found"
    )
    return numbers
