"""Shared fixtures. Viewer tests use napari's own ``make_napari_viewer`` (napari's pytest plugin),
run under Xvfb by pytest-xvfb."""

from __future__ import annotations

from pathlib import Path

import pytest

#: ``<checkout>/../shared/data``: the public sample datasets, present on the team's machines only.
SHARED_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """Path to ``../shared/data`` next to the checkout; skips the test when it is absent."""
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(f"shared data folder not found: {SHARED_DATA_DIR}")
    return SHARED_DATA_DIR


@pytest.fixture()
def split_dir(tmp_path):
    """A real-data split made of generated images (``data/train|test/typed``, 2 + 1 images of
    224 px), as ``tools/real_data_study.py split`` lays one out: for the studies' smoke tests."""
    from sampo_engine.data.folder import write_folder
    from sampo_engine.data.synthetic import make_synthetic_dataset

    split = tmp_path / "study"
    write_folder(make_synthetic_dataset(2, 224, seed=0), split / "data" / "train" / "typed")
    write_folder(make_synthetic_dataset(1, 224, seed=9), split / "data" / "test" / "typed")
    return split
