"""tools/split_head_study.py (``sampo_engine.experiments.split_head_study``) end to end on
generated data with a tiny model: cached maps, heads per arm and seed, the scores, the page and
its plot (the real numbers are in docs/split_head.md)."""

from pathlib import Path

from sampo_engine.experiments import split_head_study
from sampo_engine.experiments.split_head_study import read_rows
from sampo_engine.models.build import build_sam, save_base_checkpoint
from sampo_engine.models.split_head import load_split_head, split_head_metadata

ROOT = Path(__file__).resolve().parents[1]


def test_the_study_trains_heads_scores_them_and_writes_the_page(split_dir, tmp_path):
    base = tmp_path / "base.pth"
    save_base_checkpoint(build_sam("tiny", None, 224), base)
    out, docs = tmp_path / "out", tmp_path / "docs"
    args = ["--out", str(out), "--split-dir", str(split_dir), "--datasets", "typed"]
    args += ["--model", "tiny", "--checkpoint", str(base), "--docs", str(docs)]
    args += ["--seeds", "0", "1", "--steps", "3", "--crop", "32", "--batch-size", "2"]
    args += ["--width", "4", "--core-levels", "0.4", "0.6", "--min-sizes", "16"]
    split_head_study.main(["all", *args])

    heads = sorted((out / "heads").glob("*.safetensors"))
    assert [h.name for h in heads] == [
        "image+prob_s0.safetensors", "image+prob_s1.safetensors",
        "image_s0.safetensors", "image_s1.safetensors",
    ]  # fmt: skip
    assert load_split_head(heads[2]).inputs == "image"
    assert split_head_metadata(heads[0])["steps"] == "3"
    rows = read_rows(out / "rows.csv")
    # 3 images × (the watershed + 2 arms × 2 seeds × 2 core levels)
    assert len(rows) == 3 * (1 + 2 * 2 * 2)
    assert {r["arm"] for r in rows} == {"watershed", "image+prob", "image"}
    text = (docs / "split_head.md").read_text()
    assert "## Answer" in text and "## Paired by seed" in text
    assert "split head, image + probability (core >" in text and "| watershed of" in text
    assert (docs / "images" / "split_head.png").stat().st_size > 1000

    stamp = heads[0].stat().st_mtime_ns
    split_head_study.main(["train", *args])  # cached: no head is trained again
    assert heads[0].stat().st_mtime_ns == stamp

    # flip averaging scored on the held-out images beside the plain head
    split_head_study.main(["flips", *args, "--flip-setting", "0.4", "16"])
    flips = (out / "flips.csv").read_text().splitlines()
    assert len(flips) == 1 + 1 * 2 * 2 * 2  # 1 test image × 2 arms × 2 seeds × with/without

    # why the held-out nuclei were missed, per dataset
    split_head_study.main(["errors", *args, "--flip-setting", "0.4", "16"])
    errors = (out / "errors.md").read_text()
    assert "| missed: merged |" in errors and "4 head(s) at core > 0.4, ≥ 16 px" in errors

    # the head's foreground threshold, chosen on the training images
    split_head_study.main(["thresholds", *args, "--flip-setting", "0.4", "16",
                           "--thresholds", "0.4", "0.5"])  # fmt: skip
    levels = (out / "thresholds.md").read_text()
    assert "(chosen)" in levels and "| foreground threshold | training PQ (chooses) |" in levels
    assert (
        len((out / "thresholds.csv").read_text().splitlines()) == 1 + 3 * 2 * 2
    )  # images × heads × levels

    # a second recipe (three levels) on the same maps, compared paired by seed
    import shutil

    deep = tmp_path / "deep"
    shutil.copytree(out / "maps", deep / "maps")
    deep_args = [*args, "--out", str(deep), "--arms", "image+prob", "--depth", "3"]
    split_head_study.main(["train", *deep_args])
    split_head_study.main(["score", *deep_args])
    assert load_split_head(deep / "heads" / "image+prob_s0.safetensors").depth == 3
    split_head_study.main(["compare", *deep_args, "--against", str(out)])
    table = (deep / "compare.md").read_text()
    assert "| PQ out | deep |" in table and "PQ difference per seed" in table
    assert table.count(" / ") >= 2  # two seeds paired, per dataset and the mean
    assert (
        "— out: core >" in table
        and "; deep: core >" in table
        and "One pass over a 1000² tile" in table
    )

    # packaging a head of the study: the file and its card entry (SHA-256, chosen core level)
    import hashlib
    import importlib.util
    import json

    from sampo_engine.models.availability import shipped_weights_dir

    spec = importlib.util.spec_from_file_location("ship", ROOT / "tools" / "ship_split_head.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(shipped_weights_dir() / "nuclei_small.json", weights / "nuclei_small.json")
    ship.main(["--study", str(out), "--arm", "image", "--seed", "1", "--weights", str(weights)])
    entry = json.loads((weights / "nuclei_small.json").read_text())["split_head"]
    shipped = weights / ship.FILE
    assert entry["sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert entry["inputs"] == "image" and entry["core_level"] in (0.4, 0.6)
    assert "--steps 3" in entry["recipe"] and load_split_head(shipped).inputs == "image"
    assert "--depth" not in entry["recipe"] and entry["depth"] == 2
