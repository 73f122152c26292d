"""``sampo-engine predict``: segment a whole image from a few clicks (T1 or T2), write exports."""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

from sampo_engine._config import add_dataclass_arguments, dataclass_from_args
from sampo_engine.commands import add_threads_argument
from sampo_engine.errors import ConfigError, DataError

EPILOG = """\
Points file: (x, y) = (column, row) in full-image pixels, pixel centres at integers.
  CSV with a header: x,y,positive   (also: label / positive / pos / is_positive / type;
                     values 1/0, true/false, yes/no, pos/neg, positive/negative, +/-;
                     columns col/row or napari's axis-0 (row) / axis-1 (col) are read too)
  JSON: [{"x": 120, "y": 45, "positive": true}, ...]  or  {"points": [...]}
At least one positive point; negatives are optional (at most 3 + 3 are used per tile).
With --task classes the CSV names a class per click instead:  x,y,class
  (e.g. 3 rows "lymphocyte", 3 rows "tumour", ...; at least two classes) and every nucleus of
  the image gets one of them, with its probability (docs/exemplars.md).

Outputs: PREFIX_labels.tif (instances, uint16/32), PREFIX.geojson (QuPath detections),
PREFIX.csv (one row per nucleus). Existing outputs are kept unless --overwrite.

Examples:
  sampo-engine predict tile.png --points clicks.csv --task t1 --adapter runs/consep --out out/tile
  sampo-engine predict slide.ome.tif --level 1 --points p.json --task t2 --class-name Lymphocyte \\
      --adapter runs/consep --out out/slide --cache-dir ~/.cache/sampo/embeddings
"""

X_NAMES = ("x", "col", "column", "axis-1", "axis_1")
Y_NAMES = ("y", "row", "axis-0", "axis_0")
LABEL_NAMES = ("positive", "label", "pos", "is_positive", "polarity", "type", "sign")
TRUE_VALUES = {"1", "true", "t", "yes", "y", "pos", "positive", "+", "1.0"}
FALSE_VALUES = {"0", "false", "f", "no", "n", "neg", "negative", "-", "0.0", "-1"}


