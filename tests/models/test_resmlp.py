"""SWAT ResMLP: the within-token token mixing, LayerScale/Affine init, ablation switches and features."""

import pytest
import timm
import torch
from timm.models.mlp_mixer import Affine, ResBlock

from swat_dist.models.layers import PatchTokenizer
from swat_dist.models.resmlp import ResBlockConv

MICRO = "swat_resmlp_micro_patch4_32"
# swat_resmlp_micro_patch4_32 geometry: C, depth, tokens N, alpha, stem m, within-token kernel, token-grid kernel
C, DEPTH, N, ALPHA, M, K_TOKEN, K_GRID = 128, 4, 64, 2, 64, 3, 3


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_token_mixing_reaches_every_token_but_only_the_3x3_neighbourhood_of_one_segment():
    c, alpha, tokens = 2, 4, 4  # 4x4 within-token grid, so a 3x3 window is a real restriction
    block = ResBlockConv(c * alpha * alpha, tokens, (2, 2), alpha, token_kernel=3).double()
    torch.nn.init.ones_(block.dw_tokens.weight)  # every tap of the depthwise window contributes
    x = torch.randn(1, tokens, c * alpha * alpha, dtype=torch.float64)
    seg, u, v = 0, 3, 1  # (c, h, w) channel order
    x2 = x.clone()
    x2[0, 2, seg * 16 + u * 4 + v] += 1.0
    with torch.no_grad():
        changed = (block.token_mixing(x2) - block.token_mixing(x)).abs() > 1e-9
    expected = torch.zeros(tokens, c, alpha, alpha, dtype=torch.bool)
    expected[:, seg, 2:4, 0:3] = True
    assert torch.equal(changed.reshape(tokens, c, alpha, alpha), expected)


def test_token_mixing_is_nonlinear_unlike_the_baseline():
    # SWAT_SPEC 3.4: a GELU sits between the N->N 1x1 conv and the depthwise conv; ResMLP's own is linear.
    block = ResBlockConv(32, 4, (2, 2), alpha=4).double()
    for conv in (block.linear_tokens, block.dw_tokens):  # zero biases (as the model's init does): else affine
        torch.nn.init.zeros_(conv.bias)
    x = torch.randn(1, 4, 32, dtype=torch.float64)
    with torch.no_grad():
        assert not torch.allclose(block.token_mixing(2 * x), 2 * block.token_mixing(x))


def test_init_layerscale_affine_and_zero_head():
    for model in (timm.create_model(MICRO), timm.create_model(MICRO, swat_mixing=False)):
        assert not model.head.weight.any() and not model.head.bias.any()
        for block in model.blocks:
            assert block.ls1.eq(1e-4).all() and block.ls2.eq(1e-4).all()
            assert isinstance(block.norm1, Affine) and block.norm1.alpha.eq(1).all() and not block.norm1.beta.any()
        assert isinstance(model.norm, Affine)
    convs = [m for m in timm.create_model(MICRO).modules() if isinstance(m, torch.nn.Conv2d)]
    assert not any(m.bias.any() for m in convs)


def test_mixing_ablation_removes_exactly_the_depthwise_convs():
    # SWAT_SPEC 3.4: depthwise over the N token channels inside a token, and over the 4C hidden channels.
    per_block = N * (K_TOKEN * K_TOKEN + 1) + 4 * C * (K_GRID * K_GRID + 1)
    tokens_only = timm.create_model(MICRO, swat_mixing=False)
    assert _params(timm.create_model(MICRO)) - _params(tokens_only) == DEPTH * per_block
    assert all(isinstance(b, ResBlock) for b in tokens_only.blocks)
    assert not any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in tokens_only.modules())


def test_tokenization_ablation_and_both_off_match_the_closed_form_and_the_baseline():
    c, patch = C // (ALPHA * ALPHA), 4
    stem = (3 * M * 2 * 2 + M) + (M * c + c)
    mixing_only = timm.create_model(MICRO, swat_tokens=False)
    assert isinstance(mixing_only.tokenizer, PatchTokenizer)
    assert _params(mixing_only) - _params(timm.create_model(MICRO)) == (3 * patch * patch * C + C) - stem
    neither = timm.create_model(MICRO, swat_tokens=False, swat_mixing=False)
    assert _params(neither) == _params(timm.create_model("resmlp_micro_patch4_32"))


@pytest.mark.parametrize("name", [MICRO, "resmlp_micro_patch4_32"])
def test_features_only_returns_token_grid_maps(name):
    features = timm.create_model(name, features_only=True, out_indices=[-1])
    (last,) = features(torch.randn(1, 3, 32, 32))
    assert last.shape == (1, C, 8, 8)
    assert len(features.model.blocks) == DEPTH


def test_drop_path_is_the_same_in_every_block_and_input_size_is_checked():
    model = timm.create_model(MICRO, drop_path_rate=0.1)
    assert [b.drop_path.drop_prob for b in model.blocks] == [0.1] * DEPTH
    with pytest.raises(ValueError, match="img_size 32x32"):
        model(torch.randn(1, 3, 48, 48))
