"""``sampo-engine predict``: points files, outputs, and every bad input refused with a clear error.

Runs in-process with the ``tiny`` model (random weights: no download, garbage masks), so the
checks are about files and messages, not segmentation quality.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile

from sampo_engine.cli import main
from sampo_engine.commands.predict import read_points
from sampo_engine.errors import DataError


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    import imageio.v3 as iio

    from sampo_engine.data.synthetic import make_synthetic_sample

    folder = tmp_path_factory.mktemp("img")
    path = folder / "tile.png"
    iio.imwrite(path, make_synthetic_sample((300, 260), seed=2).image)
    return path


def _points(tmp_path, text: str, name: str = "points.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _run(image, points, out, *extra) -> int:
    # --threshold 0.5: the untrained tiny model's probabilities hover near 0.45, so at the
    # shipped threshold (0.4, docs/instances.md) the whole tile would be one nucleus
    return main(
        ["predict", str(image), "--points", str(points), "--out", str(out), "--model", "tiny",
         "--device", "cpu", "--quiet", "--similarity", "-1", "--threshold", "0.5", *extra]
    )  # fmt: skip


def test_predict_writes_tiff_geojson_and_csv(image_file, tmp_path, capsys):
    pts = _points(tmp_path, "x,y,positive\n40,50,1\n200,250,true\n10,290,0\n")
    out = tmp_path / "res" / "tile"
    assert _run(image_file, pts, out, "--task", "t2", "--class-name", "Lymphocyte") == 0
    printed = capsys.readouterr().out
    labels = tifffile.imread(tmp_path / "res" / "tile_labels.tif")
    assert labels.shape == (300, 260)
    ids = np.unique(labels)[1:]
    n = len(ids)  # T2 by nucleus keeps each nucleus' id from the T1 map: ids may have gaps
    assert f"{n} nuclei" in printed and "T2" in printed
    assert n > 0 and ids.min() >= 1
    # GeoJSON: one detection per label, each back on its own label's pixels
    collection = json.loads((tmp_path / "res" / "tile.geojson").read_text())
    features = collection["features"]
    assert len(features) == n
    for feature in features[:20]:
        props = feature["properties"]
        assert props["classification"]["name"] == "Lymphocyte"
        ring = np.asarray(
            feature["geometry"]["coordinates"][0]
            if feature["geometry"]["type"] == "Polygon"
            else feature["geometry"]["coordinates"][0][0]
        )
        x, y = ring.mean(0)  # QuPath pixel corners: pixel [r, c] spans x ∈ [c, c + 1]
        assert 0 <= x <= 260 and 0 <= y <= 300
        assert ring[:, 0].min() >= 0 and ring[:, 1].max() <= 300
        label = props["measurements"]["label"]
        rows, cols = np.nonzero(labels == label)
        assert cols.min() <= ring[:, 0].min() + 0.5 and ring[:, 0].max() - 0.5 <= cols.max() + 1
    # CSV: one row per label
    with open(tmp_path / "res" / "tile.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == n and [int(r["label"]) for r in rows] == ids.tolist()
    assert all(r["class"] == "Lymphocyte" for r in rows)


def test_outputs_are_not_overwritten_without_the_flag(image_file, tmp_path, capsys):
    pts = _points(tmp_path, "x,y,label\n40,50,1\n")
    out = tmp_path / "run"
    assert _run(image_file, pts, out) == 0
    csv_path = tmp_path / "run.csv"
    csv_path.write_text("sentinel")
    assert _run(image_file, pts, out) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert csv_path.read_text() == "sentinel"
    assert _run(image_file, pts, out, "--overwrite") == 0
    assert csv_path.read_text().startswith("label,")


@pytest.mark.parametrize(
    "name, text, positives",
    [
        ("a.csv", "X,Y,Positive\n1,2,yes\n3,4,no\n", [1, 0]),
        ("b.csv", "index,axis-0,axis-1,label\n0,2,1,1\n", [1]),  # napari's layer CSV: row, col
        ("c.json", '[{"x": 1, "y": 2, "positive": true}, {"x": 3, "y": 4, "positive": 0}]', [1, 0]),
        ("d.json", '{"points": [{"x": 1, "y": 2, "label": "pos"}]}', [1]),
        ("e.json", "[[1, 2, 1]]", [1]),
    ],
)
def test_points_file_variants(tmp_path, name, text, positives):
    pts, labels = read_points(_points(tmp_path, text, name))
    assert labels.tolist() == positives
    assert pts[0].tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    "text, name, message",
    [
        ("x,y\n1,2\n", "p.csv", "lacks the column"),
        ("a,b,c\n1,2,1\n", "p.csv", "lacks the column"),
        ("", "p.csv", "empty"),
        ("x,y,positive\n", "p.csv", "no points"),
        ("x,y,positive\n1,2,maybe\n", "p.csv", "maybe"),
        ("x,y,positive\n1,two,1\n", "p.csv", "not a number"),
        ("{not json", "p.json", "not valid JSON"),
        ('{"clicks": []}', "p.json", "'points'"),
        ('[{"x": 1, "positive": 1}]', "p.json", "lacks y"),
    ],
)
def test_bad_points_files(tmp_path, text, name, message):
    with pytest.raises(DataError, match=message):
        read_points(_points(tmp_path, text, name))


def test_bad_inputs_are_clear_errors(image_file, tmp_path, capsys):
    def err(*args) -> str:
        assert _run(*args) == 2
        return capsys.readouterr().err

    out = tmp_path / "o"
    outside = _points(tmp_path, "x,y,positive\n10,10,1\n300,20,1\n-4,5,0\n", "outside.csv")
    message = err(image_file, outside, out)
    assert "2 point(s) lie outside" in message and "#1 (x=300, y=20)" in message
    assert "#2 (x=-4, y=5)" in message
    negative_only = _points(tmp_path, "x,y,positive\n10,10,0\n", "neg.csv")
    assert "no positive point" in err(image_file, negative_only, out)
    missing = _points(tmp_path, "x,y\n10,10\n", "missing.csv")
    assert "lacks the column(s) positive" in err(image_file, missing, out)
    good = _points(tmp_path, "x,y,positive\n10,10,1\n", "good.csv")
    assert "not found" in err(tmp_path / "nope.png", good, out)
    (tmp_path / "empty.png").write_bytes(b"")
    assert "empty" in err(tmp_path / "empty.png", good, out)
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    assert "Cannot read image" in err(tmp_path / "junk.png", good, out)
    assert "level" in err(image_file, good, out, "--level", "2")
    assert not list(tmp_path.glob("o[._]*"))  # nothing was written


def test_small_multipage_tiff_is_padded_to_one_tile(tmp_path, capsys):
    stack = np.random.default_rng(0).integers(0, 255, (2, 90, 120, 3), dtype=np.uint8)
    path = tmp_path / "small.tif"
    tifffile.imwrite(path, stack, photometric="rgb")
    pts = _points(tmp_path, "x,y,positive\n100,80,1\n")
    assert _run(path, pts, tmp_path / "small") == 0
    assert tifffile.imread(tmp_path / "small_labels.tif").shape == (90, 120)
    assert "1 clicked" in capsys.readouterr().out
