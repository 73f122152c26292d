"""Does prompt propagation segment a whole image from clicks in one corner?

For held-out 1000 × 1000 images of ``../shared/data`` (CoNSeP, MoNuSeg) this runs the
:class:`~sampo_engine.predict.predictor.TilePredictor` on the whole image and scores the
whole-image Dice of its mask against the ground truth, in three settings:

  one-region+prop  3 positive + 3 negative clicks in ONE tile (the tile holding the most target
                   nuclei), propagation on: what a user in napari does;
  one-region       the same clicks, propagation off: only the clicked tile is segmented (a floor);
  every-tile       3 + 3 clicks in EVERY tile that holds a target nucleus, each inside that
                   tile's exclusive core where possible (the paper's setting: every 224 px patch
                   gets its own prompts; an upper bound for propagation).

Clicks follow the evaluation sampler (:func:`sampo_engine.prompts.sample_eval_prompts`: nucleus
centres; T2 negatives on other classes' nuclei, else background), seeded per image and intent.
Intents: T1 on every image; T2 for every class of a CoNSeP image (class maps needed).

THE NUMBERS DEPEND ON THE MODEL. A SAM whose embeddings separate nuclei from background (and
cell types from each other) propagates well; a random or briefly trained tiny model does not.
Re-run this with a real trained adapter::

    python tools/propagation_study.py --adapter runs/consep_vit_b --out study.json

Usage (what docs/inference.md reports, with a tiny model trained for ~3 min)::

    python tools/propagation_study.py --adapter /tmp/sampo_study/tiny200 \\
        --consep train_21 train_24 train_27 --monuseg 3 --similarity 0.3 0.5 0.7
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"


def _load(folder: Path, image_id: str):
    import tifffile

    from sampo_engine.utils.imageio import read_image

    image = read_image(folder / f"{image_id}_image.png")
    inst = tifffile.imread(folder / f"{image_id}_inst.tif").astype(np.int32)
    cls_path = folder / f"{image_id}_class.tif"
    cls = tifffile.imread(cls_path).astype(np.uint8) if cls_path.is_file() else None
    return image, inst, cls


def _regions(starts: np.ndarray, tile: int, length: int) -> list[tuple[int, int]]:
    """Per tile along one axis: its exclusive core [a, b) (covered by no other tile)."""
    out = []
    for i, s in enumerate(starts):
        a = int(starts[i - 1] + tile) if i > 0 else 0
        b = int(starts[i + 1]) if i + 1 < len(starts) else length
        a, b = max(a, int(s)), min(b, int(s) + tile)
        if b <= a:  # overlap wider than the core: fall back to the midpoint cell
            lo = (int(starts[i - 1]) + tile + int(s)) // 2 if i > 0 else 0
            hi = (int(s) + tile + int(starts[i + 1])) // 2 if i + 1 < len(starts) else length
            a, b = lo, hi
        out.append((a, b))
    return out


def _clicks_in(inst, cls, intent, box, rng):
    """Eval prompts sampled inside ``box`` = (r0, r1, c0, c1); None if no target nucleus there."""
    from sampo_engine.eval.whole import clicks_in_box

    return clicks_in_box(inst, cls, intent, box, rng)


def _target_count(inst, cls, intent, box) -> int:
    from sampo_engine.eval.whole import count_targets

    return count_targets(inst, cls, intent, box)


def run(args) -> dict:
    from sampo_engine.models.loading import load_model
    from sampo_engine.predict.predictor import PredictConfig, TilePredictor
    from sampo_engine.predict.tiling import axis_starts
    from sampo_engine.prompts import Intent, available_intents, eval_seed, target_mask
    from sampo_engine.scoring.metrics import dice

    model = load_model(
        None if args.adapter else args.model,
        checkpoint=args.checkpoint or None,
        adapter=args.adapter or None,
        allow_random=args.random_weights,
    )
    data = Path(args.data)
    images = [("consep", data / "consep_train", i) for i in args.consep]
    mon = sorted((data / "monuseg_train").glob("*_image.png"))[: args.monuseg]
    images += [("monuseg", data / "monuseg_train", p.name[: -len("_image.png")]) for p in mon]

    rows = []
    predictor = TilePredictor(PredictConfig(device=args.device, overlap=args.overlap), model=model)
    for dataset, folder, image_id in images:
        image, inst, cls = _load(folder, image_id)
        t0 = time.perf_counter()
        predictor.set_image(image)
        enc = time.perf_counter() - t0
        grid = predictor._entry.grid
        s = grid.tile
        ys = axis_starts(grid.height, s, grid.overlap)
        xs = axis_starts(grid.width, s, grid.overlap)
        core_r, core_c = _regions(ys, s, grid.height), _regions(xs, s, grid.width)
        intents = [Intent("t1")] + (
            [i for i in available_intents(inst, cls, "t2")] if cls is not None else []
        )
        for intent in intents:
            target = target_mask(inst, cls, intent)
            rng_seed = eval_seed(args.seed, f"{dataset}/{image_id}", intent)
            # one region: the tile with the most target nuclei
            boxes = [(int(y), int(y) + s, int(x), int(x) + s) for y, x in zip(grid.y0, grid.x0)]
            best = int(np.argmax([_target_count(inst, cls, intent, b) for b in boxes]))
            one = _clicks_in(inst, cls, intent, boxes[best], np.random.default_rng(rng_seed))
            # every tile: clicks in each tile's exclusive core (else the whole tile)
            every_pts, every_lab = [], []
            for k, (y, x) in enumerate(zip(grid.y0, grid.x0)):
                iy, ix = int(np.searchsorted(ys, y)), int(np.searchsorted(xs, x))
                core = (*core_r[iy], *core_c[ix])
                rng = np.random.default_rng(rng_seed + 1 + k)
                got = _clicks_in(inst, cls, intent, core, rng)
                if got is None:
                    got = _clicks_in(inst, cls, intent, boxes[k], rng)
                if got is not None:
                    every_pts.append(got[0])
                    every_lab.append(got[1])
            settings = {"every-tile": (np.concatenate(every_pts), np.concatenate(every_lab), False)}
            settings["one-region"] = (one[0], one[1], False)
            for sim in args.similarity:
                settings[f"one-region+prop@{sim:g}"] = (one[0], one[1], sim)
            for name, (pts, lab, sim) in settings.items():
                predictor.config.propagate = sim is not False
                if sim is not False:
                    predictor.config.similarity = float(sim)
                pred = predictor.predict(pts, lab, task=intent.task)
                rows.append(
                    {
                        "dataset": dataset,
                        "image": image_id,
                        "intent": str(intent),
                        "task": intent.task,
                        "setting": name,
                        "dice": dice(pred.mask, target),
                        "tiles": pred.num_tiles,
                        "tiles_clicked": pred.tiles_with_prompts,
                        "tiles_propagated": pred.tiles_propagated,
                        "target_tiles": int(
                            sum(_target_count(inst, cls, intent, b) > 0 for b in boxes)
                        ),
                        "seconds": pred.seconds,
                    }
                )
        print(
            f"{dataset}/{image_id}: {len(intents)} intent(s), encode {enc:.1f} s", file=sys.stderr
        )
    return summarize(rows, args)


def summarize(rows: list[dict], args) -> dict:
    table: dict[str, dict[str, float]] = {}
    for task in ("t1", "t2"):
        for setting in dict.fromkeys(r["setting"] for r in rows):
            sel = [r for r in rows if r["task"] == task and r["setting"] == setting]
            if not sel:
                continue
            table[f"{task} {setting}"] = {
                "dice": float(np.mean([r["dice"] for r in sel])),
                "n": len(sel),
                "prompted_tiles": float(
                    np.mean(
                        [(r["tiles_clicked"] + r["tiles_propagated"]) / r["tiles"] for r in sel]
                    )
                ),
                "target_tiles": float(np.mean([r["target_tiles"] / r["tiles"] for r in sel])),
            }
    return {
        "model": {"adapter": args.adapter, "model": args.model, "random": args.random_weights},
        "summary": table,
        "rows": rows,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--adapter", default="", help="adapter bundle (its model type is used)")
    parser.add_argument("--model", default="vit_b", help="model type without --adapter")
    parser.add_argument("--checkpoint", default="", help="base checkpoint .pth")
    parser.add_argument("--random-weights", action="store_true", help="allow random base weights")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder")
    parser.add_argument(
        "--consep", nargs="*", default=["train_21", "train_24", "train_27"], help="CoNSeP image ids"
    )
    parser.add_argument("--monuseg", type=int, default=3, help="first N MoNuSeg images")
    parser.add_argument("--similarity", type=float, nargs="+", default=[0.5], help="τ values")
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="write the summary and every row as JSON")
    args = parser.parse_args(argv)
    result = run(args)
    print(f"{'intent / setting':40s} {'Dice':>6s} {'n':>4s} {'prompted':>9s} {'target':>7s}")
    for name, r in result["summary"].items():
        print(
            f"{name:40s} {100 * r['dice']:6.1f} {r['n']:4d} {100 * r['prompted_tiles']:8.0f}% "
            f"{100 * r['target_tiles']:6.0f}%"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
