"""Reader for MoNuSeg (Kumar et al., IEEE TMI 2017/2019): TIFF images + Aperio XML polygons.

Layouts: images (``.tif``, also ``.png``) and annotations (``.xml``, same stem) in one folder,
or in ``Tissue Images/`` (also ``Tissue_Images``) and ``Annotations/`` sub-folders.

Annotation XML (Aperio ImageScope): ``Annotations/Annotation/Regions/Region/Vertices/Vertex``
with attributes ``X`` (column) and ``Y`` (row), in pixels. Each Region is one nucleus; polygons
are rasterised with :func:`skimage.draw.polygon`, later regions overwriting earlier ones where
they overlap (as ``../shared/data/monuseg_train`` was made). MoNuSeg has no classes.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from functools import partial
from pathlib import Path

import numpy as np

from sampo_engine.data.folder import natural_key
from sampo_engine.data.sample import NucleiDataset, NucleiSample
from sampo_engine.errors import DataError
from sampo_engine.utils.imageio import read_image

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
_IMAGE_DIRS = ("tissue images", "tissue_images", "tissueimages", "images")
_LAYOUT_HELP = (
    "MoNuSeg's layout is <id>.tif images with <id>.xml annotations, in one folder or in "
    "'Tissue Images/' and 'Annotations/' sub-folders."
)


def read_polygons(path: str | os.PathLike) -> list[np.ndarray]:
    """Polygons of an Aperio XML file, each a (K, 2) float64 array of (row, col) = (Y, X).

    Regions with fewer than 3 vertices are skipped.

    Raises:
        DataError: the file is not well-formed XML.
    """
    path = Path(path)
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError) as exc:
        raise DataError(
            f"Cannot parse annotation {path}: {exc}. Re-download it; MoNuSeg annotations are "
            "Aperio XML (Annotation/Regions/Region/Vertices/Vertex X= Y=)."
        ) from None
    polygons = []
    for region in tree.getroot().iter("Region"):
        try:
            points = [(float(v.get("Y")), float(v.get("X"))) for v in region.iter("Vertex")]
        except (TypeError, ValueError):
            raise DataError(
                f"{path}: region {region.get('Id', '?')} has a vertex without numeric X/Y. "
                "Fix or re-export the annotation."
            ) from None
        if len(points) >= 3:
            polygons.append(np.asarray(points, dtype=np.float64))
    return polygons


def rasterize_polygons(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Instance map (H, W) int32 from (row, col) polygons: polygon k gets id k + 1, later ones
    win overlaps; parts outside ``shape`` are clipped (ids of vanished polygons are absent)."""
    from skimage.draw import polygon

    inst = np.zeros(shape, np.int32)
    for index, poly in enumerate(polygons, start=1):
        rr, cc = polygon(poly[:, 0], poly[:, 1], shape=shape)
        inst[rr, cc] = index
    return inst


def load_monuseg_sample(image_path: str, xml_path: str, name: str) -> NucleiSample:
    """Read one image and rasterise its annotation to an instance map of the same size."""
    image = read_image(image_path)
    inst = rasterize_polygons(read_polygons(xml_path), image.shape[:2])
    return NucleiSample(image=image, inst=inst, cls=None, name=name)


def _sub_folder(root: Path, names: tuple[str, ...]) -> Path | None:
    for child in sorted(root.iterdir()):
        if child.is_dir() and child.name.lower() in names:
            return child
    return None


def find_pairs(root: str | os.PathLike) -> tuple[dict[str, Path], dict[str, Path]]:
    """(images by stem, annotations by stem) of a MoNuSeg folder, either layout."""
    root = Path(root)
    if not root.is_dir():
        return {}, {}
    image_dir = _sub_folder(root, _IMAGE_DIRS) or root
    xml_dir = _sub_folder(root, ("annotations",)) or root
    images = {
        p.stem: p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    }
    xmls = {p.stem: p for p in xml_dir.iterdir() if p.is_file() and p.suffix.lower() == ".xml"}
    return images, xmls


def read_monuseg(root: str | os.PathLike) -> NucleiDataset:
    """Open a MoNuSeg folder as a lazy dataset (format 'monuseg', no classes), samples named
    by file stem in natural order.

    Raises:
        DataError: missing folder, no annotated images, or images without an .xml.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"MoNuSeg folder not found: {root}. Check the path.")
    images, xmls = find_pairs(root)
    if not xmls or not images:
        raise DataError(
            f"No MoNuSeg images with .xml annotations in {root} ({len(images)} image(s), "
            f"{len(xmls)} .xml). {_LAYOUT_HELP}"
        )
    missing = sorted(set(images) - set(xmls), key=natural_key)
    if missing:
        raise DataError(
            f"{len(missing)} MoNuSeg image(s) in {root} have no .xml annotation: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}. Add the annotations "
            "or move those images out."
        )
    samples = [
        partial(load_monuseg_sample, str(images[stem]), str(xmls[stem]), stem)
        for stem in sorted(images, key=natural_key)
    ]
    return NucleiDataset(samples, {}, format="monuseg", root=str(root))
