"""Does the model-free nucleus size tell a 20× image from a 40× one? (docs/magnification.md)

Every image of the six H&E sets of ``../shared/data`` — 40×: CoNSeP, MoNuSeg, GBM40, PanNuke-2;
20×: BRCA-M2C, CRCHistoPhenotypes — is measured by :func:`~sampo_engine.nuclei.scale.
typical_nucleus_radius` as it is and resampled by ½ and 2 (so each set is seen at three pixel
sizes). Per row: the pixel size its nuclei imply, and whether :func:`~sampo_engine.nuclei.scale.
check_scale` warns when told (a) the model's 0.25 µm/px — a user who says nothing — and (b) the
image's true pixel size — a user who says it right (a warning then is a false alarm).

    python tools/magnification_study.py --out runs/magnification_study

Writes ``scale.csv``, the page ``docs/magnification.md`` and its plot
``docs/images/magnification.png``. About 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

#: folder → (name on the page, µm/px as scanned)
DATASETS = {
    "consep_train": ("CoNSeP", 0.25),
    "monuseg_train": ("MoNuSeg", 0.25),
    "gbm40": ("GBM40", 0.25),
    "pannuke_breast_2class": ("PanNuke-2", 0.25),
    "brca_m2c_points": ("BRCA-M2C", 0.5),
    "crchisto_points": ("CRCHistoPhenotypes", 0.5),
}
FACTORS = (0.5, 1.0, 2.0)
FIELDS = ("dataset", "image", "factor", "um_per_px", "radius_px", "foreground")
#: warn factors compared on the page
TRADE_OFF = (1.4, 1.5, 1.6, 1.7, 1.8, 2.0)


def measure(shared: Path, datasets=tuple(DATASETS), max_images: int = 0, progress=True):
    """One row per image × factor (dicts of :data:`FIELDS`); ``um_per_px`` is the true pixel size
    of the image as measured (as scanned / factor)."""
    from skimage.io import imread
    from tqdm import tqdm

    from sampo_engine.nuclei.scale import MAX_SIDE, typical_nucleus_radius
    from sampo_engine.predict.resample import resample_image

    jobs = []
    for folder in datasets:
        files = sorted((shared / folder).glob("*_image.png"))
        jobs += [(folder, f) for f in (files[:max_images] if max_images else files)]
    rows = []
    for folder, path in tqdm(jobs, desc="images", disable=not progress, file=sys.stdout):
        rgb = imread(path)[..., :3]
        for factor in FACTORS:
            # only the measured window is resampled (the same pixels, faster)
            side = int(np.ceil(MAX_SIDE / factor)) + 4
            h, w = rgb.shape[:2]
            top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
            shown = resample_image(
                np.ascontiguousarray(rgb[top : top + side, left : left + side]), factor
            )
            scale = typical_nucleus_radius(shown)
            r = scale.radius_px
            rows.append(
                {
                    "dataset": folder,
                    "image": path.name[: -len("_image.png")],
                    "factor": factor,
                    "um_per_px": DATASETS[folder][1] / factor,
                    "radius_px": "" if r is None else round(r, 3),
                    "foreground": round(scale.foreground, 4),
                }
            )
    return rows


def implied(row) -> float | None:
    """The pixel size (µm) a row's nuclei imply: 0.25 × the reference radius / its radius."""
    from sampo_engine.nuclei.scale import REFERENCE_RADIUS_PX, REFERENCE_UM_PER_PX

    if row["radius_px"] in ("", None):
        return None
    return REFERENCE_UM_PER_PX * REFERENCE_RADIUS_PX / float(row["radius_px"])


def trade_off_rows(rows):
    """Per warn factor: [factor, warned on images at 0.5 µm/px (2× too small, told nothing),
    at 0.125 (2× too large), false alarms at 0.25 (the true size, told nothing), false alarms
    told the true size (every image)] — shares of the measurable images."""
    out = []
    for factor in TRADE_OFF:
        cells = [f"{factor:g}"]
        for truth, told_truth in ((0.5, False), (0.125, False), (0.25, False), (None, True)):
            sel = [r for r in rows if implied(r) is not None
                   and (truth is None or abs(float(r["um_per_px"]) - truth) < 1e-9)]  # fmt: skip
            told = [float(r["um_per_px"]) if told_truth else 0.25 for r in sel]
            ratio = np.array([implied(r) / t for r, t in zip(sel, told)])
            warned = (ratio > factor) | (ratio < 1 / factor)
            cells.append(f"{warned.mean() * 100:.0f} %" if len(sel) else "—")
        out.append(cells)
    return out


