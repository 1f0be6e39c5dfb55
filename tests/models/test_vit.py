"""SWAT DeiT: ablation switches, resolution changes, features, and the errors users see."""

import pytest
import timm
import torch

from swat_dist.models.layers import ConvMlpGeneral, PatchTokenizer, StructureAwareTokenizer, StructuredLinear
from swat_dist.models.vit import SwatVisionTransformer


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_mixing_ablation_removes_exactly_the_structure_aware_convs():
    # SWAT_SPEC 3.2 closed form per block: qkv conv c->3c kxk, proj conv c->c kxk, depthwise 4C x 5x5 (+biases).
    C, c, k, depth = 192, 3, 3, 12
    per_block = (c * 3 * c * k * k + 3 * c) + (c * c * k * k + c) + (4 * C * 25 + 4 * C)
    with torch.device("meta"):
        swat = timm.create_model("swat_deit_tiny_patch16_224")
        tokens_only = timm.create_model("swat_deit_tiny_patch16_224", swat_mixing=False)
    assert _params(swat) - _params(tokens_only) == depth * per_block
    assert not any(isinstance(m, (StructuredLinear, ConvMlpGeneral)) for m in tokens_only.modules())
    assert isinstance(tokens_only.tokenizer, StructureAwareTokenizer)


def test_tokenization_ablation_uses_the_baseline_patchify():
    with torch.device("meta"):
        mixing_only = timm.create_model("swat_deit_tiny_patch16_224", swat_tokens=False)
    assert isinstance(mixing_only.tokenizer, PatchTokenizer)
    assert sum(isinstance(m, StructuredLinear) for m in mixing_only.modules()) == 24
    # baseline patchify 16x16x3 -> 192 replaces the two-conv stem: SWAT_SPEC 2.3 says 147.6K vs 14.9K params.
    assert _params(mixing_only.tokenizer) == 16 * 16 * 3 * 192 + 192


@pytest.mark.parametrize("img", [48, 64])
def test_weights_load_at_another_resolution_with_resampled_pos_embed(tmp_path, img):
    src = timm.create_model("swat_deit_micro_patch4_32")
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    dst = timm.create_model(
        "swat_deit_micro_patch4_32", pretrained=True, img_size=img, pretrained_cfg_overlay=dict(file=str(path))
    )
    grid = img // 4
    assert dst.pos_embed.shape == (1, grid * grid, 96)
    for name, p in src.state_dict().items():
        if name != "pos_embed":
            assert torch.equal(p, dst.state_dict()[name]), name
    # bilinear-family resampling of a smooth field: the mean is kept closely, the values are new
    src_map = src.pos_embed.reshape(8, 8, 96)
    dst_map = dst.pos_embed.reshape(grid, grid, 96)
    torch.testing.assert_close(dst_map.mean((0, 1)), src_map.mean((0, 1)), atol=0.01, rtol=0.0)
    out = dst(torch.randn(1, 3, img, img))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


def test_other_input_size_needs_img_size_or_dynamic():
    model = timm.create_model("swat_deit_micro_patch4_32")
    with pytest.raises(ValueError, match="img_size=48"):
        model(torch.randn(1, 3, 48, 48))
    dyn = timm.create_model("swat_deit_micro_patch4_32", dynamic_img_size=True)
    assert dyn(torch.randn(1, 3, 48, 48)).shape == (1, 1000)
    with pytest.raises(ValueError, match="multiple of 4"):
        dyn(torch.randn(1, 3, 30, 32))


def test_constructor_rejects_size_not_multiple_of_patch():
    with pytest.raises(ValueError, match="multiple of 16"):
        timm.create_model("swat_deit_tiny_patch16_224", img_size=200)


def test_features_only_returns_token_maps():
    feats = timm.create_model("swat_deit_micro_patch4_32", features_only=True, out_indices=(1, 3))
    maps = feats(torch.randn(2, 3, 32, 32))
    assert [m.shape for m in maps] == [(2, 96, 8, 8), (2, 96, 8, 8)]
    assert feats.feature_info.reduction() == [4, 4]


def test_intermediates_match_the_blocks_outputs():
    model = timm.create_model("swat_deit_micro_patch4_32").eval()
    x = torch.randn(1, 3, 32, 32)
    final, inter = model.forward_intermediates(x, indices=[3], norm=True)
    torch.testing.assert_close(final, model.forward_features(x))
    torch.testing.assert_close(inter[0].flatten(2).transpose(1, 2), final)


def test_vit_init_follows_the_spec():
    model = SwatVisionTransformer(img_size=32, patch_size=4, embed_dim=96, depth=2, num_heads=3, alpha=2)
    head = model.head.weight
    # timm's trunc_normal_(std=.02) cuts at +-2 absolute, i.e. a plain N(0, .02) in practice; not zero
    assert abs(head.std().item() - 0.02) < 0.002 and abs(head.mean().item()) < 0.002
    assert torch.all(model.blocks[0].attn.qkv.linear.bias == 0)
    conv = model.blocks[0].mlp.mlp.fc1  # PyTorch default init: kaiming-uniform(a=sqrt 5) bound 1/sqrt(fan_in)
    assert conv.weight.abs().max() <= (1 / 96) ** 0.5 and conv.bias.abs().max() > 0


def test_swat_deit_heads_are_channel_segments():
    model = timm.create_model("swat_deit_small_patch16_224", pretrained=False, num_classes=0, depth=1)
    assert model.tokenizer.segments == model.blocks[0].attn.num_heads == 6
