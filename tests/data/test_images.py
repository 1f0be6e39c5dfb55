"""The robust decoder, one file at a time: every good kind comes out right, every bad kind is named."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from swat_dist.data.pixels import images
from swat_dist.data.pixels.images import Encoded, ImageOptions, check, encode, target_size

from .corpus import MAX_PIXELS, MAX_RES, Entry

OPTS = ImageOptions(MAX_RES, 90, MAX_PIXELS)


def _pixels(out: Encoded | str) -> np.ndarray:
    assert isinstance(out, Encoded), out
    img = Image.open(io.BytesIO(out.jpeg))
    assert img.format == "JPEG" and img.mode == "RGB" and img.size == (out.width, out.height)
    return np.asarray(img)


def test_every_decodable_file_keeps_its_colour_and_gets_the_right_size(corpus: tuple[Path, list[Entry]]) -> None:
    root, entries = corpus
    wrong = []
    for e in (e for e in entries if e.rgb is not None):
        px = _pixels(encode(root / e.rel, OPTS))
        mean = px.reshape(-1, 3).mean(0)
        if np.abs(mean - e.rgb).max() > 8 or max(px.shape[:2]) > MAX_RES:
            wrong.append(f"{e.rel}: mean {mean.round()} size {px.shape[1]}x{px.shape[0]}, expected {e.rgb}")
        if e.size is not None and (px.shape[1], px.shape[0]) != e.size:
            wrong.append(f"{e.rel}: size {px.shape[1]}x{px.shape[0]}, expected {e.size}")
    assert not wrong


def test_every_bad_file_is_skipped_with_its_reason(corpus: tuple[Path, list[Entry]]) -> None:
    root, entries = corpus
    bad = [e for e in entries if e.reason is not None and e.label >= 0]
    assert len(bad) >= 6
    for e in bad:
        reason = encode(root / e.rel, OPTS)
        assert isinstance(reason, str) and e.reason in reason.lower(), (e.rel, reason)


def test_the_cheap_check_agrees_with_the_full_decode_on_every_file(corpus: tuple[Path, list[Entry]]) -> None:
    # FFCV's writer is told the sample count from check(); a disagreement would leave a hole in a .beton
    root, entries = corpus
    for e in entries:
        full, cheap = encode(root / e.rel, OPTS), check(root / e.rel, OPTS)
        assert (cheap is None) == isinstance(full, Encoded), e.rel
        assert cheap is None or cheap == full, e.rel


def test_exif_rotated_photo_comes_out_upright(corpus: tuple[Path, list[Entry]]) -> None:
    px = _pixels(encode(corpus[0] / "train/bird/exif.jpg", OPTS)).astype(int)
    assert px.shape[:2] == (48, 24)  # portrait: stored landscape, orientation 6
    top, bottom = px[:20].reshape(-1, 3).mean(0), px[-20:].reshape(-1, 3).mean(0)
    assert top[0] > 240 and top[2] < 15, top  # red on top
    assert bottom[2] > 240 and bottom[0] < 15, bottom  # blue below


@pytest.mark.parametrize("value", [0, 257 * 100, 40000, 65535])
def test_16_bit_gray_is_scaled_not_clipped(tmp_path: Path, value: int) -> None:
    path = tmp_path / "g16.png"
    Image.fromarray(np.full((8, 8), value, np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    px = _pixels(encode(path, OPTS)).astype(int)
    assert np.abs(px - round(value / 257)).max() <= 2


def test_transparency_is_composited_on_white(corpus: tuple[Path, list[Entry]]) -> None:
    px = _pixels(encode(corpus[0] / "train/café ü/palette.png", OPTS)).astype(int)
    left, right = px[:, :12].reshape(-1, 3).mean(0), px[:, 20:].reshape(-1, 3).mean(0)
    assert (left > 245).all(), left  # transparent black -> white, not black
    assert right[2] > 245 and right[:2].max() < 10, right  # the opaque blue stays blue


def test_large_jpeg_is_decoded_at_reduced_scale_then_downscaled(corpus: tuple[Path, list[Entry]]) -> None:
    path = corpus[0] / "train/zebra x/wide.jpg"
    assert Image.open(path).size == (9000, 300)
    # the DCT-domain draft: 1/8 scale still covers the 64x2 target, so 9000x300 is never decoded in full
    assert images._open(path, OPTS, draft_to=MAX_RES).size == (1125, 38)
    assert _pixels(encode(path, OPTS)).shape == (2, 64, 3)


def test_pils_global_bomb_limit_neither_blocks_nor_leaks(
    corpus: tuple[Path, list[Entry]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 9000x300 = 2.7 Mpx is beyond 2x this limit, where PIL's Image.open raises DecompressionBombError
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    out = encode(corpus[0] / "train/zebra x/wide.jpg", OPTS)
    assert isinstance(out, Encoded) and (out.width, out.height) == (MAX_RES, 2)
    assert Image.MAX_IMAGE_PIXELS == 1_000_000  # restored after the open


def test_too_many_pixels_is_skipped_with_the_numbers(corpus: tuple[Path, list[Entry]]) -> None:
    reason = encode(corpus[0] / "train/zebra x/bomb.png", OPTS)
    assert reason == "too large: 2000x2000 = 4,000,000 pixels > 3,000,000"
    assert images.ImageOptions().max_pixels == 2 * 89_478_485  # default: PIL's own error threshold


def test_target_size_keeps_aspect_and_never_upscales() -> None:
    assert target_size(9000, 300, 64) == (64, 2)
    assert target_size(300, 9000, 64) == (2, 64)
    assert target_size(40, 30, 64) == (40, 30)
    assert target_size(100_000, 10, 64) == (64, 1)  # never a zero side
