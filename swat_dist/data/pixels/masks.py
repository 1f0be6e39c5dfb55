"""Segmentation masks: decode one strictly, check its labels, encode it losslessly.

A mask is a single-channel 8-bit PNG whose pixel values are *raw* labels (ADE20K's convention: 0 =
unlabelled, 1..N = the classes, 255 = ignore). Shared by the converter (source masks) and the verifier
(stored masks), so both apply the same rules:

- **PNG only**: a JPEG (or any lossy) mask has invented labels along every edge.
- **Mode L, or P read as its palette indices** (how Pillow-based pipelines, mmsegmentation included, read
  VOC-style palette masks); stored back as L. RGB(A) masks are refused: their colours would need a
  colour -> label table we do not have. 16-bit masks are refused: scaling them (as images are) would
  change labels, and clipping would merge them. Anything else (LA, 1-bit, I, F) is refused by its mode.
- **Labels**: with ``reduce_zero_label`` raw values 0..N are valid (0 becomes ignore), without it 0..N-1;
  255 (ignore) is always valid. A mask holding any other value is refused, naming the values.
- The full decode catches truncated files, as for images.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

IGNORE_INDEX = 255
LEVELS = 256  # raw mask values


class BadMask(Exception):
    """A mask we refuse; the message is the reason shown in the report."""


def max_label(num_classes: int, reduce_zero_label: bool) -> int:
    """The largest valid raw label other than :data:`IGNORE_INDEX`."""
    return num_classes if reduce_zero_label else num_classes - 1


def class_names(num_classes: int, reduce_zero_label: bool) -> list[str]:
    """The model's classes, named by the raw mask value they come from (class c <- raw c + 1 when reduced)."""
    first = 1 if reduce_zero_label else 0
    return [str(first + c) for c in range(num_classes)]


def _mode_problem(img: Image.Image) -> str | None:
    mode = img.mode
    if mode in ("L", "P"):
        return None
    if mode.startswith("I"):  # Pillow opens 16-bit grayscale PNGs as I;16 (older releases: I)
        return f"16-bit mask (mode {mode}) refused: labels must be single-channel 8-bit"
    if mode in ("RGB", "RGBA"):
        return f"{mode} mask refused: labels must be single-channel 8-bit (colour-coded masks need converting first)"
    return f"mask mode {mode} refused: labels must be single-channel 8-bit (L, or P read as indices)"


def decode(source: str | Path | bytes) -> np.ndarray:
    """The mask's raw labels as a ``uint8 (H, W)`` array; :class:`BadMask` says why not."""
    try:
        with Image.open(BytesIO(source) if isinstance(source, bytes) else source) as img:
            if img.format != "PNG":
                raise BadMask(f"mask is {img.format or 'not an image'}, not PNG (a lossy mask has invented labels)")
            img.load()
            problem = _mode_problem(img)
            if problem:
                raise BadMask(problem)
            labels_HW = np.asarray(img, dtype=np.uint8)  # P: the palette indices themselves
    except BadMask:
        raise
    except Image.UnidentifiedImageError:
        raise BadMask("mask is not an image (no decoder recognises it)") from None
    except Exception as err:  # truncated / corrupt PNG data
        raise BadMask(f"mask does not decode: {err.__class__.__name__}: {err}") from None
    return labels_HW


def histogram(labels_HW: np.ndarray) -> np.ndarray:
    """Pixels per raw value, ``int64 (256,)``."""
    return np.bincount(labels_HW.reshape(-1), minlength=LEVELS).astype(np.int64)


def label_problem(hist: np.ndarray, num_classes: int, reduce_zero_label: bool) -> str | None:
    """Why a mask with this histogram is refused (labels out of range), or None."""
    top = max_label(num_classes, reduce_zero_label)
    bad = [v for v in np.flatnonzero(hist).tolist() if top < v < IGNORE_INDEX]
    if not bad:
        return None
    shown = ", ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else "")
    rule = "reduce_zero_label" if reduce_zero_label else "no reduce_zero_label"
    return f"labels {shown} above the class count (valid: 0..{top} and 255 with {num_classes} classes, {rule})"


def classes_present(hist: np.ndarray, num_classes: int, reduce_zero_label: bool) -> list[int]:
    """The model classes (after the label mapping) this mask holds."""
    first = 1 if reduce_zero_label else 0
    return [c for c in range(num_classes) if hist[first + c] > 0]


def encode(labels_HW: np.ndarray) -> bytes:
    """Lossless single-channel 8-bit PNG; fixed settings, so the same labels give the same bytes."""
    out = BytesIO()
    Image.fromarray(np.ascontiguousarray(labels_HW, dtype=np.uint8)).save(out, "PNG", compress_level=6)
    return out.getvalue()
