"""Fused attention (``F.scaled_dot_product_attention``) computes what the explicit matmuls do.

The explicit form (QK^T, + Swin's position bias and shift mask, softmax, attn_drop, AV) is what fvcore
counts and what ``explicit_mode`` switches to; the fused one runs in training and inference.
"""

import pytest
import timm
import torch

from swat_dist.models.layers.explicit import explicit_mode
from swat_dist.models.swin_blocks import SwinStage, WindowAttention, padded_size, shifted_window_mask, window_geometry
from swat_dist.models.vit_blocks import Attention


def _run(module, x, explicit, *args):
    x = x.detach().clone().requires_grad_(True)
    module.zero_grad(set_to_none=True)
    with explicit_mode(explicit):
        out = module(x, *args)
    out = out[0] if isinstance(out, tuple) else out
    torch.manual_seed(1)
    (out * torch.randn_like(out)).sum().backward()
    return [out.detach(), x.grad] + [p.grad for p in module.parameters()]


def _assert_fused_equals_explicit(module, x, *args, scaled: bool = False):
    """Every output and gradient close; ``scaled``: to 2e-5 of each tensor's largest entry (fp32 rounding
    through a whole network: a near-zero gradient entry differs by more than its own value's rtol)."""
    fused, explicit = _run(module, x, False, *args), _run(module, x, True, *args)
    assert all(g is not None for g in fused)
    for a, b in zip(fused, explicit):
        atol = 2e-5 * float(b.abs().max()) if scaled else None
        torch.testing.assert_close(a, b, atol=atol, rtol=0 if scaled else None)


@pytest.mark.parametrize("alpha", [None, 4])
def test_deit_attention_fused_equals_explicit(alpha):
    torch.manual_seed(0)
    _assert_fused_equals_explicit(Attention(64, 4, alpha=alpha, kernel_size=3), torch.randn(2, 10, 64))


@pytest.mark.parametrize(
    ("grid", "alpha"),
    [((8, 8), None), ((8, 8), 2), ((6, 10), 2), ((6, 3), None)],
    ids=["shift", "shift-swat", "shift+pad-swat", "shift+pad+clamp"],
)
def test_swin_stage_with_shifted_windows_and_padding_fused_equals_explicit(grid, alpha):
    """A W-MSA + SW-MSA pair: position bias, the shift mask and the padding all go through SDPA's float mask."""
    torch.manual_seed(0)
    dim, window = 16, (4, 4)
    stage = SwinStage(dim, 2, 2, window, True, None, [0.0, 0.0], alpha=alpha, attn_kernel=3, mlp_kernel=3)
    _, shift = window_geometry(grid, window)
    assert any(shift) and stage.blocks[1].shifted
    _assert_fused_equals_explicit(stage, torch.randn(2, grid[0] * grid[1], dim), grid)


def test_window_attention_mask_shapes_broadcast_like_the_explicit_form():
    torch.manual_seed(0)
    attn = WindowAttention(16, 2, (4, 4))
    mask = shifted_window_mask(padded_size((8, 8), (4, 4)), (4, 4), (2, 2), torch.device("cpu"), torch.float32)
    bias = attn.attention_bias((4, 4), mask, windows=3 * 4)  # batch 3 x nW 4
    assert bias.shape == (12, 2, 16, 16)
    for b in range(3):  # window w of every image gets its own mask, plus the same position bias
        torch.testing.assert_close(bias[b * 4 : (b + 1) * 4], mask[:, None] + attn.position_bias((4, 4))[None])
    _assert_fused_equals_explicit(attn, torch.randn(12, 16, 16), (4, 4), mask)


@pytest.mark.parametrize("name", ["swat_deit_micro_patch4_32", "swat_swin_micro_patch4_window4_32"])
def test_whole_models_fused_and_folded_equal_explicit(name):
    torch.manual_seed(0)
    model = timm.create_model(name).eval()  # eval: no drop path; dropout rates are 0 by default
    _assert_fused_equals_explicit(model, torch.randn(2, 3, 32, 32), scaled=True)


@pytest.mark.parametrize("swin", [False, True])
def test_attention_dropout_is_applied_in_training_only_and_unbiased(swin):
    torch.manual_seed(0)
    attn = WindowAttention(16, 2, (3, 3), attn_drop=0.5) if swin else Attention(16, 2, attn_drop=0.5)
    args = ((3, 3), None) if swin else ()
    x = torch.randn(1, 9, 16)
    with torch.no_grad():
        clean = attn.eval()(x, *args)
        with explicit_mode():
            torch.testing.assert_close(clean, attn(x, *args))  # eval: no dropout in either form
        attn.train()
        draws = torch.stack([attn(x, *args) for _ in range(2000)])
    assert not torch.allclose(draws[0], draws[1])  # the weights are dropped, at random
    # Kept weights are scaled by 1/(1-p): the mean over draws tends to the clean output (SE ~ 0.02 here).
    torch.testing.assert_close(draws.mean(0), clean, atol=0.1, rtol=0)
