"""The project's own folder format (that of ``../shared/data``): reader and writer.

Layout, for each image ``<id>``:

- ``<id>_image.png`` (or ``.tif``/``.tiff``/``.jpg``/``.jpeg``): the image. Anything
  :func:`~sampo_engine.utils.imageio.to_rgb_uint8` accepts is converted to RGB uint8: gray is
  replicated, alpha dropped, 16-bit scaled by its dtype range, float by its value range.
- ``<id>_inst.tif``: instance map (uint16, or uint32 beyond 65,535 nuclei), 0 = background.
- ``<id>_class.tif`` (optional): uint8 per-pixel class id, 0 = background.
- ``meta.json`` (optional): ``"classes": {"0": "background", "1": "name", ...}`` (or null for
  no classes) and ``"images": [{"id": ..., "tissue": ...}, ...]`` (tissue optional).

Images whose label maps hold no nuclei are kept (:func:`count_empty` counts them; trainers skip).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path

import numpy as np

from sampo_engine.data.sample import NucleiDataset, NucleiSample
from sampo_engine.errors import DataError
from sampo_engine.utils.atomic import atomic_path, write_json_atomic
from sampo_engine.utils.imageio import read_image, read_label_tif

_IMAGE_RE = re.compile(r"^(?P<id>.+)_image(?P<ext>\.(png|tiff?|jpe?g))$", re.IGNORECASE)
_LAYOUT_HELP = (
    "The folder format expects <id>_image.png|.tif|.jpg with <id>_inst.tif (uint16 instance "
    "map) and optionally <id>_class.tif (uint8 class map) and meta.json."
)


def natural_key(text: str) -> list:
    """Sort key that orders ``img_2`` before ``img_10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def parse_class_names(classes, source: str = "meta.json") -> dict[int, str]:
    """Class id -> name from a meta.json ``classes`` entry; id 0 (background) is dropped.

    Accepts a mapping ``{"1": "name", ...}`` (string or int keys), a list of names (index = id,
    a leading "background" entry taken as id 0), or None / empty for no classes.

    Raises:
        DataError: keys that are not non-negative integers, or another structure.
    """
    if not classes:
        return {}
    if isinstance(classes, Mapping):
        names = {}
        for key, value in classes.items():
            try:
                class_id = int(key)
            except (TypeError, ValueError):
                raise DataError(
                    f"{source}: class id {key!r} is not an integer. Write classes as "
                    '{"0": "background", "1": "name", ...}.'
                ) from None
            if class_id < 0 or class_id > 255:
                raise DataError(f"{source}: class id {class_id} is outside 0..255; renumber it.")
            if class_id:
                names[class_id] = str(value)
        return dict(sorted(names.items()))
    if isinstance(classes, (list, tuple)):
        offset = 0 if str(classes[0]).lower() == "background" else 1
        return {i + offset: str(n) for i, n in enumerate(classes) if i + offset > 0}
    raise DataError(
        f"{source}: 'classes' must be a mapping of id to name or a list of names, got "
        f'{type(classes).__name__}. Write classes as {{"1": "name", ...}}.'
    )


def _read_meta(folder: Path) -> dict:
    path = folder / "meta.json"
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"Cannot read {path}: {exc}. Fix the JSON or delete meta.json.") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path} must hold a JSON object (with 'classes', 'images' ...).")
    return meta


def _find_label(folder: Path, image_id: str, kind: str) -> Path | None:
    for suffix in (".tif", ".tiff"):
        path = folder / f"{image_id}_{kind}{suffix}"
        if path.is_file():
            return path
    return None


def _list_few(items: Iterable[str], n: int = 5) -> str:
    items = list(items)
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _load_sample(
    image_path: Path,
    inst_path: Path,
    class_path: Path | None,
    name: str,
    tissue: str | None,
    class_ids: frozenset[int] | None,
) -> NucleiSample:
    """Read one sample from disk; checks sizes and class ids (see :func:`read_folder`)."""
    image = read_image(image_path)
    inst = read_label_tif(inst_path)
    if inst.shape != image.shape[:2]:
        raise DataError(
            f"Image {name!r}: image is {image.shape[0]}x{image.shape[1]} (HxW) but its instance "
            f"map {inst_path.name} is {inst.shape[0]}x{inst.shape[1]}. Re-export the pair at the "
            "same size."
        )
    cls = None
    if class_path is not None:
        cls = read_label_tif(class_path)
        if cls.shape != inst.shape:
            raise DataError(
                f"Image {name!r}: class map {class_path.name} is {cls.shape[0]}x{cls.shape[1]} "
                f"but the instance map is {inst.shape[0]}x{inst.shape[1]}. Re-export them at "
                "the same size."
            )
        if cls.max(initial=0) > 255:
            raise DataError(f"Image {name!r}: class ids above 255 in {class_path.name}.")
        cls = cls.astype(np.uint8)
        if class_ids is not None:
            found = set(np.unique(cls).tolist()) - {0}
            unknown = sorted(found - class_ids)
            if unknown:
                raise DataError(
                    f"Image {name!r}: class map {class_path.name} holds class id(s) {unknown} "
                    f"that meta.json does not declare (declared: {sorted(class_ids)}). Add them "
                    "to meta.json's 'classes' or fix the class map."
                )
    return NucleiSample(image=image, inst=inst.astype(np.int32), cls=cls, name=name, tissue=tissue)


