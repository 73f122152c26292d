"""Building SAM at any input size, checkpoint errors, LoRA placement and the DPO reference."""

import copy

import pytest
import torch

from sampo_engine.errors import CheckpointError, ConfigError
from sampo_engine.models.build import adapt_state_dict, build_architecture, build_sam
from sampo_engine.models.forward import decode, encode, select_by_iou_head
from sampo_engine.models.lora import add_lora, lora_target_names
from sampo_engine.models.registry import SPECS


@pytest.fixture(scope="module")
def tiny_1024_checkpoint(tmp_path_factory):
    """A tiny SAM saved at 1024 px, as the official checkpoints are."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny_1024.pth"
    torch.manual_seed(0)
    torch.save(build_architecture(SPECS["tiny"], 1024).state_dict(), path)
    return path


def test_tiny_is_a_few_hundred_thousand_parameters():
    n = sum(p.numel() for p in build_sam("tiny").parameters())
    assert 100_000 < n < 1_000_000


@pytest.mark.parametrize("size", [224, 256, 320])
def test_checkpoint_loads_at_any_multiple_of_16(tiny_1024_checkpoint, size):
    sam = build_sam("tiny", tiny_1024_checkpoint, image_size=size)
    grid = size // 16
    assert sam.image_encoder.pos_embed.shape[1:3] == (grid, grid)
    glob = sam.image_encoder.blocks[SPECS["tiny"].global_attn_indexes[0]].attn
    assert glob.rel_pos_h.shape[0] == 2 * grid - 1
    assert sam.prompt_encoder.image_embedding_size == (grid, grid)
    emb = encode(sam, torch.rand(1, 3, size, size) * 255)
    assert emb.shape[-2:] == (grid, grid)


def test_position_embedding_resize_is_bicubic_of_the_original(tiny_1024_checkpoint):
    state = torch.load(tiny_1024_checkpoint, weights_only=True)
    adapted = adapt_state_dict(state, SPECS["tiny"], 1024)
    assert torch.equal(adapted["image_encoder.pos_embed"], state["image_encoder.pos_embed"])
    small = adapt_state_dict(state, SPECS["tiny"], 224)["image_encoder.pos_embed"]
    expected = torch.nn.functional.interpolate(
        state["image_encoder.pos_embed"].permute(0, 3, 1, 2), size=(14, 14), mode="bicubic"
    ).permute(0, 2, 3, 1)
    assert torch.allclose(small, expected)


def test_bad_sizes_and_types_are_refused():
    with pytest.raises(ConfigError, match="multiple of 16"):
        build_sam("tiny", image_size=100)
    with pytest.raises(ConfigError, match="vit_b"):
        build_sam("vit_x")


def test_wrong_model_type_names_file_and_remedy(tiny_1024_checkpoint):
    with pytest.raises(CheckpointError, match="tiny.*--model tiny"):
        build_sam("vit_b", tiny_1024_checkpoint)


def test_truncated_checkpoint_gives_clear_error(tiny_1024_checkpoint, tmp_path):
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(tiny_1024_checkpoint.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        build_sam("tiny", bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        build_sam("tiny", tmp_path / "missing.pth")


def test_lora_targets_linear_layers_only_never_the_patch_conv():
    sam = build_sam("tiny")
    names = lora_target_names(sam)
    assert "image_encoder.patch_embed.proj" not in names
    assert any(n.endswith("attn.qkv") for n in names) and any(n.endswith("mlp.lin2") for n in names)
    assert any("iou_prediction_head" in n for n in names)
    assert any("output_hypernetworks_mlps" in n for n in names)
    assert any("cross_attn_token_to_image.q_proj" in n for n in names)
    depth = SPECS["tiny"].encoder_depth
    assert sum(n.startswith("image_encoder.blocks") for n in names) == 4 * depth


def test_disabled_adapter_is_bit_identical_to_untouched_model():
    torch.manual_seed(0)
    sam = build_sam("tiny")
    untouched = copy.deepcopy(sam)
    adapted = add_lora(sam, rank=4)
    for name, p in adapted.sam.named_parameters():
        if "lora_B" in name:
            p.data.normal_()  # as after training
    images = torch.rand(2, 3, 224, 224) * 255
    points = torch.rand(2, 3, 6, 2) * 224
    labels = torch.randint(-1, 2, (2, 3, 6))
    with torch.no_grad():
        with adapted.reference() as ref:
            a = decode(ref, encode(ref, images), points, labels)
        b = decode(untouched, encode(untouched, images), points, labels)
        c = decode(adapted.sam, encode(adapted.sam, images), points, labels)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.iou_pred, b.iou_pred)
    assert not torch.allclose(c.logits, b.logits)


def test_only_lora_weights_are_trainable():
    adapted = add_lora(build_sam("tiny"), rank=8)
    trainable = [n for n, p in adapted.sam.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_batched_decoder_matches_stock_decoder_per_image():
    torch.manual_seed(1)
    sam = build_sam("tiny")
    images = torch.rand(2, 3, 224, 224) * 255
    points = torch.rand(2, 4, 6, 2) * 224
    labels = torch.randint(-1, 2, (2, 4, 6))
    with torch.no_grad():
        emb = encode(sam, images)
        out = decode(sam, emb, points, labels)
        for i in range(2):
            sparse, dense = sam.prompt_encoder(
                points=(points[i], labels[i]), boxes=None, masks=None
            )
            masks, iou = sam.mask_decoder(
                emb[i : i + 1], sam.prompt_encoder.get_dense_pe(), sparse, dense, True
            )
            assert torch.allclose(out.logits[i], masks, atol=1e-5)
            assert torch.allclose(out.iou_pred[i], iou, atol=1e-6)
    picked, slot = select_by_iou_head(out.logits, out.iou_pred)
    assert picked.shape == (2, 4, 56, 56) and torch.equal(slot, out.iou_pred.argmax(-1))


def test_forward_is_differentiable_through_lora():
    adapted = add_lora(build_sam("tiny"), rank=4)
    images = torch.rand(1, 3, 224, 224) * 255
    out = decode(
        adapted.sam,
        encode(adapted.sam, images),
        torch.rand(1, 2, 6, 2) * 224,
        torch.ones(1, 2, 6, dtype=torch.long),
    )
    (out.logits.sum() + out.iou_pred.sum()).backward()
    grads = [
        p.grad for n, p in adapted.sam.named_parameters() if "lora_B" in n
    ]  # B starts at 0, so A gets no gradient yet
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_low_precision_reference_is_the_base_model_in_bf16():
    torch.manual_seed(0)
    sam = build_sam("tiny")
    untouched = copy.deepcopy(sam)
    adapted = add_lora(sam, rank=4)
    for name, p in adapted.sam.named_parameters():
        if "lora_B" in name:
            p.data.normal_()
    with adapted.reference(torch.bfloat16) as ref:
        assert not any("lora" in n for n, _ in ref.named_parameters())
        assert next(ref.image_encoder.parameters()).dtype == torch.bfloat16
        base = dict(untouched.named_parameters())
        for name, p in ref.named_parameters():
            assert torch.equal(p, base[name].to(torch.bfloat16))
        images = torch.rand(1, 3, 224, 224) * 255
        points = torch.rand(1, 2, 6, 2) * 224
        labels = torch.ones(1, 2, 6, dtype=torch.long)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            low = decode(ref, encode(ref, images), points, labels).logits.float()
    with torch.no_grad():
        full = decode(untouched, encode(untouched, images), points, labels).logits
    assert torch.allclose(low, full, atol=0.15 * full.abs().max().item())
    # trainable weights are untouched by building the copy
    assert all("lora_" in n for n, p in adapted.sam.named_parameters() if p.requires_grad)
