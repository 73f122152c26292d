"""Exports of instance label maps: TIFF, QuPath GeoJSON, per-nucleus CSV."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile
from skimage.draw import disk, ellipse

from sampo_engine.errors import DataError
from sampo_engine.predict.export import (
    labels_to_geojson,
    nucleus_table,
    prediction_classes,
    write_csv,
    write_geojson,
    write_instance_tiff,
    write_prediction,
)


def _toy_labels() -> np.ndarray:
    labels = np.zeros((64, 80), np.int32)
    labels[disk((15, 20), 8)] = 3
    labels[ellipse(40, 50, 6, 12, rotation=0.4)] = 7
    labels[50:60, 5:12] = 12  # a rectangle: 10 rows × 7 cols
    labels[2, 70] = 20  # a single pixel
    return labels


def _segments_cross(p1, p2, q1, q2) -> bool:
    def orient(a, b, c):
        return np.sign((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    return (
        orient(p1, p2, q1) * orient(p1, p2, q2) < 0 and orient(q1, q2, p1) * orient(q1, q2, p2) < 0
    )


def _check_ring(ring) -> float:
    """Assert a GeoJSON linear ring is closed, non-degenerate and simple; return its area."""
    pts = np.asarray(ring, float)
    assert pts.ndim == 2 and pts.shape[1] == 2 and len(pts) >= 4
    np.testing.assert_array_equal(pts[0], pts[-1])
    assert len(np.unique(pts[:-1], axis=0)) == len(pts) - 1  # no repeated vertex
    n = len(pts) - 1
    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # adjacent through the closing vertex
            assert not _segments_cross(pts[i], pts[i + 1], pts[j], pts[j + 1])
    x, y = pts[:, 0], pts[:, 1]
    area = 0.5 * (np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))
    assert area > 0  # counter-clockwise exterior (RFC 7946)
    return area


def _polygon_centroid(ring) -> tuple[float, float]:
    pts = np.asarray(ring, float)
    x, y = pts[:, 0], pts[:, 1]
    cross = x[:-1] * y[1:] - x[1:] * y[:-1]
    area = cross.sum() / 2
    return (
        ((x[:-1] + x[1:]) * cross).sum() / (6 * area),
        ((y[:-1] + y[1:]) * cross).sum() / (6 * area),
    )


def test_geojson_round_trip_one_valid_feature_per_label(tmp_path):
    labels = _toy_labels()
    path = write_geojson(
        tmp_path / "out" / "nuclei.geojson",
        labels,
        class_names={1: "Neoplastic", 2: "Inflammatory"},
        label_classes={3: 1, 7: 2, 12: 5},
    )
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection"
    features = data["features"]
    assert len(features) == 4
    by_label = {f["properties"]["measurements"]["label"]: f for f in features}
    assert set(by_label) == {3, 7, 12, 20}
    for label, feature in by_label.items():
        assert feature["type"] == "Feature"
        assert feature["properties"]["objectType"] == "detection"
        assert feature["geometry"]["type"] == "Polygon"
        (ring,) = feature["geometry"]["coordinates"]
        area = _check_ring(ring)
        pixels = int((labels == label).sum())
        if pixels > 50:
            assert area == pytest.approx(pixels, rel=0.08)
        else:
            assert 0 < area <= pixels
    assert by_label[3]["properties"]["classification"]["name"] == "Neoplastic"
    assert by_label[7]["properties"]["classification"]["name"] == "Inflammatory"
    assert by_label[12]["properties"]["classification"]["name"] == "class 5"
    color = by_label[3]["properties"]["classification"]["color"]
    assert len(color) == 3 and all(0 <= c <= 255 for c in color)
    assert "classification" not in by_label[20]["properties"]
    assert not list(tmp_path.glob("out/.*"))  # no temporaries left


def test_geojson_coordinates_are_x_y_pixel_corners_with_offset():
    labels = np.zeros((20, 30), np.int32)
    labels[4:8, 10:20] = 1  # rows 4..7, cols 10..19
    (feature,) = labels_to_geojson(labels, offset=(100, 1000))["features"]
    ring = np.asarray(feature["geometry"]["coordinates"][0])
    # QuPath convention: the block covers x ∈ [110, 120], y ∈ [1004, 1008]; the traced outline
    # cuts each corner by half a pixel.
    assert ring[:, 0].min() == pytest.approx(110) and ring[:, 0].max() == pytest.approx(120)
    assert ring[:, 1].min() == pytest.approx(1004) and ring[:, 1].max() == pytest.approx(1008)
    assert _check_ring(ring) == pytest.approx(40 - 0.5)


def test_geojson_split_label_becomes_multipolygon_and_holes_are_filled():
    labels = np.zeros((30, 30), np.int32)
    labels[2:6, 2:6] = 5
    labels[20:25, 20:25] = 5  # a second piece of the same label
    labels[10:19, 10:19] = 6
    labels[14, 14] = 0  # a hole
    features = labels_to_geojson(labels)["features"]
    assert len(features) == 2
    multi = next(f for f in features if f["properties"]["measurements"]["label"] == 5)
    assert multi["geometry"]["type"] == "MultiPolygon"
    areas = sorted(_check_ring(poly[0]) for poly in multi["geometry"]["coordinates"])
    assert areas == pytest.approx([16 - 0.5, 25 - 0.5])
    holed = next(f for f in features if f["properties"]["measurements"]["label"] == 6)
    assert len(holed["geometry"]["coordinates"]) == 1  # exterior only
    assert _check_ring(holed["geometry"]["coordinates"][0]) == pytest.approx(81 - 0.5)


def test_geojson_of_empty_map():
    assert labels_to_geojson(np.zeros((10, 10), np.uint16)) == {
        "type": "FeatureCollection",
        "features": [],
    }


def test_csv_one_row_per_label_with_centroids(tmp_path):
    labels = _toy_labels()
    image = np.zeros(labels.shape + (3,), np.uint8)
    image[labels == 12] = 200  # gray 200 (weights sum to 1)
    path = write_csv(
        tmp_path / "nuclei.csv",
        labels,
        image=image,
        label_classes={3: 1},
        class_names={1: "Neoplastic"},
        offset=(1000, 2000),
    )
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["label"]) for r in rows] == [3, 7, 12, 20]
    rect = rows[2]
    # rows 50..59 → y 54.5, cols 5..11 → x 8
    assert float(rect["centroid_x"]) == pytest.approx(1000 + 8.0)
    assert float(rect["centroid_y"]) == pytest.approx(2000 + 54.5)
    assert int(rect["area"]) == 70
    assert float(rect["mean_intensity"]) == pytest.approx(200.0)
    assert float(rows[0]["mean_intensity"]) == 0.0
    assert rows[0]["class"] == "Neoplastic" and rows[0]["class_id"] == "1"
    assert rect["class"] == "" and rect["class_id"] == ""
    disc = rows[0]
    assert float(disc["centroid_x"]) == pytest.approx(1020) and float(disc["eccentricity"]) < 0.2
    assert float(disc["perimeter"]) == pytest.approx(2 * np.pi * 8, rel=0.15)


def test_table_centroids_match_geojson_centroids_plus_half_pixel():
    labels = _toy_labels()
    table = {row["label"]: row for row in nucleus_table(labels)}
    assert table[20]["mean_intensity"] is None and table[20]["area"] == 1
    for feature in labels_to_geojson(labels, simplify=0)["features"]:
        label = feature["properties"]["measurements"]["label"]
        if table[label]["area"] < 50:
            continue
        cx, cy = _polygon_centroid(feature["geometry"]["coordinates"][0])
        assert cx == pytest.approx(table[label]["centroid_x"] + 0.5, abs=0.1)
        assert cy == pytest.approx(table[label]["centroid_y"] + 0.5, abs=0.1)


def test_instance_tiff_dtype_and_round_trip(tmp_path):
    labels = _toy_labels()
    path = write_instance_tiff(tmp_path / "labels.tif", labels)
    back = tifffile.imread(path)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, labels)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
    big = labels.astype(np.int64)
    big[big == 12] = 70000
    back = tifffile.imread(write_instance_tiff(tmp_path / "big.tif", big))
    assert back.dtype == np.uint32 and back.max() == 70000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tif", "labels.tif"]


def test_bad_label_maps_are_refused(tmp_path):
    with pytest.raises(DataError, match="integer labels"):
        labels_to_geojson(np.zeros((4, 4), np.float32))
    with pytest.raises(DataError, match="negative"):
        write_instance_tiff(tmp_path / "x.tif", -np.ones((4, 4), np.int32))
    with pytest.raises(DataError, match=r"\(H, W\)"):
        nucleus_table(np.zeros((2, 4, 4), np.int32))
    with pytest.raises(DataError, match="does not match"):
        nucleus_table(np.ones((4, 4), np.int32), image=np.zeros((5, 4)))
    assert not list(tmp_path.iterdir())


def test_eccentricity_matches_regionprops():
    from skimage.measure import regionprops_table

    labels = _toy_labels()
    labels[ellipse(20, 60, 3, 9, rotation=1.1)] = 30
    ours = [row["eccentricity"] for row in nucleus_table(labels)]
    ref = regionprops_table(labels, properties=["label", "eccentricity"])["eccentricity"]
    np.testing.assert_allclose(ours, ref, atol=1e-9)


class _Nucleus:
    """The part of a NucleusClasses the exports read."""

    def __init__(self, ids, classes=None, class_names=(), probability=None):
        self.ids = np.asarray(ids)
        self.classes = np.asarray(classes if classes is not None else [0] * len(ids))
        self.class_names = list(class_names)
        self._probability = dict(probability or {})

    def label_probability(self) -> dict[int, float]:
        return dict(self._probability)


def test_prediction_classes_for_each_kind_of_answer():
    labels = _toy_labels()
    assert prediction_classes(labels) == (None, None, None)  # T1: no class
    assert prediction_classes(labels, nucleus=_Nucleus([3, 7])) == (None, None, None)
    label_classes, names, probability = prediction_classes(labels, class_name="Lymphocyte")
    assert label_classes == {3: 1, 7: 1, 12: 1, 20: 1} and names == {1: "Lymphocyte"}
    assert probability is None
    # T2 by nucleus: labels painted in later (20 here) have no probability
    nucleus = _Nucleus([3, 7, 12, 99], probability={3: 0.9, 7: 0.6, 12: 0.51, 99: 0.7})
    _, _, probability = prediction_classes(labels, "T2 target", nucleus)
    assert probability == {3: 0.9, 7: 0.6, 12: 0.51}
    # class labelling: class k of the answer is id k + 1, for every nucleus it classified
    nucleus = _Nucleus([3, 7], [1, 0], ["tumour", "lymphocyte"], {3: 0.8, 7: 0.55})
    label_classes, names, probability = prediction_classes(labels, None, nucleus, "classes")
    assert label_classes == {3: 2, 7: 1} and names == {1: "tumour", 2: "lymphocyte"}
    assert probability == {3: 0.8, 7: 0.55}


def test_write_prediction_writes_the_three_exports(tmp_path):
    labels = _toy_labels()
    image = np.random.default_rng(0).integers(0, 256, (*labels.shape, 3), dtype=np.uint8)
    nucleus = _Nucleus([3, 7], probability={3: 0.9, 7: 0.6})
    paths = {k: tmp_path / f"a.{k}" for k in ("labels", "geojson", "csv")}
    written = write_prediction(paths, labels, image=image, class_name="x", nucleus=nucleus)
    assert written == [paths["labels"], paths["geojson"], paths["csv"]]
    # the same files as the writers called one by one with the classes of prediction_classes
    label_classes, names, probability = prediction_classes(labels, "x", nucleus)
    kwargs = {
        "class_names": names,
        "label_classes": label_classes,
        "label_probability": probability,
    }
    write_instance_tiff(tmp_path / "b.tif", labels)
    write_geojson(tmp_path / "b.geojson", labels, **kwargs)
    write_csv(tmp_path / "b.csv", labels, image=image, **kwargs)
    for kind, suffix in (("labels", "tif"), ("geojson", "geojson"), ("csv", "csv")):
        assert paths[kind].read_bytes() == (tmp_path / f"b.{suffix}").read_bytes()
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["probability"] for r in rows] == ["0.9", "0.6", "", ""]
    assert {r["class"] for r in rows} == {"x"}
