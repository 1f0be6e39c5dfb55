"""`swat-dist data photo-digits`: the layout `data convert` reads, labels that are the pasted digit,
determinism, a real photo behind every digit, disjoint digit samples per split, and one-line errors."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from swat_dist.cli import main
from swat_dist.data.sets.photo_digits import PHOTO_GAIN, compose
from swat_dist.data.sets.seg_digits import load_glyphs, load_photos


def _files(root):
    return sorted(p for p in root.rglob("*.png"))


def test_layout_sizes_and_labels(tmp_path, capsys):
    assert main(["data", "photo-digits", str(tmp_path / "pd"), "--train", "40", "--val", "12", "--size", "64"]) == 0
    assert "40 train + 12 val PNGs (64 px" in capsys.readouterr().out
    for split, n in (("train", 40), ("val", 12)):
        files = _files(tmp_path / "pd" / split)
        assert len(files) == n and {f.parent.name for f in files} <= {str(d) for d in range(10)}
        assert all(Image.open(f).size == (64, 64) and Image.open(f).mode == "RGB" for f in files[:5])


def test_the_label_is_the_pasted_digit_and_a_photo_is_behind_it():
    photos, glyphs = load_photos(), load_glyphs("train", 0)
    for i in range(20):
        rgb, digit = compose(np.random.default_rng([0, 100, i]), photos, glyphs, 32)
        again, same = compose(np.random.default_rng([0, 100, i]), photos, glyphs, 32)
        assert digit == same and np.array_equal(rgb, again)  # the seed alone fixes the image
        assert rgb.shape == (32, 32, 3) and 0 <= digit <= 9
        assert rgb.reshape(-1, 3).std(0).max() > 5  # not a flat card: photo texture and a stroke
        # the recipe that micro models can read (module doc): a full-value digit on a photo at half brightness
        bright = rgb.max(-1) > 255 * PHOTO_GAIN + 1
        assert rgb.max() == 255 and 0.03 < bright.mean() < 0.5, bright.mean()


def test_writing_twice_gives_the_same_bytes_and_splits_paste_disjoint_digits(tmp_path):
    for name in ("a", "b"):
        assert main(["data", "photo-digits", str(tmp_path / name), "--train", "20", "--val", "10"]) == 0
    digest = [hashlib.sha256(b"".join(f.read_bytes() for f in _files(tmp_path / n))).hexdigest() for n in "ab"]
    assert digest[0] == digest[1]
    train, val = load_glyphs("train", 0), load_glyphs("val", 0)
    shared = {g.tobytes() for g in train.ink_N88} & {g.tobytes() for g in val.ink_N88}
    assert len(shared) < 5  # sklearn holds a few identical 8x8 digits; the split itself shares no sample


@pytest.mark.parametrize("args, message", [(["--size", "48"], "must be 32 or 64"), (["--train", "3"], "at least 10"),
                                           (["--seed", "-1"], "must be >= 0")])  # fmt: skip
def test_bad_options_are_one_line_errors(tmp_path, capsys, args, message):
    assert main(["data", "photo-digits", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err and not (tmp_path / "x").exists()
