"""timm's RandAugment ops on batches of device tensors, equal to timm's PIL ops within measured bounds.

``apply_op(name, x, arg, bicubic, fill)`` runs one op of ``timm.data.auto_augment.NAME_TO_OP`` on every
sample of ``x`` (n, 3, H, W) float32 holding uint8 values, with one level argument per sample (``arg``,
(n,) float32: what timm's level function hands the PIL op). The device pipeline plans which samples run
which op; this module only executes. No host sync: shapes are the only Python-side facts used.

How each op matches PIL 12 (Geometry.c, Filter.c, ImagingBlend, ImageOps), and what it costs:
- Point ops (Invert, Posterize, Solarize, SolarizeAdd) are elementwise: exact.
- AutoContrast and Equalize build PIL's per-(sample, channel) lookup table from a batched histogram
  (256 bins) - AutoContrast in float64 with PIL's ``int(ix * scale + offset)``, Equalize in int64 with
  its ``step`` rule - and gather through it: exact. (A (n*3, 256) table; float64 only there.)
- Brightness/Color/Contrast/Sharpness are ImagingBlend: ``trunc(deg + float32(alpha * (x - deg)))``
  clipped, computed as separate float32 kernels so no fused multiply-add rounds differently: exact.
  Degenerates: black; PIL's "L" (19595, 38470, 7471, +0x8000, >> 16); the rounded mean of "L"; the
  SMOOTH filter (integer 3x3 sums, rounded; border pixels kept), as PIL does them.
- Rotate/Shear/Translate: one ``grid_sample`` per call, each output pixel centre (x + 0.5, y + 0.5)
  mapped through PIL's affine data, a source point outside [0, W) x [0, H) gets the fill colour exactly
  (PIL's rule; a hard edge, not a blend), inside it neighbours are edge-clamped (``border`` padding,
  as PIL clamps) and the value truncated as PIL truncates. The grid is built elementwise, never by a
  matmul (TF32 would move coordinates by ~0.1 px). Bilinear: the same filter, float32 instead of
  double. Bicubic: PIL's transform filter is Keys' a = -1 cubic (not Resample.c's a = -0.5 that resize
  uses), torch's grid_sample bicubic a = -0.75: that measured 0.56 of a level off on average, 12 at most.
  So bicubic is PIL's cubic as 9 bilinear fetches per pixel in one grid_sample (:mod:`.device_affine`): the
  table's numbers, at ~30x torch's bicubic time on this CPU (788 vs 26 ms for 16 x 224^2, one thread).

Measured against timm's PIL ops (Pillow 12.3) on tests/data/test_device_ops.py's photos (160x120) and digit
(64x64), |diff| in 0..255 units per image:

| op (args: magnitudes 1, 5, 9, both signs)        | resample | mean   | worst mean | max | > 1 off |
|---------------------------------------------------|----------|--------|------------|-----|---------|
| Invert, Posterize*, Solarize*, SolarizeAdd        | -        | 0      | 0          | 0   | 0       |
| AutoContrast, Equalize                            | -        | 0      | 0          | 0   | 0       |
| Brightness*, Color*, Contrast*, Sharpness*        | -        | 0      | 0          | 0   | 0       |
| Rotate                                            | bilinear | 0.015  | 0.018      | 1   | 0       |
| ShearX / ShearY                                   | bilinear | 0.007  | 0.013      | 1   | 0       |
| TranslateXRel / TranslateYRel                     | bilinear | 0.019  | 0.052      | 1   | 0       |
| Rotate                                            | bicubic  | 0.016  | 0.023      | 1   | 0       |
| ShearX / ShearY                                   | bicubic  | 0.018  | 0.025      | 1   | 0       |
| TranslateXRel / TranslateYRel                     | bicubic  | 0.008  | 0.031      | 1   | 0       |
| (torch's grid_sample bicubic instead, for scale:  | bicubic  | 0.412  | 0.561      | 12  | 12.2%)  |

(mean: over all cases; worst mean: the worst (image, argument) case; max |diff|; "> 1 off": the worst
case's share of pixels more than one level apart. The geometric ones: PIL's double arithmetic puts some
exact integers at k - 1e-13 and truncates them to k - 1, float32 does not.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .device_affine import AFFINE_OPS, affine

_POINT_OPS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {}


def apply_op(name: str, x: Tensor, arg: Tensor, bicubic: bool, fill: tuple[int, ...]) -> Tensor:
    """timm's op ``name`` on each sample of ``x`` (n, 3, H, W) with its own ``arg`` (n,); see the module doc.

    ``bicubic`` picks the resample of geometric ops for the whole call; ``fill`` is timm's fillcolor, 3 RGB
    ints (typed ``tuple[int, ...]``, as timm's img_mean comes). Returns a new (n, 3, H, W) float32 tensor
    of integers in [0, 255].
    """
    _check(name, x, arg, fill)
    if x.shape[0] == 0:
        return x.clone()
    if name in _POINT_OPS:
        return _POINT_OPS[name](x, arg.to(x.dtype))
    return affine(x, AFFINE_OPS[name](arg.to(torch.float32), x.shape[3], x.shape[2]), bicubic, fill)


def _check(name: str, x: Tensor, arg: Tensor, fill: tuple[int, ...]) -> None:
    """Bad input -> one ValueError line; only names, shapes, dtypes and devices are read (no sync)."""
    if name not in OPS:
        raise ValueError(f"unknown RandAugment op {name!r}; known: {', '.join(sorted(OPS))}")
    if x.dim() != 4 or x.shape[1] != 3 or arg.shape != (x.shape[0],):
        raise ValueError(f"{name}: x must be (n, 3, H, W) and arg (n,), got {tuple(x.shape)} and {tuple(arg.shape)}")
    if x.dtype != torch.float32 or arg.device != x.device:
        raise ValueError(
            f"{name}: x must be float32 and arg on x's device, got {x.dtype} on {x.device}, arg on {arg.device}"
        )
    if len(fill) != 3:
        raise ValueError(f"{name}: fill must be 3 RGB ints, got {fill!r}")


def _col(arg: Tensor) -> Tensor:
    return arg.view(-1, 1, 1, 1)


# ---- point ops --------------------------------------------------------------------------------


def _posterize(x: Tensor, bits: Tensor) -> Tensor:
    # x & ~(2**(8 - bits) - 1) in integers (exp2 on CUDA need not be exact); bits >= 8 keeps all (timm
    # returns the image), bits 0 keeps none.
    shift = (8 - _col(bits)).clamp(0, 8).to(torch.int32)
    return (x.to(torch.int32) & -(torch.ones_like(shift) << shift)).to(x.dtype)


def _solarize(x: Tensor, thresh: Tensor) -> Tensor:
    return torch.where(x >= _col(thresh), 255 - x, x)


def _solarize_add(x: Tensor, add: Tensor) -> Tensor:
    return torch.where(x < 128, (x + _col(add)).clamp(max=255), x)


def _apply_lut(x: Tensor, lut: Tensor) -> Tensor:
    """x (n, 3, H, W) through per-(sample, channel) tables lut (n, 3, 256)."""
    n, c, h, w = x.shape
    idx = x.reshape(n, c, h * w).long()
    return torch.gather(lut.to(x.dtype), 2, idx).view(n, c, h, w)


def _histogram(x: Tensor) -> Tensor:
    """(n, 3, 256) int64 counts per sample and channel."""
    # Integer scatter_add_: exact in any order (deterministic on CUDA too); bincount would sync to size
    # its output, and a one-hot sum would hold 256 floats per pixel.
    n, c = x.shape[:2]
    idx = x.reshape(n, c, -1).long()
    return torch.zeros(n, c, 256, dtype=torch.int64, device=x.device).scatter_add_(2, idx, torch.ones_like(idx))


def _autocontrast(x: Tensor, _: Tensor) -> Tensor:
    flat = x.flatten(2)
    lo = flat.amin(dim=2, keepdim=True).double()
    hi = flat.amax(dim=2, keepdim=True).double()
    # PIL's table, in double as Python computes it: int(ix * scale + offset), clipped; hi <= lo: identity.
    span = (hi - lo).clamp(min=1)
    scale = torch.full_like(span, 255.0) / span  # not 255.0 / span: torch computes that as 255 * (1 / span)
    offset = -lo * scale
    ix = torch.arange(256, dtype=torch.float64, device=x.device)
    lut = torch.trunc(torch.add(torch.mul(ix, scale), offset)).clamp(0, 255)
    lut = torch.where(hi > lo, lut, ix)
    return _apply_lut(x, lut)


def _equalize(x: Tensor, _: Tensor) -> Tensor:
    hist = _histogram(x)
    bins = torch.arange(256, device=x.device)
    last = torch.where(hist > 0, bins, -1).amax(dim=2, keepdim=True)
    last_count = torch.gather(hist, 2, last.clamp(min=0))
    # PIL: step = (pixels - pixels in the last used bin) // 255; lut[i] = (step // 2 + sum(h[:i])) // step,
    # clipped to 255 by Image.point; step 0 (one used bin, or too few pixels): identity.
    step = (hist.sum(dim=2, keepdim=True) - last_count) // 255
    below = torch.cumsum(hist, dim=2) - hist
    lut = ((step // 2 + below) // step.clamp(min=1)).clamp(max=255)
    return _apply_lut(x, torch.where(step > 0, lut, bins))


# ---- ImageEnhance: blend with a degenerate image ----------------------------------------------------


def _blend(degenerate: Tensor, x: Tensor, factor: Tensor) -> Tensor:
    # ImagingBlend: (UINT8)(in1 + alpha * (in2 - in1)) in float32, clipped. mul and add stay separate
    # kernels, so no fused multiply-add rounds the sum differently from PIL's.
    mixed = torch.add(degenerate, torch.mul(_col(factor), x - degenerate))
    return torch.trunc(mixed).clamp(0, 255)


def _luma(x: Tensor) -> Tensor:
    """PIL's RGB -> "L": (R*19595 + G*38470 + B*7471 + 0x8000) >> 16, as (n, 1, H, W) float."""
    r, g, b = x.to(torch.int32).unbind(1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).unsqueeze(1).to(x.dtype)


def _brightness(x: Tensor, factor: Tensor) -> Tensor:
    # _blend with a black degenerate: 0 + t is t, so the product alone, truncated and clipped.
    return torch.trunc(torch.mul(_col(factor), x)).clamp(0, 255)


def _color(x: Tensor, factor: Tensor) -> Tensor:
    return _blend(_luma(x).expand_as(x), x, factor)


def _contrast(x: Tensor, factor: Tensor) -> Tensor:
    luma = _luma(x).flatten(1).long()
    count = luma.shape[1]
    # int(sum / count + 0.5) exactly, in integers.
    mean = (2 * luma.sum(dim=1) + count) // (2 * count)
    return _blend(_col(mean.to(x.dtype)).expand_as(x), x, factor)


def _smooth(x: Tensor) -> Tensor:
    """PIL's ImageFilter.SMOOTH: 3x3 [[1,1,1],[1,5,1],[1,1,1]] / 13, rounded; border pixels unchanged."""
    h, w = x.shape[2:]
    total = 4 * x[:, :, 1:-1, 1:-1]
    for dy in range(3):
        for dx in range(3):
            total = total + x[:, :, dy : h - 2 + dy, dx : w - 2 + dx]
    out = x.clone()
    # round(total / 13): total / 13 is never k + 1/2 (13 is odd), so float32 cannot tip it.
    out[:, :, 1:-1, 1:-1] = torch.floor((2 * total + 13) / 26)
    return out


def _sharpness(x: Tensor, factor: Tensor) -> Tensor:
    return _blend(_smooth(x), x, factor)


_POINT_OPS.update(
    AutoContrast=_autocontrast,
    Equalize=_equalize,
    Invert=lambda x, _: 255 - x,
    Posterize=_posterize,
    PosterizeIncreasing=_posterize,
    Solarize=_solarize,
    SolarizeIncreasing=_solarize,
    SolarizeAdd=_solarize_add,
    Color=_color,
    ColorIncreasing=_color,
    Contrast=_contrast,
    ContrastIncreasing=_contrast,
    Brightness=_brightness,
    BrightnessIncreasing=_brightness,
    Sharpness=_sharpness,
    SharpnessIncreasing=_sharpness,
)
OPS: frozenset[str] = frozenset(_POINT_OPS) | frozenset(AFFINE_OPS)
"""The timm RandAugment op names apply_op executes (timm's _RAND_TRANSFORMS and _RAND_INCREASING_TRANSFORMS)."""
