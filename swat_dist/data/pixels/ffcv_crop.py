"""Crop and flip parameters for the FFCV pipeline: pure functions of (seed, epoch, sample id), no ffcv.

FFCV's own random-resized-crop draws from numba's per-thread ``np.random`` with no per-sample seed, so a
sample's crop would change with the thread that decodes it, with the worker count and after a resume.
Here every random number is a counter-based hash of (seed, epoch, sample id, draw number): no RNG state
exists, so any thread, process or resumed job computes the same crop for the same sample. Parameters are
computed for a whole batch at once with numpy (~50 us for 64 samples, next to ~10 ms of JPEG decoding),
then handed to the jitted decoder (``ffcv.py``) - keeping the math here, readable and testable.

The semantics are torchvision's / timm's ``RandomResizedCrop.get_params``: up to 10 attempts at an area
fraction drawn from ``scale`` and a log-uniform aspect ratio from ``ratio``, rounded to whole pixels;
the first attempt that fits the image wins; otherwise a centre crop with the ratio clamped to ``ratio``.
"""

from __future__ import annotations

import math

import numpy as np

ATTEMPTS = 10
# draw numbers: 2 per attempt (area, ratio), then position and flip
_TOP, _LEFT, _FLIP = 2 * ATTEMPTS, 2 * ATTEMPTS + 1, 2 * ATTEMPTS + 2
_M64 = np.uint64


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective scramble of uint64s (arrays wrap silently on overflow)."""
    x = x + _M64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _M64(30))) * _M64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _M64(27))) * _M64(0x94D049BB133111EB)
    return x ^ (x >> _M64(31))


def sample_keys(seed: int, epoch: int, ids: np.ndarray) -> np.ndarray:
    """One uint64 key per sample, depending on (seed, epoch, id) only."""
    head = _mix(_mix(np.array([seed % 2**64], dtype=np.uint64)) ^ _M64(epoch % 2**64))
    return _mix(head ^ np.asarray(ids, dtype=np.int64).astype(np.uint64))


def uniforms(keys: np.ndarray, draws: int) -> np.ndarray:
    """``(len(keys), draws)`` floats in [0, 1): draw ``d`` of sample ``k`` is a hash of (key_k, d)."""
    counters = _mix(np.arange(draws, dtype=np.uint64) + _M64(0x632BE59BD9B4E019))
    bits = _mix(keys[:, None] ^ counters[None, :]) >> _M64(11)  # top 53 bits: exact in a float64
    return bits.astype(np.float64) * 2.0**-53


def random_resized_crop(
    keys: np.ndarray,
    heights: np.ndarray,
    widths: np.ndarray,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    hflip: float,
) -> np.ndarray:
    """int64 ``(B, 5)``: top, left, height, width of each sample's crop, and 1 where it is flipped."""
    u = uniforms(keys, _FLIP + 1)
    H, W = heights.astype(np.float64)[:, None], widths.astype(np.float64)[:, None]
    target = H * W * (scale[0] + (scale[1] - scale[0]) * u[:, 0:_TOP:2])
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = np.exp(lo + (hi - lo) * u[:, 1:_TOP:2])
    # np.rint rounds half to even, as Python's round() in torchvision does
    w = np.rint(np.sqrt(target * aspect))
    h = np.rint(np.sqrt(target / aspect))
    fits = (w > 0) & (w <= W) & (h > 0) & (h <= H)
    first = fits.argmax(axis=1)
    rows = np.arange(len(keys))
    ch, cw = h[rows, first], w[rows, first]

    # no attempt fits: the whole image, cut to the nearest allowed aspect ratio, centred
    miss = ~fits.any(axis=1)
    Hm, Wm = H[:, 0], W[:, 0]
    in_ratio = Wm / Hm
    fall_w = np.where(in_ratio > max(ratio), np.rint(Hm * max(ratio)), Wm)
    fall_h = np.where(in_ratio < min(ratio), np.rint(Wm / min(ratio)), Hm)
    ch, cw = np.where(miss, fall_h, ch), np.where(miss, fall_w, cw)
    top = np.where(miss, (Hm - ch) // 2, np.floor(u[:, _TOP] * (Hm - ch + 1)))
    left = np.where(miss, (Wm - cw) // 2, np.floor(u[:, _LEFT] * (Wm - cw + 1)))
    flip = u[:, _FLIP] < hflip
    return np.stack([top, left, ch, cw, flip], axis=1).astype(np.int64)


def centre_crop(heights: np.ndarray, widths: np.ndarray, size: int, crop_pct: float) -> np.ndarray:
    """int64 ``(B, 5)`` like :func:`random_resized_crop`, for eval: resize the short side to
    ``floor(size / crop_pct)``, then take the centre ``size`` x ``size`` - expressed as the square of
    source pixels that ends up in the output, so the decoder does one crop-and-resize."""
    short = np.minimum(heights, widths).astype(np.float64)
    side = np.clip(np.rint(short * size / math.floor(size / crop_pct)), 1, short)
    top = (heights - side) // 2
    left = (widths - side) // 2
    zeros = np.zeros_like(side)
    return np.stack([top, left, side, side, zeros], axis=1).astype(np.int64)
