"""``TrainConfig.init_adapter``: a run continues from an adapter bundle (docs/training.md).

The tiny model on generated tiles, a few steps per run: a --full run gives a base, a LoRA run on
that base gives a LoRA bundle, and a third run starts from it. Checks that the LoRA weights are
the bundle's before the first step, that a --full bundle's weights are the starting model, and
that mismatches are refused with the remedy.
"""

from __future__ import annotations

import pytest
import torch

from sampo_engine.data.synthetic import make_synthetic_dataset
from sampo_engine.errors import CheckpointError, ConfigError
from sampo_engine.train.config import TrainConfig
from sampo_engine.train.trainer import Trainer


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic_dataset(3, 224, seed=4)


def _config(out, **kw) -> TrainConfig:
    base = dict(
        data="generated",
        out=str(out),
        model="tiny",
        task="t1",
        epochs=1,
        max_steps=2,
        batch_size=1,
        eval_crops=1,
        val_fraction=0.0,
        lr=5e-3,
        device="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)


def _train(config, dataset) -> Trainer:
    trainer = Trainer(config, dataset=dataset, log=lambda *_: None)
    trainer.run()
    return trainer


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, dataset):
    """(full bundle, LoRA bundle on the full bundle's base)."""
    root = tmp_path_factory.mktemp("init")
    full = root / "full"
    _train(_config(full, full=True), dataset)
    lora = root / "lora"
    _train(_config(lora, checkpoint=str(full / "base.pth"), lora_rank=4), dataset)
    return full, lora


def test_lora_bundle_initialises_the_lora_weights(bundles, dataset, tmp_path):
    from safetensors.torch import load_file

    from sampo_engine.models.lora import lora_state_dict

    _, lora = bundles
    saved = load_file(str(lora / "adapter_model.safetensors"))
    assert any(v.abs().sum() > 0 for k, v in saved.items() if "lora_B" in k)  # it learned

    config = _config(tmp_path / "next", init_adapter=str(lora), lora_rank=4)
    trainer = Trainer(config, dataset=dataset, log=lambda *_: None)
    start = lora_state_dict(trainer.adapted)
    assert start.keys() == saved.keys()
    assert all(torch.equal(start[k], saved[k]) for k in saved)
    trainer.run()
    meta = trainer.write_bundle(1, complete=True)
    assert meta.kind == "lora" and meta.config["init_adapter"] == str(lora)
    # the same base as the bundle it continued: loadable for inference like any bundle
    assert meta.base_checkpoint == str((bundles[0] / "base.pth").resolve())
    from sampo_engine.models.loading import load_model

    load_model(adapter=tmp_path / "next")


def test_full_bundle_is_the_starting_model(bundles, dataset, tmp_path):
    from sampo_engine.models.build import load_checkpoint_state

    full, _ = bundles
    config = _config(tmp_path / "more", init_adapter=str(full), full=True)
    trainer = Trainer(config, dataset=dataset, log=lambda *_: None)
    state = load_checkpoint_state(full / "base.pth")
    current = trainer.adapted.sam.state_dict()
    key = next(k for k in state if k.endswith("weight") and "image_encoder" in k)
    assert torch.equal(current[key].cpu(), state[key])


def test_mismatches_are_refused_with_the_remedy(bundles, dataset, tmp_path):
    full, lora = bundles
    with pytest.raises(ConfigError, match="--lora-rank 4"):
        Trainer(_config(tmp_path / "a", init_adapter=str(lora), lora_rank=8), dataset=dataset)
    with pytest.raises(ConfigError, match="drop --full"):
        Trainer(_config(tmp_path / "b", init_adapter=str(lora), lora_rank=4, full=True), dataset)
    with pytest.raises(CheckpointError, match="input size"):
        Trainer(_config(tmp_path / "c", init_adapter=str(full), full=True, image_size=256), dataset)
    with pytest.raises(CheckpointError, match="not a SAMPO adapter bundle"):
        Trainer(_config(tmp_path / "d", init_adapter=str(tmp_path), full=True), dataset)
    with pytest.raises(ConfigError, match="pick one"):
        _config(tmp_path / "e", init_adapter=str(full), resume=True).validate()
    # nothing was written for the refused runs
    assert not any((tmp_path / name).exists() for name in "abcd")
