"""Pool several datasets into one: ``--data a,b,c`` trains on the images of all three.

Class ids are per dataset (CoNSeP's 1 is "other", PanNuke-2-class's 1 is "neoplastic"), so the
pool renumbers them: each dataset's classes follow the previous datasets' ones and keep their
names, prefixed with the dataset's folder name (``consep_train: other``). A dataset without
classes stays T1-only inside the pool (its samples have ``cls`` None); T2 intents come from the
datasets that have classes. Sample names become ``<folder name>/<id>`` so they stay unique.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sampo_engine.data.sample import NucleiDataset, NucleiSample
from sampo_engine.errors import DataError


def split_data_spec(spec: str | os.PathLike) -> list[str]:
    """The folders named by a ``--data`` value: one path, or several separated by commas."""
    parts = [p.strip() for p in str(spec).split(",")]
    if len(parts) > 1 and not all(parts):
        raise DataError(f"--data {spec!r} has an empty entry; separate folders with single commas")
    return parts


def _renumbered(dataset: NucleiDataset, index: int, prefix: str, offset: int) -> NucleiSample:
    sample = dataset[index]
    cls = sample.cls
    if cls is not None and offset:
        cls = np.where(cls > 0, cls.astype(np.int32) + offset, 0).astype(np.uint8)
    return NucleiSample(sample.image, sample.inst, cls, f"{prefix}/{sample.name}", sample.tissue)


def pool_datasets(datasets: list[NucleiDataset], labels: list[str]) -> NucleiDataset:
    """One lazy dataset holding every sample of ``datasets`` (see the module docstring).

    Args:
        datasets: the datasets, in order.
        labels: one short name per dataset (its folder name), used in sample and class names.
    Raises:
        DataError: more than 255 classes in all.
    """
    if len(datasets) == 1:
        return datasets[0]
    samples, class_names, offset = [], {}, 0
    for dataset, label in zip(datasets, labels):
        ids = sorted(dataset.class_names)
        for class_id in ids:
            class_names[class_id + offset] = f"{label}: {dataset.class_names[class_id]}"
        for i in range(len(dataset)):
            samples.append(lambda d=dataset, i=i, p=label, o=offset: _renumbered(d, i, p, o))
        offset += max(ids, default=0)
    if offset > 255:
        raise DataError(
            f"the pooled datasets declare {offset} class ids in all (at most 255 fit a uint8 "
            "class map); pool fewer datasets"
        )
    roots = ",".join(d.root for d in datasets)
    return NucleiDataset(samples, class_names, "pooled", roots)


def open_datasets(spec: str | os.PathLike, format: str = "auto") -> NucleiDataset:
    """Open ``spec`` (one folder or several separated by commas) as one dataset.

    Each folder is opened with :func:`~sampo_engine.data.detect.open_dataset` (``format``
    applies to each); several are pooled by :func:`pool_datasets`.
    """
    from sampo_engine.data.detect import open_dataset

    paths = split_data_spec(spec)
    datasets = [open_dataset(p, format=format) for p in paths]
    for path, dataset in zip(paths, datasets):
        if len(dataset) == 0:
            raise DataError(f"no images found in {path}; check the folder")
    labels = [Path(p).name or str(p) for p in paths]
    if len(set(labels)) != len(labels):
        labels = [f"{i}:{name}" for i, name in enumerate(labels)]
    return pool_datasets(datasets, labels)
