"""The (c, h, w) view of a token: how SWAT stores a patch's spatial layout in its channels.

A SWAT token of C = c*h*w channels is c stacked h x w maps, segment-major: channel index
``ci*(h*w) + u*w + v`` for segment ``ci`` at within-token position ``(u, v)`` (SWAT_SPEC section 1).
Tokens are row-major over the (Hg, Wg) grid. Every module that looks inside a token goes through
these helpers so the order is defined once.
"""

from __future__ import annotations

from einops import rearrange
from torch import Tensor


def tokens_from_map(x_BcHW: Tensor, alpha: int) -> Tensor:
    """Regroup a sub-token map (B, c, Hg*alpha, Wg*alpha) into tokens (B, Hg*Wg, c*alpha*alpha)."""
    return rearrange(x_BcHW, "b c (i u) (j v) -> b (i j) (c u v)", u=alpha, v=alpha)


def map_from_tokens(x_BNC: Tensor, grid: tuple[int, int], alpha: int) -> Tensor:
    """Inverse of :func:`tokens_from_map`: tokens (B, Hg*Wg, C) -> sub-token map (B, c, Hg*alpha, Wg*alpha)."""
    return rearrange(x_BNC, "b (i j) (c u v) -> b c (i u) (j v)", i=grid[0], j=grid[1], u=alpha, v=alpha)


def token_images(x_BNC: Tensor, alpha: int) -> Tensor:
    """Every token viewed as a small image: (B, N, C) -> (B*N, c, alpha, alpha)."""
    return rearrange(x_BNC, "b n (c u v) -> (b n) c u v", u=alpha, v=alpha)


def tokens_from_images(x_MCuv: Tensor, batch: int) -> Tensor:
    """Inverse of :func:`token_images`: (B*N, c', alpha, alpha) -> (B, N, c'*alpha*alpha)."""
    return rearrange(x_MCuv, "(b n) c u v -> b n (c u v)", b=batch)


def grid_map(x_BNC: Tensor, grid: tuple[int, int]) -> Tensor:
    """Tokens as a channel-first map over the token grid: (B, N, C) -> (B, C, Hg, Wg)."""
    return rearrange(x_BNC, "b (i j) c -> b c i j", i=grid[0], j=grid[1])


def tokens_from_grid(x_BCHW: Tensor) -> Tensor:
    """Inverse of :func:`grid_map`: (B, C, Hg, Wg) -> (B, Hg*Wg, C)."""
    return rearrange(x_BCHW, "b c i j -> b (i j) c")


def segment_maps(x_BNC: Tensor, alpha: int) -> Tensor:
    """(B, N, C=c*alpha*alpha) -> (B*c, N, alpha, alpha): each segment's within-token maps, N as channels.

    The segments go into the batch so one conv over
    the alpha x alpha grid mixes tokens (its channels) while staying within each segment.
    """
    return rearrange(x_BNC, "b n (c u v) -> (b c) n u v", u=alpha, v=alpha)


def tokens_from_segment_maps(x_MNuv: Tensor, batch: int) -> Tensor:
    """Inverse of :func:`segment_maps`: (B*c, N, alpha, alpha) -> (B, N, c*alpha*alpha)."""
    return rearrange(x_MNuv, "(b c) n u v -> b n (c u v)", b=batch)
