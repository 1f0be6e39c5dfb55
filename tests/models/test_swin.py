"""SWAT Swin: structure merging, window geometry (shift mask, clamping, padding), ablations, features, init.

Exact counts and a forward/backward of every zoo model are checked by the project-wide sweep; this file
checks what is particular to Swin.
"""

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models import group_parameters
from timm.models.swin_transformer import SwinTransformer

from swat_dist.models.layers import ConvMlpGeneral, PatchTokenizer, StructureAwareTokenizer, StructuredLinear
from swat_dist.models.swin import SwatSwin
from swat_dist.models.swin_blocks import (
    PatchMerging,
    StructureMerging,
    SwinBlock,
    SwinStage,
    WindowAttention,
    padded_size,
    shifted_window_mask,
    window_geometry,
)

MICRO = "swat_swin_micro_patch4_window4_32"
TINY = "swat_swin_tiny_patch4_window7_224"


def test_structure_merging_matches_a_hand_computed_reference():
    B, H, W, alpha, c, k = 2, 4, 6, 2, 4, 3
    merge = StructureMerging(c * alpha * alpha, alpha, k)
    with torch.no_grad():
        merge.norm.weight.uniform_(0.5, 1.5)
        merge.norm.bias.normal_()
    x = torch.randn(B, H * W, c * alpha * alpha)
    out, grid = merge(x, (H, W))

    # Token (i, j) holds c stacked alpha x alpha maps: its (c, u, v) image is pixel block (i*a+u, j*a+v) of the
    # sub-token map. Build that map, LayerNorm over c, conv, and cut it into tokens of side 2*alpha again.
    a, a2 = alpha, 2 * alpha
    sub = torch.zeros(B, H * a, W * a, c)
    for i in range(H):
        for j in range(W):
            sub[:, i * a : (i + 1) * a, j * a : (j + 1) * a, :] = x[:, i * W + j].view(B, c, a, a).permute(0, 2, 3, 1)
    sub = F.layer_norm(sub, (c,), merge.norm.weight, merge.norm.bias, merge.norm.eps)
    y = F.conv2d(sub.permute(0, 3, 1, 2), merge.reduction.weight, padding=k // 2)
    ref = torch.zeros(B, (H // 2) * (W // 2), (c // 2) * a2 * a2)
    for i in range(H // 2):
        for j in range(W // 2):
            ref[:, i * (W // 2) + j] = y[:, :, i * a2 : (i + 1) * a2, j * a2 : (j + 1) * a2].reshape(B, -1)

    assert grid == (H // 2, W // 2)
    assert out.shape == (B, H * W // 4, 2 * c * alpha * alpha)  # C doubles, the grid halves
    assert merge.reduction.bias is None and merge.reduction.out_channels == c // 2
    torch.testing.assert_close(out, ref)


def _dependency(fn, n_tokens: int, dim: int) -> torch.Tensor:
    """(N, N) bool: output token p depends on input token q (nonzero gradient of a random projection of p)."""
    x = torch.randn(1, n_tokens, dim, requires_grad=True)
    out = fn(x)[0]
    rows = []
    for p in range(n_tokens):
        (grad,) = torch.autograd.grad(out[p] @ torch.randn(dim), x, retain_graph=True)
        rows.append(grad[0].abs().amax(dim=-1) > 1e-6)
    return torch.stack(rows)


def _allowed(grid, window, shift) -> torch.Tensor:
    """Which tokens may attend to which, from first principles: same window of the padded, rolled map, and
    not brought together by the cyclic wrap-around (i.e. closer than a window in the original map)."""
    Hp, Wp = padded_size(grid, window)
    r, c = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    r, c = r.flatten(), c.flatten()
    win_r, win_c = ((r - shift[0]) % Hp) // window[0], ((c - shift[1]) % Wp) // window[1]
    same_window = (win_r[:, None] == win_r[None]) & (win_c[:, None] == win_c[None])
    near = ((r[:, None] - r[None]).abs() < window[0]) & ((c[:, None] - c[None]).abs() < window[1])
    return same_window & near


@pytest.mark.parametrize(
    ("grid", "shifted"),
    [((8, 8), True), ((6, 6), True), ((6, 6), False), ((6, 3), True)],
    ids=["shift", "shift+pad", "pad", "shift+pad+clamp"],
)
def test_window_attention_only_mixes_tokens_of_one_unmasked_window(grid, shifted):
    # Baseline block: its MLP is per token, so any token-to-token dependency comes from window attention.
    dim, window = 16, (4, 4)
    block = SwinBlock(dim, 2, window, shifted=shifted).eval()
    win, shift = window_geometry(grid, window)
    mask = shifted_window_mask(padded_size(grid, win), win, shift, torch.device("cpu"), torch.float32)
    depends = _dependency(lambda t: block(t, grid, win, shift, mask), grid[0] * grid[1], dim)
    expected = _allowed(grid, win, shift if shifted else (0, 0))
    assert not expected.all()
    assert torch.equal(depends, expected)


def test_stage_alternates_plain_and_shifted_windows():
    dim, grid, window = 16, (6, 6), (4, 4)
    stage = SwinStage(dim, 2, 2, window, True, None, [0.0, 0.0]).eval()
    assert [blk.shifted for blk in stage.blocks] == [False, True]
    depends = _dependency(lambda t: stage(t, grid)[0], grid[0] * grid[1], dim)
    plain, shifted = _allowed(grid, window, (0, 0)).float(), _allowed(grid, window, (2, 2)).float()
    assert torch.equal(depends, (shifted @ plain) > 0)


def test_windows_clamp_to_small_grids_and_reuse_the_full_bias_table():
    assert window_geometry((2, 2), (4, 4)) == ((2, 2), (0, 0))
    assert window_geometry((4, 4), (4, 4)) == ((4, 4), (0, 0))
    assert window_geometry((8, 3), (4, 4)) == ((4, 3), (2, 0))
    attn = WindowAttention(16, 2, (4, 4))
    full = attn.position_bias((4, 4)).view(2, 4, 4, 4, 4)
    small = attn.position_bias((2, 3)).view(2, 2, 3, 2, 3)
    assert torch.equal(small, full[:, :2, :3, :2, :3])

    # micro at 32 px: grids 8, 4, 2 with window 4 -> windows of 16, 16 and 4 tokens
    model = timm.create_model(MICRO).eval()
    seen = {}

    def record(stage: int):
        def hook(module, args):
            seen[stage] = tuple(args[0].shape)

        return hook

    for s, stage in enumerate(model.layers):
        stage.blocks[0].attn.register_forward_pre_hook(record(s))
    model(torch.randn(1, 3, 32, 32))
    assert seen == {0: (4, 16, 32), 1: (1, 16, 64), 2: (1, 4, 128)}


@pytest.mark.parametrize(
    ("name", "size", "kwargs"),
    [(MICRO, 96, {}), (MICRO, 64, dict(window_size=3, shift_stages=(True, True, True)))],
    ids=["micro-96", "window3-64"],
)
def test_grids_that_are_not_window_multiples_are_padded(name, size, kwargs):
    model = timm.create_model(name, **kwargs).eval()
    grids = [(size // r, size // r) for r in (info["reduction"] for info in model.feature_info)]
    win = model.layers[0].window
    assert any(padded_size(g, window_geometry(g, win)[0]) != g for g in grids)
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


def test_only_non_shifted_blocks_have_structured_attention():
    with torch.device("meta"):
        model = timm.create_model(TINY)
    shifted = [[blk.shifted for blk in stage.blocks] for stage in model.layers]
    # stage 4's 7x7 map is one window at 224 px, so both of its blocks are W-MSA
    assert shifted == [[False, True], [False, True], [False, True] * 3, [False, False]]
    for s, stage in enumerate(model.layers):
        for blk in stage.blocks:
            for proj in (blk.attn.qkv, blk.attn.proj):
                assert isinstance(proj, StructuredLinear) != blk.shifted
                if not blk.shifted:
                    assert proj.alpha == 2 ** (s + 1) and proj.conv.kernel_size == ((1, 1, 3, 5)[s],) * 2
            assert isinstance(blk.mlp, ConvMlpGeneral) and blk.mlp.fc3.kernel_size == ((5, 5, 5, 3)[s],) * 2
    merges = [stage.downsample for stage in model.layers[1:]]
    assert [(m.alpha, m.norm.normalized_shape[0], m.reduction.kernel_size[0]) for m in merges] == [
        (2, 24, 3),
        (4, 12, 5),
        (8, 6, 9),
    ]


def test_img_size_does_not_change_the_architecture_of_a_registered_model():
    with torch.device("meta"):
        ref = {k: v.shape for k, v in timm.create_model(TINY).state_dict().items()}
        big = {k: v.shape for k, v in timm.create_model(TINY, img_size=512).state_dict().items()}
    assert big == ref


def test_weights_load_into_a_model_built_for_another_size(tmp_path):
    src = timm.create_model(MICRO).eval()
    path = tmp_path / "w.pth"
    torch.save({"model": src.state_dict()}, path)
    dst = timm.create_model(MICRO, pretrained=True, img_size=64, pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))


def test_ablations_swap_in_the_baseline_modules():
    with torch.device("meta"):
        tokens_only = timm.create_model(MICRO, swat_mixing=False)
        mixing_only = timm.create_model(MICRO, swat_tokens=False)
    assert not any(isinstance(m, (StructuredLinear, ConvMlpGeneral, StructureMerging)) for m in tokens_only.modules())
    assert all(isinstance(stage.downsample, PatchMerging) for stage in tokens_only.layers[1:])
    assert isinstance(tokens_only.tokenizer, StructureAwareTokenizer)
    assert isinstance(mixing_only.tokenizer, PatchTokenizer)
    assert not any(isinstance(m, StructureAwareTokenizer) for m in mixing_only.modules())
    assert sum(isinstance(m, StructuredLinear) for m in mixing_only.modules()) == 2 * 7  # 7 W-MSA blocks


def test_baseline_switches_reproduce_timm_swin():
    # Both switches off is plain Swin: timm's weights give timm's output (window/shift/mask/merge order agree).
    # 64 px with window 2 gives grids 16, 8, 4, 2: shifted windows in three stages, a clamped last stage.
    cfg = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=2)
    ref = SwinTransformer(img_size=64, patch_size=4, **cfg).eval()
    ours = SwatSwin(img_size=64, swat_tokens=False, swat_mixing=False, **cfg).eval()
    state = {
        k.replace("patch_embed.", "tokenizer.").replace("head.fc.", "head."): v
        for k, v in ref.state_dict().items()
        if not k.endswith(("relative_position_index", "attn_mask"))
    }
    ours.load_state_dict(state)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [32, 64])
def test_features_only_returns_one_map_per_stage(size):
    # micro has 3 stages (strides 4, 8, 16)
    feats = timm.create_model(MICRO, features_only=True).eval()
    assert feats.feature_info.reduction() == [4, 8, 16]
    assert feats.feature_info.channels() == [32, 64, 128]
    with torch.no_grad():
        maps = feats(torch.randn(1, 3, size, size))
    assert [tuple(m.shape) for m in maps] == [(1, 32 * 2**s, size // (4 * 2**s), size // (4 * 2**s)) for s in range(3)]


def test_swin_tiny_features_at_segmentation_size():
    feats = timm.create_model(TINY, features_only=True).eval()
    with torch.no_grad():
        maps = feats(torch.randn(1, 3, 512, 512))
    assert feats.feature_info.reduction() == [4, 8, 16, 32]
    assert [tuple(m.shape) for m in maps] == [(1, 96 * 2**s, 128 // 2**s, 128 // 2**s) for s in range(4)]
    assert all(torch.isfinite(m).all() for m in maps)


def test_forward_intermediates_and_pruning_follow_timm():
    model = timm.create_model(MICRO).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x, norm=True)
        plain = model.forward_intermediates(x, indices=[-1], intermediates_only=True)[0]
        feats = model.forward_features(x)
    torch.testing.assert_close(final, feats)
    # norm=True normalises the last stage only (its map is the final features), as timm's Swin does
    torch.testing.assert_close(inter[-1].permute(0, 2, 3, 1), feats)  # features: (B, H, W, C), as timm's Swin
    assert not torch.allclose(plain, inter[-1])
    take = model.prune_intermediate_layers([1])
    assert take == [1] and len(model.layers) == 2 and model.num_classes == 0


def test_input_sides_must_be_multiples_of_patch_times_merges():
    model = timm.create_model(MICRO)  # patch 4 x 2^2 merges
    with pytest.raises(ValueError, match=r"patch 4 x 2\^2 patch merges.*multiple of 16"):
        model(torch.randn(1, 3, 40, 48))
    with torch.device("meta"), pytest.raises(ValueError, match=r"2\^3 patch merges.*multiple of 32"):
        timm.create_model(TINY, img_size=240)


def test_init_follows_vit_swin_style():
    model = timm.create_model(TINY)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    weights = torch.cat([m.weight.flatten() for m in linears])
    assert abs(weights.std().item() - 0.02) < 0.001
    assert all(not m.bias.any() for m in linears if m.bias is not None)
    assert abs(model.head.weight.std().item() - 0.02) < 0.002  # head too, not zero-initialised
    tables = torch.cat([b.attn.relative_position_bias_table.flatten() for s in model.layers for b in s.blocks])
    assert abs(tables.std().item() - 0.02) < 0.002
    for m in model.modules():
        if isinstance(m, torch.nn.LayerNorm):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any()
        if isinstance(m, torch.nn.Conv2d):  # PyTorch default: kaiming-uniform(a=sqrt 5) = U(+-1/sqrt(fan_in))
            fan_in = m.weight[0].numel()
            assert m.weight.abs().max() <= fan_in**-0.5 and m.weight.std() > 0.4 * fan_in**-0.5


def test_drop_path_ramps_over_all_blocks_and_groups_cover_every_parameter():
    model = timm.create_model(TINY, drop_path_rate=0.2)
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for s in model.layers for b in s.blocks]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.2, 12))
    for coarse in (False, True):
        groups = group_parameters(model, model.group_matcher(coarse=coarse))
        grouped = sorted(n for names in groups.values() for n in names)
        assert grouped == sorted(n for n, _ in model.named_parameters())
        assert len(groups) > 4
    assert model.no_weight_decay_keywords() == {"relative_position_bias_table"}