def read_folder(path: str | os.PathLike) -> NucleiDataset:
    """Open a folder-format dataset (see the module docstring); images load when indexed.

    Class names come from meta.json; without it, class maps make classes named ``class <id>``
    (found by reading the class maps once). Samples are in natural order of their ids
    (``img_2`` before ``img_10``). Sizes and class ids are checked when a sample is loaded.

    Raises:
        DataError: a missing, empty or unrecognised folder; images without ``_inst.tif``; class
            maps for only some images; meta.json declaring classes without class maps; and,
            on loading, size mismatches and class ids that meta.json does not declare.
    """
    folder = Path(path)
    if not folder.exists():
        raise DataError(f"Dataset folder not found: {folder}. Check the path.")
    if not folder.is_dir():
        raise DataError(f"{folder} is a file; point to the folder that holds the images.")
    entries = sorted(p.name for p in folder.iterdir())
    if not entries:
        raise DataError(f"Dataset folder {folder} is empty. {_LAYOUT_HELP}")

    images: dict[str, Path] = {}
    for name in entries:
        match = _IMAGE_RE.match(name)
        if not match:
            continue
        image_id = match["id"]
        if image_id in images:
            raise DataError(
                f"Image id {image_id!r} appears twice in {folder} ({images[image_id].name} and "
                f"{name}). Keep one file per id."
            )
        images[image_id] = folder / name
    if not images:
        raise DataError(
            f"No <id>_image.* files in {folder} (it holds: {_list_few(entries)}). {_LAYOUT_HELP} "
            "For PanNuke, CoNSeP or MoNuSeg layouts use sampo_engine.data.detect.open_dataset."
        )
    ids = sorted(images, key=natural_key)

    inst_paths = {i: _find_label(folder, i, "inst") for i in ids}
    missing = [i for i in ids if inst_paths[i] is None]
    if missing:
        raise DataError(
            f"{len(missing)} image(s) in {folder} have no <id>_inst.tif instance map: "
            f"{_list_few(missing)}. Add the label maps or move those images out of the folder."
        )
    class_paths = {i: _find_label(folder, i, "class") for i in ids}
    with_class = [i for i in ids if class_paths[i] is not None]
    if with_class and len(with_class) != len(ids):
        lacking = [i for i in ids if class_paths[i] is None]
        raise DataError(
            f"{len(lacking)} image(s) in {folder} have no <id>_class.tif while others have one: "
            f"{_list_few(lacking)}. Give every image a class map, or none."
        )

    meta = _read_meta(folder)
    class_names = parse_class_names(meta.get("classes"), str(folder / "meta.json"))
    if class_names and not with_class:
        raise DataError(
            f"{folder / 'meta.json'} declares classes {class_names} but no <id>_class.tif class "
            'maps exist. Add the class maps, or set "classes": null in meta.json.'
        )
    if with_class and not class_names:
        found: set[int] = set()
        for i in ids:
            found |= set(np.unique(read_label_tif(class_paths[i])).tolist())
        class_names = {c: f"class {c}" for c in sorted(found - {0})}
    class_ids = frozenset(class_names) if with_class else None

    tissues = {}
    for entry in meta.get("images") or []:
        if isinstance(entry, Mapping) and "id" in entry and entry.get("tissue"):
            tissues[str(entry["id"])] = str(entry["tissue"])

    samples = [
        partial(
            _load_sample,
            images[i],
            inst_paths[i],
            class_paths[i],
            i,
            tissues.get(i),
            class_ids,
        )
        for i in ids
    ]
    return NucleiDataset(samples, class_names, format="folder", root=str(folder))


