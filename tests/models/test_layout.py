"""The scriptable token layout (layers/layout.py) is the einops one (layers/structure.py): same tensors, strides."""

import pytest
import timm  # noqa: F401  (imported first: timm's import registers the models, which import the layers)
import torch

from swat_dist.models.layers import layout, structure

B, C_SEG, ALPHA, GRID = 2, 3, 2, (3, 4)  # a non-square grid catches a swapped i/j
N, C = GRID[0] * GRID[1], C_SEG * ALPHA * ALPHA

CASES = {
    "tokens_from_map": (torch.randn(B, C_SEG, GRID[0] * ALPHA, GRID[1] * ALPHA), ALPHA),
    "map_from_tokens": (torch.randn(B, N, C), GRID, ALPHA),
    "token_images": (torch.randn(B, N, C), ALPHA),
    "tokens_from_images": (torch.randn(B * N, C_SEG, ALPHA, ALPHA), B),
    "grid_map": (torch.randn(B, N, C), GRID),
    "tokens_from_grid": (torch.randn(B, C, *GRID),),
    "segment_maps": (torch.randn(B, N, C), ALPHA),
    "tokens_from_segment_maps": (torch.randn(B * C_SEG, N, ALPHA, ALPHA), B),
}


@pytest.mark.parametrize("fn", sorted(CASES))
def test_layout_is_exactly_the_einops_layout(fn):
    args = CASES[fn]
    want, got = getattr(structure, fn)(*args), getattr(layout, fn)(*args)
    assert got.shape == want.shape and got.stride() == want.stride() and torch.equal(got, want)
    assert torch.equal(torch.jit.script(getattr(layout, fn))(*args), want)  # and it scripts


def test_the_package_exports_the_scriptable_layout():
    from swat_dist.models import layers

    assert all(getattr(layers, fn) is getattr(layout, fn) for fn in CASES)
