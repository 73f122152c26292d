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
