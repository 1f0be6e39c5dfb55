"""RandAugment's geometric ops (Rotate, ShearX/Y, TranslateX/YRel) on batches, as PIL's affine transform does them.

The how and the measured difference from PIL are in :mod:`.device_ops`' module doc (its table); this module
holds the code: PIL's affine data per op (``AFFINE_OPS``: arg, width, height -> (a, b, c, d, e, f)) and
:func:`affine`, one ``grid_sample`` per call, with PIL's own a = -1 cubic as 9 bilinear fetches.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# Added to a filtered value before PIL's truncation: float32 sampling lands ~1e-5 below integers that PIL
# (in double) hits exactly or from above - every pixel of a whole-pixel shift or an identity. Without it
# 6.9% of pixels came out one level low even at magnitude 0; with it, a pixel differs from PIL by one level
# only where PIL's own double rounding puts an exact value just below k (worst case 5.2% of pixels).
_TRUNC_EPS = 1.0 / 64


# ---- geometric ops: PIL's AFFINE data (a, b, c, d, e, f): source = (a X + b Y + c, d X + e Y + f) -----


def _rotate(deg: Tensor, w: int, h: int) -> list[Tensor]:
    # Image.rotate(deg) about (w/2, h/2): source = R(-deg) (X - cx, Y - cy) + (cx, cy) in image axes (y down).
    rad = deg * (math.pi / 180)
    cos, sin = torch.cos(rad), torch.sin(rad)
    cx, cy = w / 2, h / 2
    return [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy]


def _unit(
    t: Tensor, b: Tensor | float = 0.0, c: Tensor | float = 0.0, d: Tensor | float = 0.0, f: Tensor | float = 0.0
) -> list[Tensor]:
    """PIL's affine data (1, b, c, d, 1, f), each a tensor shaped like t: shears and translations."""
    zero = torch.zeros_like(t)
    return [zero + 1, zero + b, zero + c, zero + d, zero + 1, zero + f]


def affine(x: Tensor, coeffs: list[Tensor], bicubic: bool, fill: tuple[int, ...]) -> Tensor:
    n, _, h, w = x.shape
    a, b, c, d, e, f = (v.view(n, 1, 1) for v in coeffs)
    px = torch.arange(w, device=x.device, dtype=torch.float32).view(1, 1, w) + 0.5
    py = torch.arange(h, device=x.device, dtype=torch.float32).view(1, h, 1) + 0.5
    sx = a * px + b * py + c  # source point in PIL pixel units, (n, h, w)
    sy = d * px + e * py + f
    inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
    if bicubic:
        out = _bicubic(x, sx, sy)
    else:  # align_corners=False: normalised -1 / 1 are the outer edges, pixel centres at +0.5: PIL's frame
        grid = torch.stack((2 * sx / w - 1, 2 * sy / h - 1), dim=3)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = torch.floor(out.clamp(0, 255) + _TRUNC_EPS).clamp(max=255)
    # new_full per channel: a fill kernel on the device, where torch.tensor(fill, device=...) would copy
    # from pageable host memory (a stream sync on CUDA).
    colour = torch.cat([x.new_full((1, 1, 1, 1), float(v)) for v in fill], dim=1)
    return torch.where(inside.unsqueeze(1), out, colour)


def _cubic_weights(t: Tensor) -> list[Tensor]:
    """PIL Geometry.c's cubic (Keys' a = -1) weights of the taps at -1, 0, 1, 2 for a fraction t past tap 0."""
    t2 = t * t
    t3 = t2 * t
    return [2 * t2 - t - t3, 1 - 2 * t2 + t3, t + t2 - t3, t3 - t2]


def _bicubic(x: Tensor, sx: Tensor, sy: Tensor) -> Tensor:
    """PIL's bicubic transform filter at source points (sx, sy) (n, h, w), as ONE bilinear grid_sample.

    PIL's a = -1 weights per axis are (-, +, +, -) over taps -1, 0, 1, 2, so the middle pair is one linear
    fetch at 0 + w2 / (w1 + w2) (w1 + w2 = 1 + t - t^2 >= 1) and the outer taps are fetches at whole
    pixels: 3 x 3 bilinear fetches, weighted. Border padding clamps each fetch as PIL clamps each tap.
    Cost: a 9x transient of the samples (grid, fetches) and ~10 extra elementwise kernels.
    """
    n, c, h, w = x.shape
    gx, wx = _fetches(sx - 0.5, w)  # PIL's tap coordinates: tap i sits at i
    gy, wy = _fetches(sy - 0.5, h)
    # A pixel's 9 fetches side by side in the output row: each fetch reads near the previous one.
    shape = (n, h, w, 3, 3)  # (y fetch, x fetch)
    grid = torch.stack((gx.unsqueeze(3).expand(shape), gy.unsqueeze(4).expand(shape)), dim=5).view(n, h, 9 * w, 2)
    fetched = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    weights = (wy.unsqueeze(4) * wx.unsqueeze(3)).view(n, 1, h, w, 9)
    return (fetched.view(n, c, h, w, 9) * weights).sum(dim=4)


def _fetches(f: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Tap coordinates f (n, h, w) -> 3 normalised fetch positions and their weights, (n, h, w, 3) each."""
    start = torch.floor(f)
    w0, w1, w2, w3 = _cubic_weights(f - start)
    pair = w1 + w2
    where = torch.stack((start - 1, start + w2 / pair, start + 2), dim=3)
    # align_corners=False: normalised -1 / 1 are the outer edges, tap i at (i + 0.5) / size.
    return (2 * where + 1) / size - 1, torch.stack((w0, pair, w3), dim=3)


AFFINE_OPS: dict[str, Callable[[Tensor, int, int], list[Tensor]]] = {}
AFFINE_OPS.update(
    Rotate=_rotate,
    ShearX=lambda f, w, h: _unit(f, b=f),
    ShearY=lambda f, w, h: _unit(f, d=f),
    TranslateXRel=lambda pct, w, h: _unit(pct, c=pct * w),
    TranslateYRel=lambda pct, w, h: _unit(pct, f=pct * h),
)
