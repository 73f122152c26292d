"""Held-out preference diagnostics (``sampo_engine.scoring.preference``) on generated data."""

import math

import torch

from sampo_engine.data.synthetic import make_synthetic_dataset
from sampo_engine.models.build import build_sam
from sampo_engine.models.lora import frozen, full_finetune
from sampo_engine.scoring.preference import probe_preferences


def _probe(adapted, data):
    return probe_preferences(
        adapted, data, range(len(data)), task="both", image_size=64, crops=4, batch_size=2
    )


def test_a_model_without_adapter_is_its_own_reference_and_a_changed_one_is_not():
    torch.manual_seed(0)
    data = make_synthetic_dataset(3, 64, seed=4)
    base = _probe(frozen(build_sam("tiny", None, 64)), data)
    assert set(base) == {"t1", "t2"} and set(base["t1"]) == {"inter", "intra"}
    for task in base.values():
        for numbers in task.values():
            assert 0 <= numbers["usable"] <= 1
            if numbers["pairs"]:
                assert numbers["margin"] == 0 and numbers["reward_acc"] == 0
                assert 0 <= numbers["rank_acc"] <= 1
            else:
                assert math.isnan(numbers["rank_acc"])
    assert sum(n["pairs"] for t in base.values() for n in t.values()) > 0

    torch.manual_seed(0)
    changed = full_finetune(build_sam("tiny", None, 64))  # reference = a frozen copy
    with torch.no_grad():
        for p in changed.sam.mask_decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    after = _probe(changed, data)
    margins = [n["margin"] for t in after.values() for n in t.values() if n["pairs"]]
    assert margins and any(m != 0 for m in margins)
