"""The (c, h, w) token layout of :mod:`.structure`, written as reshape/permute so TorchScript and torch.fx take it.

Same functions, names and index order as :mod:`.structure` (SWAT_SPEC section 1: channel
``ci*(h*w) + u*w + v``, tokens row-major over the grid); each does exactly the reshape -> permute ->
reshape that the einops pattern there compiles to, so the result is the same tensor, memory layout
included (tests/models/test_layout.py checks both, bit for bit). einops functions can be neither
scripted nor symbolically traced; these can, sizes coming from ``x.shape`` (proxies under fx).
"""

from torch import Tensor


def tokens_from_map(x_BcHW: Tensor, alpha: int) -> Tensor:
    """Regroup a sub-token map (B, c, Hg*alpha, Wg*alpha) into tokens (B, Hg*Wg, c*alpha*alpha)."""
    B, c, H, W = x_BcHW.shape
    i, j = H // alpha, W // alpha
    y = x_BcHW.reshape(B, c, i, alpha, j, alpha).permute(0, 2, 4, 1, 3, 5)
    return y.reshape(B, i * j, c * alpha * alpha)


def map_from_tokens(x_BNC: Tensor, grid: tuple[int, int], alpha: int) -> Tensor:
    """Inverse of :func:`tokens_from_map`: tokens (B, Hg*Wg, C) -> sub-token map (B, c, Hg*alpha, Wg*alpha)."""
    B, _, C = x_BNC.shape
    c = C // (alpha * alpha)
    y = x_BNC.reshape(B, grid[0], grid[1], c, alpha, alpha).permute(0, 3, 1, 4, 2, 5)
    return y.reshape(B, c, grid[0] * alpha, grid[1] * alpha)


def token_images(x_BNC: Tensor, alpha: int) -> Tensor:
    """Every token viewed as a small image: (B, N, C) -> (B*N, c, alpha, alpha)."""
    B, N, C = x_BNC.shape
    return x_BNC.reshape(B * N, C // (alpha * alpha), alpha, alpha)


def tokens_from_images(x_MCuv: Tensor, batch: int) -> Tensor:
    """Inverse of :func:`token_images`: (B*N, c', alpha, alpha) -> (B, N, c'*alpha*alpha)."""
    M, c, u, v = x_MCuv.shape
    return x_MCuv.reshape(batch, M // batch, c * u * v)


def grid_map(x_BNC: Tensor, grid: tuple[int, int]) -> Tensor:
    """Tokens as a channel-first map over the token grid: (B, N, C) -> (B, C, Hg, Wg) (a permuted view)."""
    B, _, C = x_BNC.shape
    return x_BNC.reshape(B, grid[0], grid[1], C).permute(0, 3, 1, 2)


def tokens_from_grid(x_BCHW: Tensor) -> Tensor:
    """Inverse of :func:`grid_map`: (B, C, Hg, Wg) -> (B, Hg*Wg, C)."""
    B, C, H, W = x_BCHW.shape
    return x_BCHW.permute(0, 2, 3, 1).reshape(B, H * W, C)


def segment_maps(x_BNC: Tensor, alpha: int) -> Tensor:
    """(B, N, C=c*alpha*alpha) -> (B*c, N, alpha, alpha): each segment's within-token maps, N as channels.

    The segments go into the batch so one conv over the alpha x alpha grid mixes tokens (its channels)
    while staying within each segment.
    """
    B, N, C = x_BNC.shape
    c = C // (alpha * alpha)
    return x_BNC.reshape(B, N, c, alpha, alpha).permute(0, 2, 1, 3, 4).reshape(B * c, N, alpha, alpha)


def tokens_from_segment_maps(x_MNuv: Tensor, batch: int) -> Tensor:
    """Inverse of :func:`segment_maps`: (B*c, N, alpha, alpha) -> (B, N, c*alpha*alpha)."""
    M, N, u, v = x_MNuv.shape
    c = M // batch
    return x_MNuv.reshape(batch, c, N, u, v).permute(0, 2, 1, 3, 4).reshape(batch, N, c * u * v)