def count_empty(dataset: Iterable[NucleiSample]) -> int:
    """Number of samples whose instance map holds no nucleus (this loads every sample)."""
    return sum(1 for sample in dataset if not (sample.inst > 0).any())


def empty_names(dataset: Iterable[NucleiSample]) -> list[str]:
    """Names of the samples whose instance map holds no nucleus (loads every sample)."""
    return [sample.name for sample in dataset if not (sample.inst > 0).any()]


def _safe_id(name: str, index: int) -> str:
    """A file-name-safe id: path separators and odd characters become ``_``."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return safe or f"{index:05d}"


def write_folder(
    samples: NucleiDataset | Iterable[NucleiSample],
    path: str | os.PathLike,
    class_names: Mapping[int, str] | None = None,
    description: str = "",
) -> Path:
    """Write samples in the folder format; every file is written atomically.

    File ids are the sample names with ``/`` and other odd characters replaced by ``_``
    (``fold2/000123`` -> ``fold2_000123``). ``class_names`` defaults to the dataset's.
    ``meta.json`` records the classes (``{"0": "background", ...}`` or null), and per image its
    id, size, nuclei count, per-class counts and tissue. Existing files of the same names are
    replaced; other files in the folder are left alone.

    Returns:
        The folder path.
    Raises:
        DataError: two samples map to the same file id, or an image/label shape mismatch.
    """
    import imageio.v3 as iio
    import tifffile

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    if class_names is None:
        class_names = getattr(samples, "class_names", None) or {}
    class_names = {int(k): str(v) for k, v in class_names.items() if int(k) != 0}
    records = []
    seen: dict[str, str] = {}
    for index, sample in enumerate(samples):
        image_id = _safe_id(sample.name, index)
        if image_id in seen:
            raise DataError(
                f"Samples {seen[image_id]!r} and {sample.name!r} would both be written as "
                f"{image_id!r}. Give the samples unique names."
            )
        seen[image_id] = sample.name
        image = np.asarray(sample.image)
        inst = np.asarray(sample.inst)
        if image.shape[:2] != inst.shape:
            raise DataError(
                f"Sample {sample.name!r}: image {image.shape[:2]} and instance map {inst.shape} "
                "differ in size; fix the sample before writing it."
            )
        with atomic_path(folder / f"{image_id}_image.png") as tmp:
            iio.imwrite(tmp, image, extension=".png")
        inst_dtype = np.uint16 if inst.max(initial=0) <= np.iinfo(np.uint16).max else np.uint32
        with atomic_path(folder / f"{image_id}_inst.tif") as tmp:
            tifffile.imwrite(tmp, inst.astype(inst_dtype), compression="zlib")
        record = {
            "id": image_id,
            "height": int(inst.shape[0]),
            "width": int(inst.shape[1]),
            "n_nuclei": int(np.count_nonzero(np.unique(inst))),
        }
        if sample.cls is not None:
            cls = np.asarray(sample.cls).astype(np.uint8)
            with atomic_path(folder / f"{image_id}_class.tif") as tmp:
                tifffile.imwrite(tmp, cls, compression="zlib")
            record["n_nuclei_per_class"] = _nuclei_per_class(inst, cls)
        if sample.tissue:
            record["tissue"] = sample.tissue
        if image_id != sample.name:
            record["name"] = sample.name
        records.append(record)
    meta = {
        "dataset": description or "written by sampo_engine.data.folder.write_folder",
        "classes": ({"0": "background", **{str(k): v for k, v in sorted(class_names.items())}}
                    if class_names else None),
        "n_images": len(records),
        "total_nuclei": sum(r["n_nuclei"] for r in records),
        "images": records,
        "format": {
            "image": "<id>_image.png RGB uint8",
            "inst": "<id>_inst.tif instance label map (uint16 unless >65535 nuclei), 0 = "
            "background",
            "class": "<id>_class.tif uint8 per-pixel class id, 0 = background (only for "
            "datasets with classes)",
        },
    }  # fmt: skip
    write_json_atomic(folder / "meta.json", meta)
    return folder


def _nuclei_per_class(inst: np.ndarray, cls: np.ndarray) -> dict[str, int]:
    """Instances per class id, as {"<class id>": count}; counts distinct (instance, class)
    pairs, which equals the instance count when every instance carries one class."""
    fg = inst > 0
    if not fg.any():
        return {}
    pairs = np.unique(np.stack([inst[fg], cls[fg]]), axis=1)
    counts: dict[str, int] = {}
    for class_id in np.unique(pairs[1]):
        if class_id:
            counts[str(int(class_id))] = int(np.count_nonzero(pairs[1] == class_id))
    return counts
