"""Decode one source file robustly into an upright 8-bit RGB image, or say in a few words why not.

What every converter (wds, ffcv) feeds on. The rules, in the order they apply:

- **Not decodable -> skipped with a reason**: zero-byte files, non-images, truncated or corrupt images
  (a full decode is the only test that catches truncation, so nothing is accepted on its header alone).
- **Too many pixels -> skipped**: PIL's own decompression-bomb check reads a global that we neither trust
  nor want to mutate, so it is switched off while a file is opened and replaced by ``max_pixels``
  (default: PIL's *error* threshold, 2 x ``Image.MAX_IMAGE_PIXELS`` = 179 Mpx). Large but legitimate photos
  (100 Mpx cameras, 9000 x 300 panoramas) convert; a 20k x 20k bomb is named and skipped. JPEGs are decoded
  at a reduced DCT scale (``Image.draft``), so a big JPEG costs about as much as one 1/4 or 1/8 its size.
- **Orientation**: EXIF-rotated photos are turned upright (``ImageOps.exif_transpose``); broken EXIF is
  ignored (the pixels are fine) rather than costing the image.
- **Colour**: CMYK, grayscale, bilevel, palette and YCbCr become RGB by PIL's conversions - the same
  result a PIL-based folder loader (timm, torchvision) gets from the original file, so models see the
  same colours from every backend. 16-bit grayscale is *scaled* to 8 bits (PIL's own conversion clips
  everything above 255 to white); 16-bit RGB(A) PNGs PIL already reads as their high bytes.
- **Alpha is composited on white**, not dropped: the colour stored under transparent pixels is arbitrary
  (often black), so dropping alpha turns a dark logo on a transparent background into a dark logo on
  black. White is what the image looks like on a page. (PIL-based loaders drop alpha; this is the one
  deliberate difference, and only for images with transparency.)
- **Size**: the longer side is brought down to ``max_resolution`` (LANCZOS, aspect kept, never upscaled).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

PIL_BOMB_PIXELS = 2 * 89_478_485  # PIL's default error threshold, fixed here: PIL's global may be changed


@dataclass(frozen=True)
class ImageOptions:
    max_resolution: int = 512
    jpeg_quality: int = 90
    max_pixels: int = PIL_BOMB_PIXELS


@dataclass(frozen=True)
class Encoded:
    """One converted image: JPEG bytes and the size they decode to."""

    jpeg: bytes
    width: int
    height: int


class Unusable(Exception):
    """A file we skip; the message is the reason shown in the report."""


@contextmanager
def _no_pil_bomb_check() -> Iterator[None]:
    # Image.open raises/warns from a module global; ours is enforced in _open instead. Workers run one
    # image at a time (no threads), so swapping the global for the duration of one open is safe.
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def target_size(width: int, height: int, max_resolution: int) -> tuple[int, int]:
    """The size after bringing the longer side down to ``max_resolution`` (aspect kept, at least 1 px)."""
    scale = max_resolution / max(width, height)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def _open(path: Path, opts: ImageOptions, draft_to: int) -> Image.Image:
    """Open and fully decode ``path``; a JPEG at the smallest DCT scale that keeps it >= ``draft_to``."""
    if os.stat(path).st_size == 0:
        raise Unusable("empty file")
    with _no_pil_bomb_check():
        try:
            img = Image.open(path)
        except Image.UnidentifiedImageError:
            raise Unusable("not an image (no decoder recognises it)") from None
        width, height = img.size
        if width * height > opts.max_pixels:
            raise Unusable(f"too large: {width}x{height} = {width * height:,} pixels > {opts.max_pixels:,}")
        if img.format == "JPEG":
            # Both sides stay >= the final size, so the resize after it is still a (quality) downscale.
            # EXIF rotation may swap the sides later; target_size is symmetric, so that is fine.
            img.draft(img.mode, target_size(width, height, draft_to))
        img.load()  # decodes everything: the only way to catch truncated or corrupt data
    return img


def _upright(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img) or img
    except Exception:  # broken EXIF blocks are common in scraped photos; the pixels are still good
        return img


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (or 32-bit int holding 16-bit) gray: scale to 8 bits; PIL's convert("L") clips at 255.
        arr = np.asarray(img, dtype=np.float64)
        return Image.fromarray((np.clip(arr, 0, 65535) / 257.0).round().astype(np.uint8)).convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        arr = arr * 255.0 if np.nanmax(arr) <= 1.0 else arr  # float images come as [0, 1] or [0, 255]
        return Image.fromarray(np.clip(np.nan_to_num(arr), 0, 255).round().astype(np.uint8)).convert("RGB")
    has_alpha = "A" in mode or "a" in mode or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as err:
        raise Unusable(f"cannot convert pixel mode {mode} to RGB: {err}") from None


def load_rgb(path: str | Path, opts: ImageOptions, *, probe: bool = False) -> Image.Image:
    """Decode ``path`` into an upright RGB image with its longer side <= ``opts.max_resolution``.

    ``probe=True`` runs every check at the smallest scale a JPEG allows (1/8) and skips the resize: the
    cheap pass that decides which files a .beton will hold before FFCV's writer is told how many.
    Raises :class:`Unusable` (message = the reason) for a file to skip.
    """
    img = _open(Path(path), opts, draft_to=1 if probe else opts.max_resolution)
    img = _to_rgb(_upright(img))
    if not probe:
        size = target_size(img.width, img.height, opts.max_resolution)
        if size != img.size:
            img = img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return img


def load_full(path: str | Path, opts: ImageOptions) -> tuple[Image.Image, tuple[int, int], int]:
    """``path`` upright and RGB at its full size (never resized), its stored (pre-EXIF) size, and the EXIF
    orientation that was applied (1 = none).

    For segmentation, where the image must stay pixel-aligned with its mask; :class:`Unusable` as above.
    """
    img = _open(Path(path), opts, draft_to=2**30)  # a draft target above any size decodes at full scale
    try:
        orientation = int(img.getexif().get(0x0112, 1))
    except Exception:  # broken EXIF: _upright leaves such an image as stored
        orientation = 1
    upright = _upright(img)
    applied = orientation if upright is not img else 1  # _upright returns the same object when EXIF is broken
    return _to_rgb(upright), img.size, applied


def _reason(err: Exception) -> str:
    if isinstance(err, Unusable):
        return str(err)
    # Anything else a decoder raises (OSError "image file is truncated", SyntaxError, ValueError, ...)
    # is about this one file; a worker must never die of it.
    return f"cannot decode: {err.__class__.__name__}: {err}"


def reason(err: Exception) -> str:
    """The report's reason for a file whose decoding raised ``err``."""
    return _reason(err)


def encode(path: str | Path, opts: ImageOptions) -> Encoded | str:
    """The converted JPEG of ``path``, or the reason it is skipped (a string)."""
    try:
        img = load_rgb(path, opts)
    except Exception as err:
        return _reason(err)
    out = BytesIO()
    img.save(out, "JPEG", quality=opts.jpeg_quality)  # no EXIF/ICC copied: pixels are already upright sRGB
    return Encoded(out.getvalue(), img.width, img.height)


def check(path: str | Path, opts: ImageOptions) -> str | None:
    """The reason ``path`` would be skipped, or ``None`` if it converts (see ``probe`` in :func:`load_rgb`)."""
    try:
        load_rgb(path, opts, probe=True)
    except Exception as err:
        return _reason(err)
    return None
