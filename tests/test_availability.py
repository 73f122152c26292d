"""``sampo_engine.models.availability``: what runs here, what needs a download, the default.

No network and no real checkpoint: the cache is a temporary folder, a "downloaded" checkpoint is a
file of the registered size, and a shipped model is a fake registry spec with a temporary weights
file (the real packaged model is not needed for these rules).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from sampo_engine.models import availability
from sampo_engine.models import checkpoints as weights
from sampo_engine.models.availability import (
    default_model,
    model_state,
    model_states,
)
from sampo_engine.models.registry import SPECS, must_train_in_full


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMPO_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "checkpoints"


@pytest.fixture
def without_shipped(monkeypatch):
    """The rules as they stand without the packaged model (an install that lost it, or a fork
    that ships none): tests/test_shipped_model.py covers the real one."""
    monkeypatch.delitem(SPECS, "nuclei-small")


def _fake_download(cache, model: str, size: int = 1000) -> None:
    """Put a file of the registered size where the cache expects ``model``'s checkpoint."""
    info = weights.CHECKPOINTS[model]
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / info.filename, "wb") as handle:
        handle.truncate(info.size)


@dataclasses.dataclass(frozen=True)
class ShippedSpec:
    """A registry spec as the lead's SamSpec will have it: ``shipped_weights`` names a file."""

    name: str
    shipped_weights: str
    pretrained: bool = False


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A fake shipped model ``fake-shipped`` whose weights file lives in a temporary folder."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setattr(availability, "shipped_weights_dir", lambda: folder)
    monkeypatch.setitem(SPECS, "fake-shipped", ShippedSpec("fake-shipped", "fake.pth"))
    return folder / "fake.pth"


def test_offline_fresh_machine_defaults_to_the_shipped_model(cache):
    state = model_state("nuclei-small")
    assert state.state == "shipped" and state.usable
    assert state.label == "nuclei-small — shipped"
    assert default_model() == "nuclei-small"
    _fake_download(cache, "vit_b")
    assert default_model() == "nuclei-small"  # trained on nuclei, fast on a CPU: first


def test_without_a_shipped_model_offline_defaults_to_tiny(cache, without_shipped):
    states = {s.name: s for s in model_states()}
    assert list(states) == list(SPECS)
    vit_b = states["vit_b"]
    assert vit_b.state == "not downloaded" and not vit_b.usable and vit_b.downloadable
    assert vit_b.label == "vit_b — not downloaded (375 MB)"
    assert states["vit_h"].label == "vit_h — not downloaded (2.6 GB)"
    assert states["tiny"].state == "random weights" and states["tiny"].usable
    assert states["small"].state == "random weights"
    assert default_model() == "tiny"


def test_a_cached_official_checkpoint_is_usable_and_preferred(cache, without_shipped):
    _fake_download(cache, "vit_l")
    assert default_model() == "vit_l"
    _fake_download(cache, "vit_b")
    state = model_state("vit_b")
    assert state.state == "cached" and state.usable and state.path.is_file()
    assert state.label == "vit_b — downloaded" and not state.downloadable
    assert default_model() == "vit_b"  # vit_b before vit_l
    # a truncated file is not a checkpoint
    (cache / weights.CHECKPOINTS["vit_b"].filename).write_bytes(b"partial")
    assert model_state("vit_b").state == "not downloaded"
    assert default_model() == "vit_l"


def test_a_shipped_model_comes_first(cache, shipped, without_shipped):
    _fake_download(cache, "vit_b")
    state = model_state("fake-shipped")
    assert state.state == "needs a base" and not state.usable  # declared, not installed
    assert "reinstall" in state.detail
    assert default_model() == "vit_b"
    shipped.write_bytes(b"\0" * 2_500_000)
    state = model_state("fake-shipped")
    assert state.state == "shipped" and state.usable and state.path == shipped
    assert state.size == 2_500_000 and state.label == "fake-shipped — shipped"
    assert default_model() == "fake-shipped"
    assert not must_train_in_full("fake-shipped")  # LoRA on its weights


def test_must_train_in_full():
    assert must_train_in_full("tiny") and must_train_in_full("small")
    assert not any(must_train_in_full(m) for m in ("vit_b", "vit_l", "vit_h", "nuclei-small"))


def test_imports_no_torch():
    code = (
        "import sys; import sampo_engine.models.availability as a; a.model_states(); "
        "print(sorted(m for m in ('torch', 'numpy', 'safetensors') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
