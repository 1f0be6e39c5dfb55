"""``swat-dist data digits``: exact counts, a stratified seeded split, true pixels, atomic and idempotent."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from swat_dist.cli import main
from swat_dist.data.convert.staging import MARKER, write_once
from swat_dist.data.sets.digits import write_digits

DIGITS = load_digits()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _val_indices(root: Path) -> set[int]:
    return {int(p.stem) for p in (root / "val").glob("*/*.png")}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("digits") / "dst"
    assert main(["data", "digits", str(dst)]) == 0  # defaults: 32 px, val 0.2, seed 0
    return dst


def test_every_image_once_in_its_class_folder_with_a_stratified_split(written):
    seen: dict[int, tuple[str, int]] = {}
    for path in written.glob("*/*/*.png"):
        split, label = path.parts[-3], int(path.parts[-2])
        assert int(path.stem) not in seen
        seen[int(path.stem)] = (split, label)
    assert sorted(seen) == list(range(1797))
    assert all(label == DIGITS.target[i] for i, (_, label) in seen.items())
    assert sorted(p.name for p in (written / "train").iterdir()) == [str(d) for d in range(10)]
    for label, n in enumerate(np.bincount(DIGITS.target)):
        n_val = sum(1 for s, lab in seen.values() if s == "val" and lab == label)
        assert abs(n_val - 0.2 * n) <= 0.5, (label, n_val, n)


def test_pixels_are_the_sklearn_image_upscaled_4x_white_on_black(written):
    expected = np.rint(DIGITS.images * 255 / 16).astype(np.uint8)
    for path in written.glob("*/*/*.png"):
        img = Image.open(path)
        assert img.mode == "RGB" and img.size == (32, 32)
        rgb = np.asarray(img)
        assert (rgb == rgb[:, :, :1]).all()  # R == G == B
        assert np.array_equal(rgb[:, :, 0], np.kron(expected[int(path.stem)], np.ones((4, 4), np.uint8))), path


def test_same_seed_same_bytes_at_any_size_and_true_pixels_at_odd_sizes(tmp_path, written):
    write_digits(tmp_path / "again", size=32, val_fraction=0.2, seed=0)
    assert _files(tmp_path / "again") == _files(written)
    write_digits(tmp_path / "odd", size=12, seed=0)
    assert _val_indices(tmp_path / "odd") == _val_indices(written)  # the split does not depend on size
    rgb = np.asarray(Image.open(next((tmp_path / "odd").glob("train/7/*.png"))))
    centres = ((np.arange(8) + 0.5) * 12 / 8).astype(int)  # the centre pixel of each source pixel
    index = int(next((tmp_path / "odd").glob("train/7/*.png")).stem)
    assert rgb.shape == (12, 12, 3)
    assert np.array_equal(rgb[np.ix_(centres, centres)][:, :, 0], np.rint(DIGITS.images[index] * 255 / 16))


def test_other_seed_other_split_written_into_an_empty_folder(tmp_path, written):
    (tmp_path / "empty").mkdir()
    write_digits(tmp_path / "empty", size=8, seed=1)
    assert len(_val_indices(tmp_path / "empty")) == len(_val_indices(written))
    assert _val_indices(tmp_path / "empty") != _val_indices(written)


def test_rerun_on_a_complete_folder_touches_nothing(written, capsys):
    before = {p: p.stat().st_mtime_ns for p in written.rglob("*")}
    assert main(["data", "digits", str(written)]) == 0
    assert {p: p.stat().st_mtime_ns for p in written.rglob("*")} == before
    assert "already complete: 1438 train + 359 val" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seed", "1"], "holds digits with seed=0, size=32, val_fraction=0.2, not seed=1"),
        (["--size", "4"], "--size 4: must be at least 8"),
        (["--val-fraction", "1"], "--val-fraction 1.0: must be between 0 and 1"),
    ],
)
def test_bad_arguments_and_other_options_are_one_line_errors(written, capsys, args, message):
    assert main(["data", "digits", str(written), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_a_folder_that_is_something_else_is_refused(tmp_path, capsys):
    (tmp_path / "photos.txt").write_text("mine")
    assert main(["data", "digits", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no {MARKER}" in err
    assert [p.name for p in tmp_path.iterdir()] == ["photos.txt"]


def test_a_failed_build_leaves_neither_dst_nor_staging(tmp_path):
    def fill(root: Path) -> dict:
        (root / "train").mkdir()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_once(tmp_path / "dst", "digits", {}, fill)
    assert list(tmp_path.iterdir()) == []
