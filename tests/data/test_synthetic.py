"""``swat-dist data synthetic``: counts, valid photo-sized JPEGs, determinism across workers, one-line errors."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from swat_dist.cli import main
from swat_dist.data.sets.synthetic import image, jpeg, write_synthetic


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("synthetic") / "dst"
    assert main(["data", "synthetic", str(dst), "--classes", "3", "--images", "10", "--size", "32"]) == 0
    return dst


def test_images_spread_evenly_and_val_defaults_to_one_per_class_at_least(written):
    counts = {
        split: {c.name: len(list(c.glob("*.jpg"))) for c in sorted((written / split).iterdir())}
        for split in ("train", "val")
    }
    assert counts == {
        "train": {"class_000": 4, "class_001": 3, "class_002": 3},
        "val": {"class_000": 1, "class_001": 1, "class_002": 1},  # max(10 // 5, 3 classes)
    }


def test_every_file_is_a_valid_rgb_jpeg_of_the_requested_size(written):
    paths = sorted(written.glob("*/*/*.jpg"))
    assert len(paths) == 13
    for path in paths:
        with Image.open(path) as img:
            assert img.format == "JPEG" and img.mode == "RGB" and img.size == (32, 32)
            img.load()  # decodes every scan: a truncated file raises here


def test_same_bytes_with_or_without_a_pool_and_other_bytes_for_another_seed(tmp_path, written):
    write_synthetic(tmp_path / "pool", classes=3, images=10, size=32, workers=2)
    assert _files(tmp_path / "pool") == _files(written)
    write_synthetic(tmp_path / "seed1", classes=3, images=10, size=32, seed=1)
    ours, theirs = _files(written), _files(tmp_path / "seed1")
    assert ours.keys() == theirs.keys()
    assert all(ours[k] != theirs[k] for k in ours if k.endswith(".jpg"))


def test_images_compress_like_photos_at_256_px():
    # ImageNet photos at 256 px are ~20-40 KB at quality 90; flat or pure-noise images would be far off
    sizes = [len(jpeg(0, 0, i, 256)) / 1024 for i in range(4)]
    assert 15 < np.mean(sizes) < 45, sizes
    img = np.asarray(image(0, 0, 0, 256), dtype=np.float32)
    assert img.std() > 10  # not a flat field that happens to carry noise


def test_rerun_is_a_no_op_and_other_options_are_refused(written, capsys):
    before = {p: p.stat().st_mtime_ns for p in written.rglob("*")}
    assert main(["data", "synthetic", str(written), "--classes", "3", "--images", "10", "--size", "32"]) == 0
    assert {p: p.stat().st_mtime_ns for p in written.rglob("*")} == before
    assert "already complete: 10 train + 3 val" in capsys.readouterr().out
    assert main(["data", "synthetic", str(written), "--classes", "3", "--images", "10", "--size", "64"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "size=32" in err and "size=64" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--classes", "0", "--images", "10"], "--classes 0: must be at least 1"),
        (["--classes", "5", "--images", "4"], "--images 4: must be at least --classes (5)"),
        (["--classes", "5", "--images", "10", "--val-images", "4"], "--val-images 4: must be at least --classes"),
        (["--classes", "2", "--images", "10", "--size", "7"], "--size 7: must be at least 8"),
    ],
)
def test_bad_arguments_are_one_line_errors_and_write_nothing(tmp_path, capsys, args, message):
    assert main(["data", "synthetic", str(tmp_path / "dst"), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []
