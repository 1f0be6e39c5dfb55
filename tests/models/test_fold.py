"""StructuredLinear runs as one folded Linear: the same function, gradients and checkpoints as its two paths.

The explicit form (a Linear and a conv over every token's (c, alpha, alpha) image, what fvcore counts) is
the reference; ``explicit_mode`` switches a layer to it without rebuilding.
"""

import pytest
import timm
import torch
import torch.nn.functional as F

from swat_dist.models.layers import StructuredLinear
from swat_dist.models.layers.explicit import explicit_mode
from swat_dist.models.swin_blocks import WindowAttention
from swat_dist.models.vit_blocks import Attention


def _outputs_and_grads(module: torch.nn.Module, *inputs: torch.Tensor, explicit: bool):
    """Output and the gradients of a fixed random projection of it w.r.t. every parameter and the first input."""
    x = inputs[0].detach().clone().requires_grad_(True)
    module.zero_grad(set_to_none=True)
    with explicit_mode(explicit):
        out = module(x, *inputs[1:])
    torch.manual_seed(1)
    (out * torch.randn_like(out)).sum().backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    return out.detach(), x.grad, grads


def _assert_same(module: torch.nn.Module, *inputs: torch.Tensor) -> None:
    out, gx, grads = _outputs_and_grads(module, *inputs, explicit=False)
    ref, rx, ref_grads = _outputs_and_grads(module, *inputs, explicit=True)
    torch.testing.assert_close(out, ref)  # fp32 defaults: rtol 1.3e-6, atol 1e-5
    torch.testing.assert_close(gx, rx)
    assert grads.keys() == ref_grads.keys() and all(g is not None for g in grads.values())
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], msg=name)


@pytest.mark.parametrize(
    ("alpha", "kernel", "bias", "conv_bias"),
    [(8, 3, True, True), (2, 1, True, True), (2, 3, False, False), (4, 5, True, False), (2, 5, False, True)],
)
def test_folded_linear_equals_linear_plus_within_token_conv(alpha, kernel, bias, conv_bias):
    torch.manual_seed(0)
    area = alpha * alpha
    layer = StructuredLinear(3 * area, 2 * area, alpha, kernel, bias=bias, conv_bias=conv_bias)
    _assert_same(layer, torch.randn(2, 7, 3 * area))


@pytest.mark.parametrize(("alpha", "kernel"), [(2, 1), (2, 3), (4, 3), (3, 5)])
def test_the_dense_matrix_is_the_conv_applied_to_each_basis_token(alpha, kernel):
    """An independent construction: column j of the folded conv is the conv of the j-th unit token."""
    torch.manual_seed(0)
    area = alpha * alpha
    layer = StructuredLinear(2 * area, 3 * area, alpha, kernel, bias=False, conv_bias=False)
    with torch.no_grad():
        layer.linear.weight.zero_()
        weight, bias = layer.folded()
        basis = torch.eye(2 * area).view(2 * area, 2, alpha, alpha)
        columns = F.conv2d(basis, layer.conv.weight, padding=kernel // 2).reshape(2 * area, -1)
    assert bias is None
    assert torch.equal(2 * weight, columns.T)  # a gather: each entry is exactly one conv weight (or zero)


def test_deit_and_swin_attention_give_the_same_outputs_and_gradients_folded():
    torch.manual_seed(0)
    _assert_same(Attention(6 * 16, num_heads=6, alpha=4, kernel_size=3), torch.randn(2, 9, 96))
    for alpha, kernel in [(2, 1), (4, 3), (2, 5)]:
        dim = 4 * alpha * alpha
        win = WindowAttention(dim, num_heads=2, window=(3, 3), alpha=alpha, kernel_size=kernel)
        _assert_same(win, torch.randn(4, 9, dim), (3, 3))


def test_checkpoints_and_parameters_are_unchanged_by_the_fold():
    layer = StructuredLinear(64, 192, 4, 3)
    assert set(layer.state_dict()) == {"linear.weight", "linear.bias", "conv.weight", "conv.bias"}
    assert sum(p.numel() for p in layer.parameters()) == 64 * 192 + 192 + 4 * 12 * 9 + 12
    model = timm.create_model("swat_deit_micro_patch4_32")
    assert not any(k.endswith("fold_index") for k in model.state_dict())
    timm.create_model("swat_deit_micro_patch4_32").load_state_dict(model.state_dict())  # strict


def test_even_kernels_are_refused():
    with pytest.raises(ValueError, match="must be odd"):
        StructuredLinear(16, 16, 2, 2)
