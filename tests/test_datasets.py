"""Dataset readers (folder, PanNuke, CoNSeP, MoNuSeg), layout detection and error messages.

Every fixture is built here, tiny, in tmp_path; only the ``shared_data`` test reads real data.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from scipy.io import savemat

from sampo_engine.data.consep import read_consep
from sampo_engine.data.detect import describe, detect_format, open_dataset
from sampo_engine.data.folder import count_empty, empty_names, read_folder, write_folder
from sampo_engine.data.monuseg import read_monuseg
from sampo_engine.data.pannuke import masks_to_labels, read_pannuke
from sampo_engine.data.sample import NucleiDataset, NucleiSample
from sampo_engine.data.synthetic import CLASS_NAMES, make_synthetic_dataset
from sampo_engine.errors import ConfigError, DataError

RNG = np.random.default_rng(0)


def _image(h=32, w=40):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _inst(h=32, w=40, boxes=((2, 2, 10, 12), (14, 20, 24, 30))):
    inst = np.zeros((h, w), np.uint16)
    for k, (r0, c0, r1, c1) in enumerate(boxes, start=1):
        inst[r0:r1, c0:c1] = k
    return inst


# ====================================================================== folder format


def _write_folder_pair(folder: Path, image_id: str, image, inst, cls=None, ext="png"):
    folder.mkdir(parents=True, exist_ok=True)
    if ext == "png":
        iio.imwrite(folder / f"{image_id}_image.png", image)
    else:
        tifffile.imwrite(folder / f"{image_id}_image.tif", image)
    tifffile.imwrite(folder / f"{image_id}_inst.tif", inst)
    if cls is not None:
        tifffile.imwrite(folder / f"{image_id}_class.tif", cls)


def test_write_then_read_folder_roundtrip(tmp_path):
    ds = make_synthetic_dataset(3, size=48, seed=1)
    out = write_folder(ds, tmp_path / "demo")
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # atomic, no leftovers
    back = read_folder(out)
    assert back.format == "folder" and back.root == str(out) and len(back) == 3
    assert back.class_names == CLASS_NAMES
    assert all(callable(s) for s in back.samples)  # lazy: loaded when indexed
    for a, b in zip(ds, back):
        assert a.name == b.name and b.tissue == "synthetic"
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.inst, b.inst)
        np.testing.assert_array_equal(a.cls, b.cls)
        assert b.inst.dtype == np.int32 and b.cls.dtype == np.uint8
    meta = json.loads((out / "meta.json").read_text())
    assert meta["classes"]["0"] == "background" and meta["classes"]["2"] == "epithelial"
    assert meta["images"][0]["n_nuclei"] == ds[0].num_nuclei
    assert sum(meta["images"][0]["n_nuclei_per_class"].values()) == ds[0].num_nuclei
    assert tifffile.imread(out / f"{ds[0].name}_inst.tif").dtype == np.uint16


def test_write_folder_sanitises_names_and_refuses_duplicates(tmp_path):
    s = NucleiSample(_image(), _inst().astype(np.int32), name="fold2/000123")
    write_folder([s], tmp_path / "a", class_names={})
    assert (tmp_path / "a" / "fold2_000123_image.png").is_file()
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["classes"] is None and meta["images"][0]["name"] == "fold2/000123"
    twin = NucleiSample(_image(), _inst().astype(np.int32), name="fold2_000123")
    with pytest.raises(DataError, match="unique names"):
        write_folder([s, twin], tmp_path / "b")


def test_read_folder_meta_tissue_natural_order_and_conversions(tmp_path):
    folder = tmp_path / "ds"
    rgb = _image()
    _write_folder_pair(folder, "img_10", rgb, _inst(), _inst().astype(np.uint8))
    gray16 = (rgb[..., 0].astype(np.uint16) * 257).astype(np.uint16)
    _write_folder_pair(folder, "img_2", gray16, _inst(), _inst().astype(np.uint8), ext="tif")
    iio.imwrite(folder / "img_3_image.png", np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)]))
    tifffile.imwrite(folder / "img_3_inst.tif", np.zeros((32, 40), np.uint16))  # no nuclei
    tifffile.imwrite(folder / "img_3_class.tif", np.zeros((32, 40), np.uint8))
    meta = {
        "classes": {"0": "background", "1": "tumour", "2": "immune"},
        "images": [{"id": "img_2", "tissue": "Breast"}, {"id": "img_10"}],
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    ds = read_folder(folder)
    assert [s.name for s in ds] == ["img_2", "img_3", "img_10"]
    assert ds.class_names == {1: "tumour", 2: "immune"}
    assert ds[0].tissue == "Breast" and ds[2].tissue is None
    np.testing.assert_array_equal(ds[0].image[..., 1], rgb[..., 0])  # 16-bit gray -> RGB
    np.testing.assert_array_equal(ds[1].image, rgb)  # RGBA -> RGB
    assert ds[1].num_nuclei == 0  # kept by the reader ...
    assert count_empty(ds) == 1 and empty_names(ds) == ["img_3"]  # ... and counted


def test_read_folder_without_meta_names_classes_from_class_maps(tmp_path):
    folder = tmp_path / "ds"
    cls = _inst().astype(np.uint8) * 3
    _write_folder_pair(folder, "a", _image(), _inst(), cls)
    ds = read_folder(folder)
    assert ds.class_names == {3: "class 3", 6: "class 6"}
    no_cls = tmp_path / "nocls"
    _write_folder_pair(no_cls, "a", _image(), _inst())
    ds = read_folder(no_cls)
    assert ds.class_names == {} and ds[0].cls is None and not ds.has_classes


def test_read_folder_errors_name_the_problem_and_remedy(tmp_path):
    with pytest.raises(DataError, match="not found.*Check the path"):
        read_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty.*<id>_image"):
        read_folder(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"No <id>_image.*notes\.txt"):
        read_folder(tmp_path / "other")
    nolabel = tmp_path / "nolabel"
    nolabel.mkdir()
    iio.imwrite(nolabel / "x_image.png", _image())
    with pytest.raises(DataError, match=r"no <id>_inst\.tif.*: x\. Add the label maps"):
        read_folder(nolabel)


def test_read_folder_size_mismatch_names_the_id(tmp_path):
    folder = tmp_path / "ds"
    _write_folder_pair(folder, "good", _image(), _inst())
    _write_folder_pair(folder, "bad", _image(30, 40), _inst())
    ds = read_folder(folder)
    ds[1]  # "good" loads
    with pytest.raises(DataError, match=r"'bad'.*30x40.*32x40.*same size"):
        ds[0]


def test_read_folder_class_checks(tmp_path):
    folder = tmp_path / "ds"
    _write_folder_pair(folder, "a", _image(), _inst(), _inst().astype(np.uint8) * 2)
    (folder / "meta.json").write_text(json.dumps({"classes": {"0": "background", "1": "x"}}))
    with pytest.raises(DataError, match=r"class id\(s\) \[2, 4\].*declared: \[1\]"):
        read_folder(folder)[0]
    _write_folder_pair(folder, "b", _image(), _inst())  # no class map for b
    with pytest.raises(DataError, match="no <id>_class.tif while others have one: b"):
        read_folder(folder)
    only_meta = tmp_path / "only_meta"
    _write_folder_pair(only_meta, "a", _image(), _inst())
    (only_meta / "meta.json").write_text(json.dumps({"classes": {"1": "x"}}))
    with pytest.raises(DataError, match="no <id>_class.tif class maps exist"):
        read_folder(only_meta)
    (only_meta / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match="meta.json"):
        read_folder(only_meta)


# ====================================================================== PanNuke


def _pannuke_fold(folder: Path, n=3, size=24, flat=False, fold=1, dtype=np.float64):
    images = RNG.integers(0, 256, (n, size, size, 3)).astype(dtype)
    masks = np.zeros((n, size, size, 6), np.float64)
    masks[:, 2:8, 2:8, 0] = 1  # neoplastic id 1
    masks[:, 10:16, 2:8, 2] = 1  # connective, also id 1: must get its own instance id
    masks[:, 10:16, 12:20, 2] = 7
    masks[1, 18:22, 18:22, 4] = 3  # epithelial only in sample 1
    masks[..., 5] = (masks[..., :5].sum(-1) == 0).astype(np.float64)
    types = np.array(["Breast", "Colon", "Skin"][:n])
    if flat:
        img_dir = mask_dir = folder
    else:
        img_dir = folder / "images" / f"fold{fold}"
        mask_dir = folder / "masks" / f"fold{fold}"
    img_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    np.save(img_dir / "images.npy", images)
    np.save(img_dir / "types.npy", types)
    np.save(mask_dir / "masks.npy", masks)
    return images, masks


def test_masks_to_labels_gives_unique_ids_and_classes():
    masks = np.zeros((8, 8, 6))
    masks[0:2, 0:2, 0] = 5
    masks[4:6, 4:6, 0] = 9
    masks[0:2, 4:6, 1] = 5  # same id, other class
    inst, cls = masks_to_labels(masks)
    assert inst.dtype == np.int32 and cls.dtype == np.uint8
    assert len(np.unique(inst)) == 4  # background + 3 distinct nuclei
    assert cls[0, 0] == 1 and cls[0, 4] == 2 and inst[0, 0] != inst[0, 4]


def test_read_pannuke_official_layout(tmp_path):
    images, _ = _pannuke_fold(tmp_path / "Fold 1", fold=1)
    _pannuke_fold(tmp_path / "Fold 2", fold=2, n=2, dtype=np.uint8)
    ds = read_pannuke(tmp_path)
    assert ds.format == "pannuke" and len(ds) == 3
    assert ds.class_names == {1: "Neoplastic", 2: "Inflammatory", 3: "Connective", 4: "Dead",
                              5: "Epithelial"}  # fmt: skip
    assert all(callable(s) for s in ds.samples)
    s = ds[1]
    assert s.name == "fold1/000001" and s.tissue == "Colon"
    np.testing.assert_array_equal(s.image, images[1].astype(np.uint8))
    assert s.num_nuclei == 4 and set(np.unique(s.cls)) == {0, 1, 3, 5}
    both = read_pannuke(tmp_path, folds=None)
    assert len(both) == 5 and both[4].name == "fold2/000001"
    assert len(read_pannuke(tmp_path, folds=[2])) == 2


def test_read_pannuke_flat_and_lowercase_folds(tmp_path):
    _pannuke_fold(tmp_path / "flat", flat=True)
    assert len(read_pannuke(tmp_path / "flat")) == 3
    _pannuke_fold(tmp_path / "root" / "fold3", flat=True, n=2)
    ds = read_pannuke(tmp_path / "root", folds=(3,))
    assert len(ds) == 2 and ds[0].name == "fold3/000000"


def test_read_pannuke_errors(tmp_path):
    _pannuke_fold(tmp_path / "Fold 1")
    with pytest.raises(DataError, match=r"fold\(s\) \[2\] not found.*found fold\(s\) \[1\]"):
        read_pannuke(tmp_path, folds=(2,))
    (tmp_path / "Fold 1" / "masks" / "fold1" / "masks.npy").unlink()
    with pytest.raises(DataError, match="fold 1 .* is missing masks.npy.*Fold 1/masks"):
        read_pannuke(tmp_path)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="No PanNuke folds"):
        read_pannuke(tmp_path / "nothing")
    bad = tmp_path / "bad"
    _pannuke_fold(bad, flat=True)
    np.save(bad / "masks.npy", np.zeros((3, 10, 10, 6)))
    with pytest.raises(DataError, match=r"masks are \(N, H, W, 6\)"):
        read_pannuke(bad)


# ====================================================================== CoNSeP


def _consep_split(folder: Path, stems=("train_1", "train_2"), size=(24, 28)):
    (folder / "Images").mkdir(parents=True)
    (folder / "Labels").mkdir(parents=True)
    h, w = size
    inst = np.zeros(size, np.int32)
    types = np.zeros(size, np.int32)
    for k in range(1, 8):  # one nucleus per original type 1..7
        c = 3 * (k - 1)
        inst[2:6, c : c + 3] = k
        types[2:6, c : c + 3] = k
    for stem in stems:
        rgba = np.dstack([_image(h, w), np.full(size, 255, np.uint8)])  # CoNSeP PNGs are RGBA
        iio.imwrite(folder / "Images" / f"{stem}.png", rgba)
        savemat(
            folder / "Labels" / f"{stem}.mat", {"inst_map": inst.astype(float), "type_map": types}
        )
    return inst


def test_read_consep_merges_types_and_chooses_split(tmp_path):
    _consep_split(tmp_path / "Train")
    _consep_split(tmp_path / "Test", stems=("test_1",))
    with pytest.raises(ConfigError, match="choose one with split='train' or split='test'"):
        read_consep(tmp_path)
    ds = read_consep(tmp_path, split="Train")
    assert ds.format == "consep" and len(ds) == 2 and ds.root == str(tmp_path)
    assert ds.class_names == {1: "other", 2: "inflammatory", 3: "epithelial", 4: "spindle-shaped"}
    s = ds[0]
    assert s.name == "train/train_1" and s.image.shape == (24, 28, 3)
    merged = [int(s.cls[2, 3 * (k - 1)]) for k in range(1, 8)]
    assert merged == [1, 2, 3, 3, 4, 4, 4]
    assert s.num_nuclei == 7 and s.inst.dtype == np.int32
    test = read_consep(tmp_path, split="test")
    assert [x.name for x in test] == ["test/test_1"]
    seven = read_consep(tmp_path / "Train", merge_types=False)  # a split folder itself
    assert len(seven.class_names) == 7 and seven[0].cls[2, 18] == 7 and seven[0].name == "train_1"


def test_read_consep_errors(tmp_path):
    _consep_split(tmp_path / "Train")
    with pytest.raises(DataError, match=r"split 'test' not found.*\['train'\]"):
        read_consep(tmp_path, split="test")
    with pytest.raises(ConfigError, match="'train' or 'test'"):
        read_consep(tmp_path, split="valid")
    iio.imwrite(tmp_path / "Train" / "Images" / "train_9.png", _image())
    with pytest.raises(DataError, match=r"have no \.mat.*train_9"):
        read_consep(tmp_path)
    (tmp_path / "Train" / "Images" / "train_9.png").unlink()
    savemat(tmp_path / "Train" / "Labels" / "train_1.mat", {"other": np.zeros((2, 2))})
    with pytest.raises(DataError, match="no 'inst_map' .*holds: other"):
        read_consep(tmp_path)[0]


# ====================================================================== MoNuSeg


def _aperio_xml(polygons) -> str:
    regions = []
    for k, poly in enumerate(polygons, start=1):
        verts = "".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in poly)
        regions.append(
            f'<Region Id="{k}" Type="0"><Attributes/><Vertices>{verts}</Vertices></Region>'
        )
    return (
        '<?xml version="1.0"?><Annotations MicronsPerPixel="0.25"><Annotation Id="1">'
        "<Attributes/><Regions><RegionAttributeHeaders/>" + "".join(regions) + "</Regions><Plots/>"
        "</Annotation></Annotations>"
    )


SQUARES = [
    [(2, 2), (12, 2), (12, 8), (2, 8)],  # (x, y): 10 wide, 6 tall at the top left
    [(20, 10), (30, 10), (30, 20), (20, 20)],
    [(26, 16), (34, 16), (34, 24), (26, 24)],  # overlaps the second; drawn later, wins
    [(1, 1), (2, 2)],  # a degenerate region: skipped
]


def _monuseg(folder: Path, stems=("TCGA-A",), split_dirs=False):
    img_dir = folder / "Tissue Images" if split_dirs else folder
    xml_dir = folder / "Annotations" if split_dirs else folder
    img_dir.mkdir(parents=True, exist_ok=True)
    xml_dir.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        tifffile.imwrite(img_dir / f"{stem}.tif", _image(32, 40), photometric="rgb")
        (xml_dir / f"{stem}.xml").write_text(_aperio_xml(SQUARES))


@pytest.mark.parametrize("split_dirs", [False, True])
def test_read_monuseg_rasterises_polygons(tmp_path, split_dirs):
    _monuseg(tmp_path, stems=("TCGA-B", "TCGA-A"), split_dirs=split_dirs)
    ds = read_monuseg(tmp_path)
    assert ds.format == "monuseg" and ds.class_names == {} and len(ds) == 2
    s = ds[0]
    assert s.name == "TCGA-A" and s.cls is None and s.image.shape == (32, 40, 3)
    assert s.num_nuclei == 3
    assert s.inst[5, 7] == 1 and s.inst[5, 15] == 0  # (row, col) = (Y, X)
    assert s.inst[18, 28] == 3  # overlap: the later region wins
    assert s.inst[12, 22] == 2


def test_read_monuseg_errors(tmp_path):
    _monuseg(tmp_path)
    tifffile.imwrite(tmp_path / "TCGA-Z.tif", _image(), photometric="rgb")
    with pytest.raises(DataError, match="no .xml annotation: TCGA-Z"):
        read_monuseg(tmp_path)
    (tmp_path / "TCGA-Z.tif").unlink()
    (tmp_path / "TCGA-A.xml").write_text("<Annotations><Region>")
    with pytest.raises(DataError, match=r"Cannot parse annotation .*TCGA-A\.xml"):
        read_monuseg(tmp_path)[0]


# ====================================================================== detection


@pytest.fixture
def layouts(tmp_path) -> dict[str, Path]:
    folder = tmp_path / "folder"
    write_folder(make_synthetic_dataset(2, size=32, seed=0), folder)
    _pannuke_fold(tmp_path / "pannuke" / "Fold 1", n=2)
    _consep_split(tmp_path / "consep" / "Train", stems=("train_1",))
    _consep_split(tmp_path / "consep" / "Test", stems=("test_1",))
    _monuseg(tmp_path / "monuseg", split_dirs=True)
    return {name: tmp_path / name for name in ("folder", "pannuke", "consep", "monuseg")}


def test_detect_and_open_every_layout(layouts, caplog):
    for fmt, path in layouts.items():
        assert detect_format(path) == fmt
    caplog.set_level(logging.INFO, logger="sampo_engine.data.detect")
    ds = open_dataset(layouts["consep"], split="test")
    assert isinstance(ds, NucleiDataset) and ds.format == "consep"
    assert describe(ds) == f"CoNSeP layout at {layouts['consep']}: 1 image, 4 classes"
    assert describe(ds) in caplog.text
    pn = open_dataset(layouts["pannuke"], folds=1)
    assert pn.format == "pannuke" and len(pn) == 2 and pn[0].name == "fold1/000000"
    assert describe(open_dataset(layouts["monuseg"])).endswith("1 image, no classes")
    assert open_dataset(layouts["folder"], format="folder").format == "folder"
    assert open_dataset(layouts["consep"] / "Train").format == "consep"


def test_open_dataset_refuses_options_of_other_layouts(layouts):
    with pytest.raises(ConfigError, match="split='train' applies to CoNSeP only"):
        open_dataset(layouts["folder"], split="train")
    with pytest.raises(ConfigError, match="PanNuke only"):
        open_dataset(layouts["monuseg"], folds=(1,))
    with pytest.raises(ConfigError, match="Unknown dataset format 'tiff'"):
        open_dataset(layouts["folder"], format="tiff")


def test_unknown_and_mixed_layouts(tmp_path, layouts):
    odd = tmp_path / "odd"
    odd.mkdir()
    for name in ("a.txt", "b.csv", "scan.svs"):
        (odd / name).write_text("x")
    with pytest.raises(DataError) as err:
        detect_format(odd)
    msg = str(err.value)
    assert "a.txt" in msg and "scan.svs" in msg and "Supported layouts" in msg and "CoNSeP" in msg
    mixed = layouts["folder"]
    (mixed / "extra.xml").write_text(_aperio_xml(SQUARES[:1]))
    tifffile.imwrite(mixed / "extra.tif", _image(), photometric="rgb")
    with pytest.raises(DataError, match=r"mixes dataset layouts \(folder: .*MoNuSeg: "):
        open_dataset(mixed)
    with pytest.raises(DataError, match="is a file"):
        detect_format(mixed / "extra.xml")
    with pytest.raises(DataError, match="not found"):
        detect_format(tmp_path / "absent")


# ====================================================================== real data


@pytest.mark.shared_data
def test_real_folder_meta_parsing(shared_data_dir):
    for name, n_classes, first_class in [
        ("consep_train", 4, "other"),
        ("pannuke_breast_2class", 2, "Neoplastic"),
    ]:
        folder = shared_data_dir / name
        if not folder.is_dir():
            pytest.skip(f"{folder} absent")
        meta = json.loads((folder / "meta.json").read_text())
        ds = open_dataset(folder)
        assert ds.format == "folder" and len(ds) == meta["n_images"]
        assert len(ds.class_names) == n_classes and ds.class_names[1].startswith(first_class)
        counts = {m["id"]: m["n_nuclei"] for m in meta["images"]}
        for sample in (ds[0], ds[len(ds) - 1]):
            assert sample.image.dtype == np.uint8 and sample.image.shape[2] == 3
            assert sample.inst.shape == sample.image.shape[:2]
            assert sample.num_nuclei == counts[sample.name]
            assert set(np.unique(sample.cls)) - {0} <= set(ds.class_names)
