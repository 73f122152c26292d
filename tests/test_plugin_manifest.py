"""The npe2 manifest: valid, discoverable from the installed distribution, and every command loads."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from npe2 import PluginManifest

PLUGIN = "napari-sampo"
WIDGETS = {"Segment nuclei (SAMPO)", "Fine-tune on this layer"}


@pytest.fixture(scope="module")
def manifest() -> PluginManifest:
    return PluginManifest.from_distribution(PLUGIN)


def test_manifest_found_from_distribution(manifest: PluginManifest) -> None:
    assert manifest.name == PLUGIN
    assert manifest.display_name == "napari-sampo"


def test_contributions(manifest: PluginManifest) -> None:
    contrib = manifest.contributions
    assert {w.display_name for w in contrib.widgets} == WIDGETS
    (reader,) = contrib.readers
    for pattern in ("*.tif", "*.tiff", "*.svs", "*.ome.tif"):
        assert pattern in reader.filename_patterns
    (sample,) = contrib.sample_data
    assert sample.display_name == "Synthetic H&E tile"
    command = next(c for c in contrib.commands if c.id == sample.command)
    assert command.python_name == "napari_sampo._sample_data:synthetic_he_tile"


def test_every_python_name_imports(manifest: PluginManifest) -> None:
    manifest.validate_imports()


def test_npe2_validate_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", PLUGIN, "--imports"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout


def test_package_import_is_cheap() -> None:
    """napari imports ``napari_sampo`` during plugin discovery: it must not pull in Qt or torch."""
    code = (
        "import sys, napari_sampo\n"
        "heavy = ('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari', 'torch', 'magicgui')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
        "print(napari_sampo.__version__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded, version = proc.stdout.splitlines()
    assert loaded == "[]", f"importing napari_sampo loaded {loaded}"
    from sampo_engine._version import __version__

    assert version == __version__


def test_sample_data_command() -> None:
    """The "Synthetic H&E tile" sample returns an RGB image and matching instance labels."""
    try:
        import sampo_engine.data.synthetic  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "sampo_engine.data.synthetic":
            raise  # the module exists but something it imports is missing: a real failure
        pytest.skip("sampo_engine.data.synthetic is not written yet")
    from napari_sampo._sample_data import synthetic_he_tile

    layers = synthetic_he_tile()
    assert [(kw["name"], kind) for _, kw, kind in layers] == [
        ("synthetic H&E", "image"),
        ("synthetic nuclei", "labels"),
    ]
    (image, _, _), (labels, _, _) = layers
    image, labels = np.asarray(image), np.asarray(labels)
    assert image.shape == (1024, 1024, 3) and image.dtype == np.uint8
    assert labels.shape == image.shape[:2]
    assert np.issubdtype(labels.dtype, np.integer)
    assert labels.min() == 0 and labels.max() > 0, "expected background and some nuclei"


def test_sample_data_wiring_with_stub_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin side of the sample, independent of the engine's generator: it asks for a
    1024 px tile with seed 0 and maps image -> Image layer, inst -> Labels layer."""
    import types

    calls = []

    def synthetic_tile(size: int = 1024, seed: int = 0) -> types.SimpleNamespace:
        calls.append((size, seed))
        inst = np.zeros((size, size), np.int32)
        inst[10:20, 10:20] = 1
        return types.SimpleNamespace(
            image=np.zeros((size, size, 3), np.uint8), inst=inst, cls=(inst > 0).astype(np.int32)
        )

    stub = types.ModuleType("sampo_engine.data.synthetic")
    stub.synthetic_tile = synthetic_tile
    monkeypatch.setitem(sys.modules, "sampo_engine.data.synthetic", stub)
    from napari_sampo._sample_data import synthetic_he_tile

    (image, image_kw, image_kind), (labels, labels_kw, labels_kind) = synthetic_he_tile()
    assert calls == [(1024, 0)]
    assert (image_kw, image_kind) == ({"name": "synthetic H&E"}, "image")
    assert (labels_kw, labels_kind) == ({"name": "synthetic nuclei"}, "labels")
    assert image.shape == (1024, 1024, 3) and labels.shape == (1024, 1024)
