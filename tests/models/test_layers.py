"""SWAT's layers: the (c, h, w) token layout, the tokenizer, StructuredLinear and ConvMlpGeneral."""

import pytest
import torch
from torch import nn

from swat_dist.models.layers import (
    ConvMlpGeneral,
    StructureAwareTokenizer,
    StructuredLinear,
    grid_map,
    map_from_tokens,
    token_images,
    tokens_from_grid,
    tokens_from_images,
    tokens_from_map,
)


def test_regroup_puts_each_alpha_block_in_one_token_segment_major():
    B, c, Hg, Wg, a = 2, 3, 2, 3, 4
    y = torch.randn(B, c, Hg * a, Wg * a)
    tokens = tokens_from_map(y, a)
    assert tokens.shape == (B, Hg * Wg, c * a * a)
    # Reference written with explicit indices: channel ci*a^2 + u*a + v of token i*Wg + j.
    for b in range(B):
        for i in range(Hg):
            for j in range(Wg):
                for ci in range(c):
                    for u in range(a):
                        for v in range(a):
                            assert tokens[b, i * Wg + j, ci * a * a + u * a + v] == y[b, ci, i * a + u, j * a + v]


def test_reshape_helpers_round_trip():
    y = torch.randn(2, 5, 12, 8)
    assert torch.equal(map_from_tokens(tokens_from_map(y, 4), (3, 2), 4), y)
    x = torch.randn(2, 6, 5 * 16)
    assert torch.equal(tokens_from_images(token_images(x, 4), 2), x)
    assert torch.equal(tokens_from_grid(grid_map(x, (2, 3))), x)
    assert torch.equal(token_images(x, 4)[7], x[1, 1].reshape(5, 4, 4))


def test_tokenizer_output_is_the_regrouped_second_conv():
    tok = StructureAwareTokenizer(192, alpha=8, conv1=(4, 2, 1), patch_pos_embed=True)
    seen = {}
    tok.conv2.register_forward_hook(lambda m, i, o: seen.update(y=o))
    tokens, grid = tok(torch.randn(1, 3, 64, 48))
    assert grid == (4, 3) and tokens.shape == (1, 12, 192)
    assert seen["y"].shape == (1, 3, 32, 24)
    assert torch.equal(tokens, tokens_from_map(seen["y"], 8))


def test_tokenizer_patch_pos_embed_is_the_same_for_every_patch():
    tok = StructureAwareTokenizer(192, alpha=8, conv1=(4, 2, 1), patch_pos_embed=True)
    seen = {}
    tok.act.register_forward_hook(lambda m, i, o: seen.update(pre=i[0]))
    with torch.no_grad():
        tok.conv1.weight.zero_()
        tok.conv1.bias.zero_()
        tok(torch.randn(1, 3, 32, 48))
    pre = seen["pre"]  # conv1 output + tiled P, before GELU; conv1 is zero so it is P tiled 2x3
    assert pre.shape[-2:] == (16, 24)
    assert torch.equal(pre[..., :8, :8], pre[..., 8:, 16:])
    assert torch.equal(pre[..., :8, :8], tok.patch_pos_embed.detach())


def test_tokenizer_rejects_size_not_multiple_of_patch():
    tok = StructureAwareTokenizer(192, alpha=8, conv1=(4, 2, 1))
    with pytest.raises(ValueError, match="multiple of 16"):
        tok(torch.randn(1, 3, 40, 32))


def test_structured_linear_averages_linear_and_within_token_conv():
    lin = StructuredLinear(48, 96, alpha=4, kernel_size=3)
    x = torch.randn(2, 5, 48)
    conv_ref = torch.stack(
        [torch.stack([lin.conv(x[b, n].reshape(1, 3, 4, 4)).reshape(-1) for n in range(5)]) for b in range(2)]
    )
    torch.testing.assert_close(lin(x), 0.5 * (conv_ref + lin.linear(x)))


def test_structured_linear_conv_path_is_local_inside_the_token():
    lin = StructuredLinear(16, 16, alpha=4, kernel_size=3)  # one segment: a 4x4 map per token
    with torch.no_grad():
        lin.linear.weight.zero_()
    x = torch.randn(1, 3, 16)
    x2 = x.clone()
    x2[0, 1, 0] += 1.0  # token 1, within-token position (0, 0)
    changed = (lin(x2) - lin(x)).abs().reshape(3, 4, 4) > 0
    assert not changed[0].any() and not changed[2].any()  # other tokens untouched
    assert changed[1, :2, :2].all() and not changed[1, 2:].any() and not changed[1, :, 2:].any()


def test_conv_mlp_is_mlp_plus_depthwise_and_second_gelu():
    mlp = ConvMlpGeneral(8, 16, kernel_size=5)
    with torch.no_grad():  # make the depthwise conv an identity to expose the rest of the structure
        mlp.fc3.weight.zero_()
        mlp.fc3.weight[:, 0, 2, 2] = 1.0
        mlp.fc3.bias.zero_()
    x = torch.randn(2, 8, 6, 6)
    gelu = nn.GELU()
    ref = mlp.fc2(gelu(gelu(mlp.fc1(x))))
    torch.testing.assert_close(mlp(x), ref)
    assert mlp.fc3.groups == 16  # depthwise


def test_conv_mlp_receptive_field_is_the_kernel():
    mlp = ConvMlpGeneral(4, 8, kernel_size=3)
    x = torch.randn(1, 4, 7, 7)
    x2 = x.clone()
    x2[0, :, 3, 3] += 1.0
    changed = ((mlp(x2) - mlp(x)).abs().sum(1)[0] > 0).nonzero().tolist()
    assert sorted(map(tuple, changed)) == [(i, j) for i in (2, 3, 4) for j in (2, 3, 4)]


@pytest.mark.parametrize("channels_last", [False, True])
def test_tokenizer_fast_form_computes_the_explicit_one_and_its_gradients(channels_last):
    """Issue 12's stem: channels-last, the tiled embedding added in place with its own backward."""
    from swat_dist.models.layers.explicit import explicit_mode

    tok = StructureAwareTokenizer(192, alpha=8, conv1=(4, 2, 1), patch_pos_embed=True).double()
    x = torch.randn(3, 3, 32, 48, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def run() -> tuple[torch.Tensor, ...]:
        tok.zero_grad(set_to_none=True)
        tokens, _ = tok(x)
        tokens.backward(torch.linspace(-1, 1, tokens.numel(), dtype=torch.float64).view_as(tokens))
        return (tokens.detach(), *(p.grad for p in tok.parameters()))

    fast = run()
    with explicit_mode():
        explicit = run()
    for a, b in zip(fast, explicit):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert tok.patch_pos_embed.grad.abs().sum() > 0  # the tile's gradient is not lost
