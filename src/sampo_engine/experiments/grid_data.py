"""The training and held-out test data of an experiment grid.

With ``--train-data`` and ``--test-data`` the grid reads them (any supported layout, split or
folds); the smoke preset without them generates two synthetic folders under ``OUT/data`` with
different seeds, so no test image is a training image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sampo_engine.errors import ConfigError, DataError
from sampo_engine.experiments.grid_config import ExperimentsConfig, Preset


@dataclass
class GridData:
    """The opened data of a grid and how the evaluation reopens the test set."""

    label: str  # the dataset's name in the tables
    train_path: Path
    test_path: Path
    train_set: object
    test_set: object
    test_format: str
    test_split: str
    test_folds: list[int] | None


def check_given_data(config: ExperimentsConfig) -> None:
    """Open ``--train-data`` and ``--test-data`` once (when given), before anything is written:
    an unreadable or empty folder is refused before hours of training."""
    if not config.train_data:
        return
    for path, fmt, split, folds in (
        (Path(config.train_data), config.train_format, config.train_split, config.train_folds),
        (Path(config.test_data), config.test_format, config.test_split, config.test_folds),
    ):
        open_grid_dataset(path, fmt, split, folds)


def grid_data(config: ExperimentsConfig, p: Preset, out: Path) -> GridData:
    """Open (for the smoke preset without data: first generate) the training and test data,
    and check that a task needing classes has them."""
    from sampo_engine.data.detect import DISPLAY_NAMES

    if not config.train_data:
        train_path, test_path = synthetic_data(out, p)
        train_fmt = test_fmt = "folder"
        train_split = test_split = ""
        train_folds = test_folds = None
    else:
        train_path, test_path = Path(config.train_data), Path(config.test_data)
        train_fmt, test_fmt = config.train_format, config.test_format
        train_split, test_split = config.train_split, config.test_split
        train_folds, test_folds = config.train_folds, config.test_folds
    train_set = open_grid_dataset(train_path, train_fmt, train_split, train_folds)
    test_set = open_grid_dataset(test_path, test_fmt, test_split, test_folds)
    for what, ds, task in (
        ("--train-data", train_set, config.train_task),
        ("--test-data", test_set, config.eval_task),
    ):
        if task == "t2" and not ds.has_classes:
            raise ConfigError(f"T2 needs class labels, but {what} has none; use t1 or both")
    label = config.dataset_name or (
        DISPLAY_NAMES.get(test_set.format, test_set.format) if config.train_data else "synthetic"
    )
    return GridData(
        label, train_path, test_path, train_set, test_set, test_fmt, test_split, test_folds
    )


def synthetic_data(out: Path, p: Preset) -> tuple[Path, Path]:
    """Generated train and test folders (different seeds: no test image is a training image)."""
    from sampo_engine.data.folder import write_folder
    from sampo_engine.data.synthetic import make_synthetic_dataset

    paths = []
    for name, n, seed in (("train", p.synthetic_train, 0), ("test", p.synthetic_test, 1000)):
        path = out / "data" / name
        if not (path / "meta.json").is_file():
            write_folder(make_synthetic_dataset(n, 224, seed=seed), path)
        paths.append(path)
    return paths[0], paths[1]


def open_grid_dataset(path, fmt: str, split: str, folds):
    """The dataset at ``path`` in layout ``fmt`` (split / folds where the layout has them);
    refuses an empty one."""
    from sampo_engine.data.detect import open_dataset

    dataset = open_dataset(path, format=fmt, split=split or None, folds=folds or None)
    if len(dataset) == 0:
        raise DataError(f"no images in {path}")
    return dataset
