"""A WebDataset shard whose bytes were zeroed (a disk or copy fault) is named by the loader that meets it:
while scanning the headers at start, or when a sample's JPEG no longer decodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from swat_dist.data.convert.base import ConvertOptions
from swat_dist.data.convert.front import convert
from swat_dist.data.sets.synthetic import write_synthetic
from swat_dist.data.sources.wds import WdsSource, scan_shard


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("damaged")
    write_synthetic(root / "src", classes=2, images=8, size=32, val_images=2, seed=0)
    assert convert(root / "src", root / "wds", ConvertOptions(fmt="wds", max_resolution=32, workers=1)) == 0
    return root / "wds"


def _damaged(dataset: Path, tmp_path: Path, start: int, length: int) -> tuple[Path, Path]:
    """A copy of the dataset whose first train shard has ``length`` zero bytes from ``start``."""
    copy = tmp_path / "wds"
    copy.mkdir()
    for f in dataset.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    shard = copy / "train-000000.tar"
    data = bytearray(shard.read_bytes())
    data[start : start + length] = bytes(length)
    shard.write_bytes(bytes(data))
    return copy, shard


def _member(dataset: Path, ext: str) -> tuple[int, int]:
    """(data offset, size) of the first member with extension ``ext`` in the first train shard."""
    import tarfile

    with tarfile.open(dataset / "train-000000.tar") as tar:
        m = next(m for m in tar.getmembers() if m.name.endswith(f".{ext}"))
        return m.offset_data, m.size


def test_a_zeroed_label_is_named_by_the_scan(dataset, tmp_path):
    offset, size = _member(dataset, "cls")
    copy, shard = _damaged(dataset, tmp_path, offset, size)
    with pytest.raises(ValueError) as info:
        scan_shard(shard)
    assert str(info.value).startswith(f"{shard}: not a readable WebDataset shard (")  # was int()'s bare ValueError
    with pytest.raises(ValueError, match=f"^{shard}: not a readable WebDataset shard"):
        WdsSource(copy, "train", None, None)


def test_a_zeroed_header_is_named_by_the_scan(dataset, tmp_path):
    copy, shard = _damaged(dataset, tmp_path, 0, 512)  # tarfile reads the first member's header as the end
    with pytest.raises(ValueError, match=f"^{shard}: 0 samples, index.json says"):
        WdsSource(copy, "train", None, None)


def test_a_zeroed_jpeg_is_named_when_the_loader_reads_it(dataset, tmp_path):
    offset, size = _member(dataset, "jpg")
    copy, shard = _damaged(dataset, tmp_path, offset, size)
    source = WdsSource(copy, "train", lambda img: img, lambda img: img)  # the headers are intact
    bad = int(list(source.offsets).index(offset))
    with pytest.raises(ValueError) as info:
        source.load(bad, train=True)
    message = str(info.value)
    assert message == (
        f"{shard}: sample {bad} (.jpg at byte {offset:,}) does not decode (not an image); run swat-dist data verify"
    )
    assert source.load((bad + 1) % len(source), train=True)[0].size == (32, 32)  # the others still read