def reference_radius(rows) -> float:
    """Median radius of the 40× sets as scanned (what :data:`REFERENCE_RADIUS_PX` records)."""
    r = [
        float(x["radius_px"])
        for x in rows
        if float(x["factor"]) == 1.0 and DATASETS[x["dataset"]][1] == 0.25 and x["radius_px"] != ""
    ]
    return float(np.median(r)) if r else float("nan")


def _warned(size: float, told: float) -> bool:
    from sampo_engine.nuclei.scale import WARN_FACTOR

    ratio = size / told
    return not 1 / WARN_FACTOR <= ratio <= WARN_FACTOR


def summary_rows(rows):
    """Per dataset × factor: [set, as scanned, shown at, n, unmeasured, median implied (IQR),
    warned when told 0.25, false alarms when told the truth]."""
    out = []
    for folder, (name, scanned) in DATASETS.items():
        for factor in FACTORS:
            sel = [r for r in rows if r["dataset"] == folder and float(r["factor"]) == factor]
            if not sel:
                continue
            truth = scanned / factor
            sizes = np.array([implied(r) for r in sel if implied(r) is not None])
            missing = len(sel) - len(sizes)
            if len(sizes):
                q1, med, q3 = np.percentile(sizes, [25, 50, 75])
                told_default = np.mean([_warned(v, 0.25) for v in sizes]) * 100
                told_truth = np.mean([_warned(v, truth) for v in sizes]) * 100
                cells = [
                    f"{med:.2f} ({q1:.2f}–{q3:.2f})",
                    f"{told_default:.0f} %",
                    f"{told_truth:.0f} %",
                ]
            else:
                cells = ["—", "—", "—"]
            out.append([name, f"{scanned:g}", f"{truth:g}", len(sel), missing, *cells])
    return out


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sampo_engine.nuclei.scale import WARN_FACTOR

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    names = list(DATASETS)
    for i, folder in enumerate(names):
        for j, factor in enumerate(FACTORS):
            v = [implied(r) for r in rows if r["dataset"] == folder
                 and float(r["factor"]) == factor and implied(r) is not None]  # fmt: skip
            if not v:
                continue
            x = j * (len(names) + 2) + i
            ax.boxplot(v, positions=[x], widths=0.7, showfliers=False, patch_artist=True,
                       boxprops={"facecolor": f"C{i}", "alpha": 0.6}, medianprops={"color": "k"})  # fmt: skip
            truth = DATASETS[folder][1] / factor
            ax.plot([x - 0.4, x + 0.4], [truth, truth], color="k", lw=2)
    ax.axhspan(0.25 / WARN_FACTOR, 0.25 * WARN_FACTOR, color="0.85", zorder=0)
    ax.set_yscale("log")
    ax.set_yticks([0.125, 0.25, 0.5, 1.0])
    ax.set_yticklabels(["0.125", "0.25", "0.5", "1"])
    ax.set_ylabel("pixel size the nuclei imply (µm/px)")
    ax.set_xticks([j * (len(names) + 2) + (len(names) - 1) / 2 for j in range(len(FACTORS))])
    ax.set_xticklabels([f"images resampled ×{f:g}" for f in FACTORS])
    handles = [plt.Rectangle((0, 0), 1, 1, color=f"C{i}", alpha=0.6) for i in range(len(names))]
    ax.legend(handles, [DATASETS[n][0] for n in names], fontsize=7, ncol=2, loc="upper right")
    ax.set_title(
        "black bar: true pixel size; grey: no warning when the model assumes 0.25", fontsize=9
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def page(rows, command: str) -> str:
    from sampo_engine.nuclei.scale import KEPT_SHARE, REFERENCE_RADIUS_PX, WARN_FACTOR
    from sampo_engine.utils.tables import markdown_table

    ref = reference_radius(rows)
    table = markdown_table(
        ["set", "scanned (µm/px)", "shown at (µm/px)", "images", "not measurable",
         "implied µm/px: median (IQR)", "warned, model told nothing (0.25)",
         "warned, told the true size (false alarm)"],
        summary_rows(rows),
    )  # fmt: skip
    trade = markdown_table(
        ["warn factor", "warned: 2× too small (0.5 µm/px, told 0.25)",
         "warned: 2× too large (0.125 µm/px, told 0.25)", "false alarms: 40× told 0.25",
         "false alarms: every image told its true size"],
        trade_off_rows(rows),
    )  # fmt: skip
    return f"""# Magnification check: are the nuclei the size the model was trained on?

`nuclei-small` was trained on 40× images (about 0.25 µm/px). Shown a 20× image it sees nuclei at
half the size and misses or merges them. Before the model looks at an image, the predictor
measures its nuclei without a model (`sampo_engine.nuclei.scale`: the granulometric radius of
the dark hematoxylin foreground, the disk radius whose opening keeps {KEPT_SHARE * 100:.0f} % of its area)
and warns when they imply a pixel size more than {WARN_FACTOR:g}× away from the one assumed. The
remedy the warning names: tell the predictor the pixel size (`--um-per-px 0.5` on the command
line, "Pixel size" under the Segment dock's Options), and the image is resampled so that its
nuclei have the trained size. What we make of it:
[magnification_discussion.md](magnification_discussion.md).

Made by:

```bash
{command}
```

Every image of the six sets, as scanned and resampled by ½ and 2 (bilinear, area-averaged when
shrinking). Reference radius: the median over the 40× sets as scanned = **{ref:.1f} px** (the
engine uses {REFERENCE_RADIUS_PX:g} px). "Implied" = 0.25 µm/px × {REFERENCE_RADIUS_PX:g} px / the
image's radius.

{table}

![implied vs true pixel size](images/magnification.png)

How often a warning comes, by warn factor (the engine uses {WARN_FACTOR:g}):

{trade}
"""


def main(argv=None, repo: Path | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", default="../shared/data", help="the shared data folder")
    parser.add_argument("--out", default="runs/magnification_study", help="folder for scale.csv")
    parser.add_argument("--max-images", type=int, default=0, help="per set (0 = all)")
    parser.add_argument("--reuse", action="store_true",
                        help="page and plot from the --out folder's scale.csv, measuring nothing")  # fmt: skip
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS),
                        help="the sets measured (default: all six)")  # fmt: skip
    parser.add_argument(
        "--page", default="magnification.md", help="page name under docs/ ('' = none)"
    )
    parser.add_argument("--docs", default="", help="docs folder (default: the repository's)")
    args = parser.parse_args(argv)
    from sampo_engine.utils.atomic import write_text_atomic

    shared, out = Path(args.shared), Path(args.out)
    missing = [d for d in args.datasets if not (shared / d).is_dir()]
    if missing and not args.reuse:
        parser.error(f"{shared} lacks {', '.join(missing)}; pass --shared the shared data folder")
    if args.reuse:
        if not (out / "scale.csv").is_file():
            parser.error(f"--reuse: {out / 'scale.csv'} does not exist; run without --reuse first")
        with open(out / "scale.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = measure(shared, args.datasets, max_images=args.max_images)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "scale.csv.tmp", "w", newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        (out / "scale.csv.tmp").replace(out / "scale.csv")
    for line in markdown_lines(rows):
        print(line)
    if args.page:
        docs = Path(args.docs) if args.docs else (repo or Path.cwd()) / "docs"
        command = "python tools/magnification_study.py --out " + str(args.out)
        if args.max_images:
            command += f" --max-images {args.max_images}"
        if list(args.datasets) != list(DATASETS):
            command += " --datasets " + " ".join(args.datasets)
        plot(rows, docs / "images" / "magnification.png")
        write_text_atomic(docs / args.page, page(rows, command))
        print(f"wrote {docs / args.page}")
    return 0


def markdown_lines(rows) -> list[str]:
    from sampo_engine.utils.tables import markdown_table

    lines = [f"reference radius (40× as scanned): {reference_radius(rows):.2f} px"]
    lines += markdown_table(
        ["set", "scanned", "shown", "n", "n/a", "implied", "warned@0.25", "false alarm"],
        summary_rows(rows),
    ).splitlines()
    lines += markdown_table(
        ["factor", "2x small", "2x large", "fa 40x@0.25", "fa told truth"], trade_off_rows(rows)
    ).splitlines()
    return lines
