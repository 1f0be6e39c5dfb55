"""SWAT MLP-Mixer: where each mixing branch looks, the ablation switches, features, init, and user errors."""

import pytest
import timm
import torch
from timm.models._features import FeatureGetterNet
from timm.models._manipulate import group_parameters
from timm.models.mlp_mixer import MixerBlock

from swat_dist.models.layers import PatchTokenizer, StructureAwareTokenizer
from swat_dist.models.mixer import MixerBlockConv

MICRO = "swat_mixer_micro_patch4_32"
# swat_mixer_micro_patch4_32 geometry: C, depth, tokens N, alpha, stem m, k1 (within token), k2 (token grid)
C, DEPTH, N, ALPHA, M, K1, K2 = 128, 4, 64, 2, 64, 3, 3


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _changed(f, x: torch.Tensor, index: tuple[int, ...]) -> torch.Tensor:
    """Boolean mask of the outputs of ``f`` that move when one input element is perturbed."""
    x2 = x.clone()
    x2[index] += 1.0
    return (f(x2) - f(x)).abs() > 1e-9


@pytest.mark.parametrize("kernel", [1, 3])
def test_token_mixing_reaches_every_token_but_only_the_kernel_neighbourhood_of_one_segment(kernel):
    # alpha 4 so a 3x3 window is smaller than the 4x4 within-token grid; c = 32 / 16 = 2 segments.
    c, alpha, tokens = 2, 4, 4
    block = MixerBlockConv(c * alpha * alpha, tokens, (2, 2), alpha, token_kernel=kernel).double()
    block.norm1 = torch.nn.Identity()  # LayerNorm couples all channels of a token; look at the mixing alone
    torch.nn.init.ones_(block.mlp_tokens.fc3.weight)  # every tap of the depthwise window contributes
    x = torch.randn(1, tokens, c * alpha * alpha, dtype=torch.float64)
    seg, u, v = 1, 0, 2  # (c, h, w) channel order: index = seg * 16 + u * 4 + v
    with torch.no_grad():
        changed = _changed(block.token_mixing, x, (0, 3, seg * 16 + u * 4 + v))
    expected = torch.zeros(tokens, c, alpha, alpha, dtype=torch.bool)
    r = kernel // 2
    expected[:, seg, max(u - r, 0) : u + r + 1, max(v - r, 0) : v + r + 1] = True
    assert torch.equal(changed.reshape(tokens, c, alpha, alpha), expected)


def test_channel_mixing_reaches_every_channel_of_neighbouring_tokens_only():
    grid, dim = (4, 4), 32
    block = MixerBlockConv(dim, 16, grid, alpha=2, channel_kernel=3).double()
    block.norm2 = torch.nn.Identity()
    torch.nn.init.ones_(block.mlp_channels.fc3.weight)
    x = torch.randn(1, 16, dim, dtype=torch.float64)
    i, j = 0, 2  # row-major token order: n = i * Wg + j
    with torch.no_grad():
        changed = _changed(block.channel_mixing, x, (0, i * 4 + j, 5))
    expected = torch.zeros(4, 4, dim, dtype=torch.bool)
    expected[0:2, 1:4] = True
    assert torch.equal(changed.reshape(4, 4, dim), expected)


def test_mixing_ablation_removes_exactly_the_depthwise_convs():
    # SWAT_SPEC 3.3: SWAT adds depthwise k1 over Dt = C/2 hidden channels and k2 over 4C (weights + biases).
    per_block = (C // 2) * (K1 * K1 + 1) + 4 * C * (K2 * K2 + 1)
    swat = timm.create_model(MICRO)
    tokens_only = timm.create_model(MICRO, swat_mixing=False)
    assert _params(swat) - _params(tokens_only) == DEPTH * per_block
    assert all(isinstance(b, MixerBlock) for b in tokens_only.blocks)
    assert not any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in tokens_only.modules())
    assert isinstance(tokens_only.tokenizer, StructureAwareTokenizer)


