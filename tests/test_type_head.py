"""The nucleus type head (docs/type_head.md): patches, the network, its file, its training, and
how exemplar T2 reads it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from skimage.io import imsave

from sampo_engine.errors import ConfigError, DataError
from sampo_engine.models.type_head import (
    GENERAL_TYPES,
    PATCH,
    NucleusTypeNet,
    load_type_head,
    nucleus_patches,
    resolve_type_head,
    save_type_head,
    type_columns,
)
from sampo_engine.train.type_head import (
    TypeExamples,
    TypeHeadConfig,
    TypeSource,
    instance_classes,
    load_type_examples,
    train_type_head,
    type_accuracy,
)

HEADS = {"a": ("dark", "pale"), "b": ("x", "y", "z")}


def _disc_image(centres_rc, radius, value, shape=(120, 160)):
    img = np.full((*shape, 3), 230, np.uint8)
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    for (r, c), v in zip(centres_rc, value):
        img[(rr - r) ** 2 + (cc - c) ** 2 <= radius**2] = v
    return img


def test_patches_are_centred_on_the_nucleus_at_20x():
    img = _disc_image([(30, 50)], 3, [(20, 20, 90)])
    at_20x = nucleus_patches(img, np.array([[30.0, 50.0]]), 0.5)
    assert at_20x.shape == (1, PATCH, PATCH, 3) and at_20x.dtype == np.uint8
    assert tuple(at_20x[0, PATCH // 2, PATCH // 2]) == (20, 20, 90)
    assert at_20x[0, 0, 0, 0] == 230
    # the same image at 40× (twice the pixels): halved first, the disc still at the centre
    from skimage.transform import rescale

    big = rescale(img, 2, order=0, channel_axis=2, preserve_range=True).astype(np.uint8)
    at_40x = nucleus_patches(big, np.array([[60.5, 100.5]]), 0.25)
    assert at_40x[0, PATCH // 2, PATCH // 2, 2] > 60 and at_40x[0, PATCH // 2, PATCH // 2, 0] < 80
    # a nucleus in the corner: the border is mirrored, the patch full size
    corner = nucleus_patches(img, np.array([[0.0, 0.0], [119.0, 159.0]]), 0.5)
    assert corner.shape == (2, PATCH, PATCH, 3)
    with pytest.raises(DataError, match="um_per_px"):
        nucleus_patches(img, np.zeros((1, 2)), 0.0)


def test_the_network_answers_every_vocabulary_and_its_file_round_trips(tmp_path):
    net = NucleusTypeNet(HEADS, width=8, embed=6)
    img = _disc_image([(30, 50), (80, 100)], 4, [(20, 20, 90), (150, 120, 160)])
    logp, emb = type_columns(net, img, np.array([[30.0, 50.0], [80.0, 100.0]]), 0.5)
    assert logp.shape == (2, 5) and emb.shape == (2, 6)
    assert net.column_names() == ("type_a_dark", "type_a_pale", "type_b_x", "type_b_y", "type_b_z")
    np.testing.assert_allclose(np.exp(logp[:, :2]).sum(1), 1, atol=1e-5)
    path = tmp_path / "head.safetensors"
    save_type_head(net, path, {"recipe": "test"})
    back = load_type_head(path)
    assert back.heads == net.heads
    logp2, _ = type_columns(back, img, np.array([[30.0, 50.0], [80.0, 100.0]]), 0.5)
    np.testing.assert_allclose(logp2, logp, atol=0.05)  # fp16 weights
    # not a type head / damaged / missing: refused before use, with the reason
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": __import__("torch").zeros(2)}, str(other), metadata={"kind": "x"})
    with pytest.raises(DataError, match="not a nucleus type head"):
        load_type_head(other)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="not a readable safetensors"):
        load_type_head(broken)
    with pytest.raises(DataError, match="no nucleus type head file"):
        load_type_head(tmp_path / "none.safetensors")
    with pytest.raises(DataError, match="two or more classes"):
        NucleusTypeNet({"a": ("only",)})
    assert resolve_type_head("off") == (None, [])
    assert resolve_type_head(str(path))[0].heads == net.heads


def _synthetic_examples(n=240, seed=0):
    """Two vocabularies: 'a' dark vs pale discs, 'b' small / medium / large discs."""
    rng = np.random.default_rng(seed)
    patches, labels = [], []
    for i in range(n):
        v = i % 2
        c = int(rng.integers(2 if v == 0 else 3))
        colour = (40, 30, 110) if (v == 0 and c == 0) or v == 1 else (170, 140, 190)
        radius = 5 if v == 0 else (3, 6, 10)[c]
        img = _disc_image([(PATCH // 2, PATCH // 2)], radius, [colour], (PATCH, PATCH))
        patches.append(img)
        labels.append([c, -1] if v == 0 else [-1, c])
    return TypeExamples(np.stack(patches), np.array(labels), dict(HEADS))


def test_training_learns_types_that_differ_by_colour_and_size():
    examples = _synthetic_examples()
    cfg = TypeHeadConfig(epochs=6, batch_size=32, width=8, embed=8, lr=1e-2)
    seen = []
    net, log = train_type_head(examples, cfg, lambda i, total, loss: seen.append((i, total)))
    assert seen[-1] == (log["steps"], log["steps"]) and log["steps"] == 45
    assert np.mean(log["losses"][-5:]) < np.mean(log["losses"][:5])
    acc = type_accuracy(net, _synthetic_examples(seed=1))
    assert acc["a"]["accuracy"] > 0.9 and acc["b"]["balanced"] > 0.6
    with pytest.raises(ConfigError, match="epochs must be > 0"):
        TypeHeadConfig(epochs=0)
    with pytest.raises(DataError, match="fewer than one batch"):
        train_type_head(examples, TypeHeadConfig(batch_size=1000))


def test_examples_come_from_dots_and_from_classed_instances(tmp_path):
    # a point set: two images, one in the training split
    points = tmp_path / "points"
    points.mkdir()
    meta = {"classes": {"1": "lymphocyte", "2": "tumour"},
            "images": [{"id": "p1", "split": "train"}, {"id": "p2", "split": "val"}]}  # fmt: skip
    (points / "meta.json").write_text(json.dumps(meta))
    for name in ("p1", "p2"):
        imsave(
            points / f"{name}_image.png",
            _disc_image([(30, 40)], 3, [(30, 30, 90)]),
            check_contrast=False,
        )
        (points / f"{name}_points.csv").write_text("x,y,class\n40,30,1\n100,60,2\n10,10,0\n")
    # an instance set at 40× with a class map
    inst_dir = tmp_path / "inst"
    inst_dir.mkdir()
    (inst_dir / "meta.json").write_text(json.dumps({"classes": {"0": "bg", "1": "u", "2": "v"}}))
    inst = np.zeros((100, 100), np.uint16)
    inst[10:20, 10:20], inst[50:70, 60:70] = 1, 2
    cls = np.where(inst == 1, 2, np.where(inst == 2, 1, 0)).astype(np.uint8)
    imsave(inst_dir / "t_image.png", np.full((100, 100, 3), 200, np.uint8), check_contrast=False)
    tifffile.imwrite(inst_dir / "t_inst.tif", inst)
    tifffile.imwrite(inst_dir / "t_class.tif", cls)
    centroids, classes = instance_classes(inst, cls)
    np.testing.assert_allclose(centroids, [[14.5, 14.5], [59.5, 64.5]])
    assert classes.tolist() == [2, 1]
    seen = []
    ex = load_type_examples(
        [TypeSource("pts", points, "points", 0.5, ("train",), {1: "inflammatory", 2: "epithelial"}),
         TypeSource("ins", inst_dir, "instances", 0.25, (), {2: "stromal"})],
        progress=seen.append,
    )  # fmt: skip
    assert seen == ["pts/p1", "ins/t"]
    assert ex.heads == {
        "pts": ("lymphocyte", "tumour"),
        "ins": ("u", "v"),
        "general": GENERAL_TYPES,
    }
    assert ex.counts() == {"pts": {"lymphocyte": 1, "tumour": 1}, "ins": {"u": 1, "v": 1},
                           "general": {"inflammatory": 1, "epithelial": 1, "stromal": 1,
                                       "other": 0}}  # fmt: skip
    # the instance of class 1 ("u") has no general type: labelled in its own vocabulary only
    assert ex.labels.tolist() == [[0, -1, 0], [1, -1, 1], [-1, 1, 2], [-1, 0, -1]]
    assert ex.patches.shape == (4, PATCH, PATCH, 3)
    # the lymphocyte patch is centred on its dark disc (dot x=40, y=30)
    assert ex.patches[0, PATCH // 2, PATCH // 2, 0] == 30
    with pytest.raises(DataError, match="meta.json"):
        load_type_examples([TypeSource("none", tmp_path / "missing", "points", 0.5)])
    with pytest.raises(ConfigError, match="general types are"):
        load_type_examples([TypeSource("pts", points, "points", 0.5, ("train",), {1: "blue"})])


def test_exemplar_descriptors_gain_the_heads_columns(tmp_path):
    from sampo_engine.predict.nucleus_classes import NucleiIndex, type_head_columns

    img = _disc_image([(30, 50), (80, 100), (40, 120)], 5, [(20, 20, 90)] * 3)
    labels = np.zeros(img.shape[:2], np.int32)
    rr, cc = np.mgrid[: img.shape[0], : img.shape[1]]
    for i, (r, c) in enumerate([(30, 50), (80, 100), (40, 120)], start=1):
        labels[(rr - r) ** 2 + (cc - c) ** 2 <= 25] = i
    net = NucleusTypeNet(HEADS, width=8, embed=4)
    plain = NucleiIndex.build("k", img, labels)
    typed = NucleiIndex.build("k", img, labels, nucleus_types=type_head_columns(net, 0.5))
    extra = [n for n, g in zip(typed.descriptors.names, typed.descriptors.groups) if g == "type"]
    assert extra == list(net.column_names())
    assert typed.standardised.shape[1] == plain.standardised.shape[1] + 5


def test_the_predictor_uses_a_given_head_and_refuses_bad_settings(tmp_path):
    from sampo_engine.predict.predictor import PredictConfig, TilePredictor

    path = tmp_path / "head.safetensors"
    save_type_head(NucleusTypeNet(HEADS, width=8, embed=4), path)
    predictor = TilePredictor(PredictConfig(model="tiny", device="cpu", type_head=str(path)))
    img = _disc_image([(30, 50), (80, 100), (40, 120), (90, 30)], 6, [(20, 20, 90)] * 4)
    predictor.set_image(img)
    labels = np.zeros(img.shape[:2], np.int32)
    labels[24:36, 44:56], labels[74:86, 94:106], labels[34:46, 114:126] = 1, 2, 3
    labels[84:96, 24:36] = 4
    index = predictor.nuclei_from_labels(labels)
    assert "type" in index.descriptors.groups
    with pytest.raises(ConfigError, match="--type-head must be auto, off or"):
        PredictConfig(type_head="yes").validate()
    with pytest.raises(DataError, match="no nucleus type head file"):
        TilePredictor(
            PredictConfig(model="tiny", device="cpu", type_head=str(tmp_path / "x.safetensors"))
        )
    assert (
        TilePredictor(PredictConfig(model="tiny", device="cpu", type_head="off")).type_head is None
    )


def test_ship_tool_records_the_head_and_its_licences_in_the_card(tmp_path):
    import hashlib
    import importlib.util
    import shutil
    from pathlib import Path

    from sampo_engine.models.availability import shipped_weights_dir

    folder = tmp_path / "heads"
    folder.mkdir()
    save_type_head(NucleusTypeNet(HEADS, width=8, embed=4), folder / "type_head_seed1.safetensors")
    log = {"recipe": "python tools/train_type_head.py --out x --seed 1", "steps": 5, "seconds": 3,
           "train_counts": {"a": {"dark": 3, "pale": 4}, "general": {"inflammatory": 7}},
           "held_out_accuracy": {"a": {"accuracy": 0.5, "balanced": 0.5}}}  # fmt: skip
    (folder / "type_head_seed1.json").write_text(json.dumps(log))
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(shipped_weights_dir() / "nuclei_small.json", weights / "nuclei_small.json")
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("ship", root / "tools" / "ship_type_head.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    ship.main(["--folder", str(folder), "--seed", "1", "--weights", str(weights)])
    card = json.loads((weights / "nuclei_small.json").read_text())
    entry = card["type_head"]
    shipped = weights / ship.FILE
    assert entry["sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert entry["vocabularies"] == {"a": ["dark", "pale"], "b": ["x", "y", "z"]}
    assert "--seed 1" in entry["recipe"] and entry["held_out_accuracy"]["a"]["accuracy"] == 50.0
    assert "CRCHistoPhenotypes (research use only)" in card["licence"]
    assert "crchisto_points" in card["training_data"]
    assert "own set's terms" in entry["trained_on"]["general"]["licence"]
    assert load_type_head(shipped).heads == net_heads(HEADS)


def net_heads(heads):
    return {k: tuple(v) for k, v in heads.items()}


def test_the_clicks_pick_the_general_type_they_point_at():
    from sampo_engine.nuclei.general_types import match_general_types

    names = ("inflammatory", "epithelial", "stromal", "other")
    p = np.array([[0.9, 0.05, 0.03, 0.02], [0.8, 0.1, 0.05, 0.05], [0.1, 0.8, 0.05, 0.05],
                  [0.05, 0.05, 0.85, 0.05], [0.7, 0.2, 0.05, 0.05], [0.2, 0.7, 0.05, 0.05]])  # fmt: skip
    rows, classes = np.array([0, 1, 2, 3]), np.array([0, 0, 1, 1])
    probs, said = match_general_types(p, rows, classes, 2, names, one_vs_rest=True)
    np.testing.assert_allclose(probs[:, 0], p[:, 0])
    assert "'inflammatory'" in said
    # several named classes: each its own type, renormalised
    probs, said = match_general_types(p, np.array([0, 2, 3]), np.array([0, 1, 2]), 3, names)
    assert probs.argmax(1).tolist() == [0, 0, 1, 2, 0, 1] and "'stromal'" in said
    # clicks no type tells apart → refused with the reason
    flat = np.full((4, 4), 0.25)
    probs, said = match_general_types(flat, rows, classes, 2, names, one_vs_rest=True)
    assert probs is None and "tells the clicked nuclei apart" in said
    # only positives: the type over-represented among them against the tile's nuclei
    probs, said = match_general_types(p, np.array([0, 1]), np.array([0, 0]), 2, names, True)
    assert probs is not None and "'inflammatory'" in said
    # two classes on one type → refused
    probs, said = match_general_types(p, np.array([0, 1, 2]), np.array([0, 1, 2]), 3, names)
    assert probs is None and "same general type" in said


def test_types_classifier_reads_the_heads_general_columns_and_falls_back_without_them():
    from sampo_engine.nuclei.descriptors import NucleusDescriptors
    from sampo_engine.nuclei.exemplars import ClickSnap, classify_nuclei

    n = 12
    rng = np.random.default_rng(0)
    inflamed = np.arange(n) < 5
    p = np.where(inflamed[:, None], [0.85, 0.1, 0.03, 0.02], [0.05, 0.8, 0.1, 0.05])
    feats = np.concatenate([rng.normal(size=(n, 3)), np.log(p)], axis=1).astype(np.float32)
    names = ("a", "b", "c") + tuple(f"type_general_{t}" for t in GENERAL_TYPES)
    groups = ("stain",) * 3 + ("general",) * 4
    desc = NucleusDescriptors(np.arange(1, n + 1), np.zeros((n, 2)), feats, names, groups)
    snap = ClickSnap(np.array([0, 1, 8, 9]), np.zeros(4))
    got = classify_nuclei(desc, snap, [0, 0, 1, 1], 2, method="types", one_vs_rest=True)
    assert (got.classes == np.where(inflamed, 0, 1)).all()
    assert any("'inflammatory'" in m for m in got.messages)
    blend = classify_nuclei(desc, snap, [0, 0, 1, 1], 2, method="blend", one_vs_rest=True)
    assert blend.probabilities.shape == (n, 2)
    plain = NucleusDescriptors(desc.ids, desc.centroids, feats[:, :3], names[:3], groups[:3])
    got = classify_nuclei(plain, snap, [0, 0, 1, 1], 2, method="types", one_vs_rest=True)
    assert got.probabilities.shape == (n, 2)
    assert any("no type head described these nuclei" in m for m in got.messages)
    quiet = classify_nuclei(plain, snap, [0, 0, 1, 1], 2, method="blend", one_vs_rest=True)
    assert not any("type head" in m for m in quiet.messages)  # the default without a head


def test_the_packaged_head_is_verified_used_by_default_and_a_damaged_one_is_named(
    tmp_path, monkeypatch
):
    import shutil

    from sampo_engine.models import availability
    from sampo_engine.models.availability import shipped_weights_dir
    from sampo_engine.models.type_head import GENERAL, SHIPPED_FILE, shipped_type_head
    from sampo_engine.predict.predictor import PredictConfig, TilePredictor

    card = json.loads((shipped_weights_dir() / "nuclei_small.json").read_text())["type_head"]
    assert card["bytes"] < 1e6 and "CRCHistoPhenotypes" in json.dumps(card["trained_on"])
    net = shipped_type_head()
    assert net is not None and net.heads[GENERAL] == GENERAL_TYPES
    predictor = TilePredictor(PredictConfig(model="tiny", device="cpu"))
    assert predictor.type_head is not None  # it serves every model, not only nuclei-small
    folder = tmp_path / "weights"
    shutil.copytree(shipped_weights_dir(), folder)
    data = bytearray((folder / SHIPPED_FILE).read_bytes())
    data[-5] ^= 0xFF
    (folder / SHIPPED_FILE).write_bytes(bytes(data))
    monkeypatch.setattr(availability, "shipped_weights_dir", lambda: folder)
    with pytest.raises(DataError, match="SHA-256 differs.*--type-head off"):
        shipped_type_head()
    predictor = TilePredictor(PredictConfig(model="tiny", device="cpu"))
    assert predictor.type_head is None
    img = _disc_image([(30, 50), (80, 100), (40, 120)], 6, [(20, 20, 90)] * 3)
    predictor.set_image(img)
    pred = predictor.predict(np.array([[50.0, 30.0]]), np.ones(1, np.int64), task="t1")
    assert any("type head unusable" in m for m in pred.messages)


def test_eval_reads_the_head_for_the_floor_too_and_refuses_a_bad_setting():
    from sampo_engine.eval.classical import ClassicalTilePredictor
    from sampo_engine.eval.config import EvalConfig

    with pytest.raises(ConfigError, match="--type-head must be auto, off or"):
        EvalConfig(data="x", out="y", type_head="maybe").validate()
    img = _disc_image([(30, 50), (80, 100), (40, 120), (90, 30)], 6, [(20, 20, 90)] * 4)
    floor = ClassicalTilePredictor(type_head="auto")
    assert floor.type_head is not None and floor.config.classifier == "blend"
    floor.set_image(img)
    floor.predict(np.array([[50.0, 30.0], [100.0, 80.0]]), np.array([1, 0]), task="t2")
    assert "general" in floor._index.descriptors.groups
    plain = ClassicalTilePredictor()
    assert plain.type_head is None and plain.config.classifier == "logreg"