def add_parser(subparsers):
    from sampo_engine.predict.config import PredictConfig

    parser = subparsers.add_parser(
        "predict",
        help="segment all nuclei (t1) or all of the clicked type (t2) in an image of any size",
        description="Tile the image at the model input size, encode the tiles once, prompt every "
        "tile with your clicks or with prompts propagated from them, blend, split instances, "
        "and write PREFIX_labels.tif, PREFIX.geojson and PREFIX.csv.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("image", help="image file: PNG, JPEG, TIFF (also multi-page, pyramidal)")
    parser.add_argument("--points", required=True, help="CSV or JSON file of clicks (see below)")
    parser.add_argument("--out", required=True, help="output prefix, e.g. results/tile01")
    parser.add_argument(
        "--level", type=int, default=None, help="pyramid level of a TIFF (0 = full)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads_argument(parser)
    add_dataclass_arguments(parser, PredictConfig)
    return parser


def check_paths(args, config) -> None:
    """Refuse missing inputs before torch is imported: the image, the points file, the adapter
    bundle, the base checkpoint (and a negative --threads)."""
    from sampo_engine import early_checks

    early_checks.image_file(args.image)
    early_checks.points_file(args.points)
    if config.adapter:
        early_checks.adapter_bundle(config.adapter)
    if config.checkpoint:
        early_checks.checkpoint_file(config.checkpoint)
    early_checks.threads_count(args.threads)


def _label_value(text: str, where: str) -> int:
    value = str(text).strip().lower()
    if value in TRUE_VALUES:
        return 1
    if value in FALSE_VALUES:
        return 0
    raise DataError(
        f"{where}: cannot read {text!r} as positive/negative; use 1/0, true/false or pos/neg"
    )


def _number(text, where: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {text!r} is not a number") from None


def _pick(columns: list[str], names: tuple[str, ...]) -> str | None:
    lower = {c.strip().lower(): c for c in columns if c is not None}
    for name in names:
        if name in lower:
            return lower[name]
    return None


def _csv_rows(path: Path):
    """(header, [(line number, row dict), ...]) of a CSV file, blank rows skipped."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        rows = [
            (n, row)
            for n, row in enumerate(reader, start=2)
            if any((v or "").strip() for v in row.values() if isinstance(v, str))
        ]
    return columns, rows


def read_points_csv(path: Path):
    import numpy as np

    columns, rows = _csv_rows(path)
    cx, cy, cl = _pick(columns, X_NAMES), _pick(columns, Y_NAMES), _pick(columns, LABEL_NAMES)
    missing = [n for n, c in (("x", cx), ("y", cy), ("positive", cl)) if c is None]
    if missing:
        raise DataError(
            f"points file {path} lacks the column(s) {', '.join(missing)} (its header: "
            f"{', '.join(c for c in columns if c) or 'none'}); write a header line "
            f"'x,y,positive' with one click per row (positive = 1, negative = 0)"
        )
    pts, labels = [], []
    for n, row in rows:
        where = f"{path.name} line {n}"
        pts.append((_number(row[cx], where), _number(row[cy], where)))
        labels.append(_label_value(row[cl], where))
    return np.asarray(pts, np.float32).reshape(-1, 2), np.asarray(labels, np.int64)


def read_points_json(path: Path):
    import numpy as np

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"points file {path} is not valid JSON: {err}") from None
    if isinstance(data, dict):
        if "points" not in data:
            raise DataError(
                f"points file {path} is a JSON object without a 'points' list; write "
                '{"points": [{"x": ..., "y": ..., "positive": true}, ...]}'
            )
        data = data["points"]
    if not isinstance(data, list):
        raise DataError(f"points file {path}: expected a list of points, got {type(data).__name__}")
    pts, labels = [], []
    for i, item in enumerate(data):
        where = f"{path.name} point #{i}"
        if isinstance(item, dict):
            keys = {str(k).lower(): k for k in item}
            kx, ky = _pick(list(keys), X_NAMES), _pick(list(keys), Y_NAMES)
            kl = _pick(list(keys), LABEL_NAMES)
            missing = [n for n, k in (("x", kx), ("y", ky), ("positive", kl)) if k is None]
            if missing:
                raise DataError(
                    f"{where} lacks {', '.join(missing)}; write "
                    '{"x": 120, "y": 45, "positive": true}'
                )
            x, y, lab = item[keys[kx]], item[keys[ky]], item[keys[kl]]
        elif isinstance(item, (list, tuple)) and len(item) == 3:
            x, y, lab = item
        else:
            raise DataError(f"{where}: expected {{'x', 'y', 'positive'}} or [x, y, positive]")
        pts.append((_number(x, where), _number(y, where)))
        labels.append(_label_value(lab, where) if not isinstance(lab, bool) else int(lab))
    return np.asarray(pts, np.float32).reshape(-1, 2), np.asarray(labels, np.int64)


def read_points(path: str | os.PathLike):
    """(N, 2) float32 (x, y) and (N,) int64 labels from a CSV or JSON points file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"points file {path} not found; pass --points FILE (CSV or JSON)")
    if path.stat().st_size == 0:
        raise DataError(f"points file {path} is empty; write one click per row: x,y,positive")
    if path.suffix.lower() == ".json":
        pts, labels = read_points_json(path)
    else:
        try:
            pts, labels = read_points_csv(path)
        except UnicodeDecodeError:
            raise DataError(f"points file {path} is not a text CSV file") from None
    if len(pts) == 0:
        raise DataError(f"points file {path} holds no points; add at least one positive click")
    return pts, labels


def read_class_points(path: str | os.PathLike):
    """(N, 2) float32 (x, y), (N,) int64 class index and the class names (in order of first
    appearance) from a CSV ``x,y,class`` file (--task classes)."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise DataError(f"points file {path} not found; pass --points FILE (CSV x,y,class)")
    columns, rows = _csv_rows(path)
    cx, cy = _pick(columns, X_NAMES), _pick(columns, Y_NAMES)
    cc = _pick(columns, ("class", "class_name", "classification", "name"))
    if None in (cx, cy, cc):
        raise DataError(
            f"points file {path} needs the columns x, y and class for --task classes (its "
            f"header: {', '.join(c for c in columns if c) or 'none'}); write 'x,y,class' "
            f"with a class name per click"
        )
    pts, names = [], []
    for n, row in rows:
        where = f"{path.name} line {n}"
        name = (row[cc] or "").strip()
        if not name:
            raise DataError(f"{where}: the class is empty; name the class of every click")
        pts.append((_number(row[cx], where), _number(row[cy], where)))
        names.append(name)
    order = list(dict.fromkeys(names))
    if len(order) < 2:
        raise DataError(
            f"points file {path} names {len(order)} class(es); --task classes needs clicks of "
            f"at least two classes (use --task t2 for one type against the rest)"
        )
    classes = np.array([order.index(n) for n in names], np.int64)
    return np.asarray(pts, np.float32).reshape(-1, 2), classes, order


def output_paths(prefix: str) -> dict[str, Path]:
    base = Path(prefix)
    return {
        "labels": base.with_name(base.name + "_labels.tif"),
        "geojson": base.with_name(base.name + ".geojson"),
        "csv": base.with_name(base.name + ".csv"),
    }


def _bar(desc: str, quiet: bool):
    from tqdm.auto import tqdm

    state = {"bar": None}

    def update(done: int, total: int) -> None:
        if quiet:
            return
        bar = state["bar"]
        if bar is None:
            bar = state["bar"] = tqdm(total=total, desc=desc, unit="tile", leave=False)
        bar.total = total
        bar.n = done
        bar.refresh()

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].close()

    return update, close


def run(args) -> int:
    from sampo_engine.predict.predictor import PredictConfig, TilePredictor, check_points

    config = dataclass_from_args(PredictConfig, args)
    config.validate()
    check_paths(args, config)  # before torch: a wrong path is refused at once
    if not args.out or Path(args.out).name in ("", ".", ".."):
        raise ConfigError(
            f"--out {args.out!r} is not a file prefix; pass e.g. --out results/tile01"
        )
    outputs = output_paths(args.out)
    existing = [str(p) for p in outputs.values() if p.exists()]
    if existing and not args.overwrite:
        raise ConfigError(
            f"output(s) exist: {', '.join(existing)}; pass --overwrite to replace them or "
            f"choose another --out prefix"
        )
    import numpy as np

    from sampo_engine.utils.imageio import read_image

    if config.task == "classes":
        points, point_classes, names = read_class_points(args.points)
        labels = np.ones(len(points), np.int64)
    else:
        points, labels = read_points(args.points)
    image = read_image(args.image, level=args.level)
    check_points(points, labels, image.shape[:2])  # refuse bad clicks before loading a model

    from sampo_engine.utils.threads import configure_threads

    configure_threads(args.threads)
    predictor = TilePredictor(config)
    clicks = (
        f"{len(points)} clicks of {len(names)} classes"
        if config.task == "classes"
        else f"{int((labels == 1).sum())} positive + {int((labels == 0).sum())} negative point(s)"
    )
    print(
        f"{Path(args.image).name}: {image.shape[1]} × {image.shape[0]} px, {clicks}, "
        f"{predictor.model_type} at {predictor.image_size} px on {predictor.device}"
    )
    update, close = _bar("encode", args.quiet)
    try:
        predictor.set_image(image, progress=update)
    finally:
        close()
    update, close = _bar("decode", args.quiet)
    try:
        if config.task == "classes":
            result = predictor.classify(points, point_classes, names)
        else:
            result = predictor.predict(points, labels, progress=update)
    finally:
        close()

    from sampo_engine.predict.export import write_prediction

    for p in outputs.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    write_prediction(
        outputs,
        result.labels,
        image=image,
        class_name=result.class_name,
        nucleus=result.nucleus,
        task=result.task,
    )
    for message in result.messages:
        kind = "warning" if message.startswith("magnification:") else "note"
        print(f"{kind}: {message}")
    if config.task == "classes":
        counts = np.bincount(result.nucleus.classes, minlength=len(names))
        what = ", ".join(f"{n} {name}" for n, name in zip(counts.tolist(), names))
        print(f"{result.num_nuclei} nuclei: {what}; {result.seconds:.1f} s after encoding")
    else:
        print(
            f"{result.num_nuclei} nuclei ({config.task.upper()}"
            f"{', ' + result.class_name if result.class_name else ''}); tiles: "
            f"{result.num_tiles}, {result.tiles_with_prompts} clicked, "
            f"{result.tiles_propagated} propagated; {result.encoder_seconds + result.seconds:.1f} s"
        )
    for kind, p in outputs.items():
        print(f"{kind:8s} {p}")
    return 0