def test_tokenization_ablation_swaps_the_stem_for_a_patchify():
    c, patch = C // (ALPHA * ALPHA), 4
    stem = (3 * M * 2 * 2 + M) + (M * c + c)  # conv1 3->m k2 s2, conv2 m->c 1x1
    patchify = 3 * patch * patch * C + C
    mixing_only = timm.create_model(MICRO, swat_tokens=False)
    assert isinstance(mixing_only.tokenizer, PatchTokenizer)
    assert _params(mixing_only) - _params(timm.create_model(MICRO)) == patchify - stem


def test_both_switches_off_is_the_timm_baseline_size():
    neither = timm.create_model(MICRO, swat_tokens=False, swat_mixing=False)
    assert _params(neither) == _params(timm.create_model("mixer_micro_patch4_32"))


@pytest.mark.parametrize("name", [MICRO, "mixer_micro_patch4_32"])
def test_features_only_returns_token_grid_maps(name):
    features = timm.create_model(name, features_only=True, out_indices=(0, 2))
    assert isinstance(features, FeatureGetterNet)
    maps = features(torch.randn(1, 3, 32, 32))
    assert [tuple(f.shape) for f in maps] == [(1, C, 8, 8), (1, C, 8, 8)]
    assert features.feature_info.reduction() == [4, 4]
    default = timm.create_model(name, features_only=True)  # last 3 blocks, as timm's Mixer
    assert len(default(torch.randn(1, 3, 32, 32))) == 3


def test_intermediate_maps_are_the_row_major_token_grid():
    model = timm.create_model(MICRO).eval()
    x = torch.randn(1, 3, 32, 32)
    (nchw,) = model.forward_intermediates(x, indices=[1], intermediates_only=True)
    (nlc,) = model.forward_intermediates(x, indices=[1], output_fmt="NLC", intermediates_only=True)
    assert torch.equal(nchw[0, :, 2, 5], nlc[0, 2 * 8 + 5])
    final, _ = model.forward_intermediates(x, indices=1)
    torch.testing.assert_close(final, model.forward_features(x))


def test_wrong_input_sizes_fail_before_the_forward_naming_the_constraint():
    model = timm.create_model(MICRO)
    with pytest.raises(ValueError, match="multiple of 4"):
        model(torch.randn(1, 3, 30, 30))
    with pytest.raises(ValueError, match=r"img_size 32x32.*N=64.*img_size=\(64, 64\)"):
        model(torch.randn(1, 3, 64, 64))


def test_checkpoints_do_not_transfer_across_token_counts(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(timm.create_model(MICRO).state_dict(), path)
    same = timm.create_model(MICRO, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert same.num_tokens == N
    with pytest.raises(ValueError, match="64 tokens but this model has 256"):
        timm.create_model(MICRO, img_size=64, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def test_init_follows_the_mixer_recipe():
    model = timm.create_model(MICRO)
    assert not model.head.weight.any() and not model.head.bias.any()
    fc1 = model.blocks[0].mlp_channels.fc1  # lecun-normal: std sqrt(1/fan_in); PyTorch default gives 0.58x that
    assert fc1.weight.std().item() == pytest.approx(C**-0.5, rel=0.05)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and not any(m.bias.any() for m in convs)
    assert all(b.norm1.weight.eq(1).all() and not b.norm1.bias.any() for b in model.blocks)
    baseline_mlp = timm.create_model(MICRO, swat_mixing=False).blocks[0].mlp_tokens.fc1.bias
    assert 0 < baseline_mlp.abs().max() < 1e-4  # Linear in an MLP: bias ~ N(0, 1e-6)
    model.reset_classifier(10)
    assert model.head.out_features == 10 and not model.head.weight.any()


def test_drop_path_is_the_same_in_every_block():
    model = timm.create_model(MICRO, drop_path_rate=0.2)
    assert [b.drop_path.drop_prob for b in model.blocks] == [0.2] * DEPTH


def test_unpooled_head_and_layer_groups():
    model = timm.create_model(MICRO)
    model.reset_classifier(0, global_pool="")
    tokens = model(torch.randn(1, 3, 32, 32))
    assert tokens.shape == (1, N, C)
    groups = group_parameters(model, model.group_matcher())
    assert groups[0] == [n for n, _ in model.named_parameters() if n.startswith("tokenizer.")]
    assert len(groups) == 1 + DEPTH
