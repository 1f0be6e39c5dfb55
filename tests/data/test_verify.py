"""``swat-dist data verify``: a sound dataset passes; each kind of damage is reported, never a traceback."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from swat_dist.cli import main
from swat_dist.data.sources.index import read_index


def _copy(dataset: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(dataset, tmp_path / "copy"))


def _verify(dst: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["data", "verify", str(dst), "--workers", "1"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x55
    path.write_bytes(bytes(data))


def test_sound_datasets_pass_with_a_summary(wds_dataset, ffcv_dataset, capsys) -> None:
    for dst in (wds_dataset, ffcv_dataset):
        code, out = _verify(dst, capsys)
        index = read_index(dst)
        assert code == 0, out
        assert f"train {index.splits['train'].samples}, val {index.splits['val'].samples} samples" in out
        assert "checksums match" in out


def test_truncated_shard_is_reported(wds_dataset, tmp_path, capsys) -> None:
    dst = _copy(wds_dataset, tmp_path)
    shard = dst / read_index(dst).splits["train"].files[1].path
    shard.write_bytes(shard.read_bytes()[:3000])  # cut inside the second sample
    code, out = _verify(dst, capsys)
    assert code == 1
    assert f"{shard.name}: unreadable after 1 samples" in out
    assert f"{shard.name}: SHA256 differs" in out and "per-class counts differ" in out


def test_flipped_byte_inside_a_jpeg_is_reported(wds_dataset, tmp_path, capsys) -> None:
    dst = _copy(wds_dataset, tmp_path)
    shard = dst / read_index(dst).splits["val"].files[0].path
    with tarfile.open(shard) as tar:
        jpg = next(m for m in tar.getmembers() if m.name.endswith(".jpg"))
    _flip(shard, jpg.offset_data + jpg.size // 2)  # entropy-coded data: decoders may not notice
    code, out = _verify(dst, capsys)
    assert code == 1 and f"{shard.name}: SHA256 differs from SHA256SUMS" in out


def test_count_that_disagrees_with_the_index_is_reported(wds_dataset, tmp_path, capsys) -> None:
    dst = _copy(wds_dataset, tmp_path)
    raw = json.loads((dst / "index.json").read_text())
    raw["splits"]["val"]["files"][0]["samples"] += 1
    (dst / "index.json").write_text(json.dumps(raw))
    code, out = _verify(dst, capsys)
    assert code == 1 and "val-000000.tar: " in out and "samples, index says" in out


def test_missing_shard_is_reported(wds_dataset, tmp_path, capsys) -> None:
    dst = _copy(wds_dataset, tmp_path)
    (dst / "train-000000.tar").unlink()
    code, out = _verify(dst, capsys)
    assert code == 1 and "train-000000.tar: missing" in out


def test_damaged_beton_is_reported(ffcv_dataset, tmp_path, capsys) -> None:
    dst = _copy(ffcv_dataset, tmp_path)
    beton = dst / "val.beton"
    beton.write_bytes(beton.read_bytes()[: 2**20])  # the data pages and the allocation table are gone
    _flip(dst / "train.beton", (dst / "train.beton").stat().st_size // 3)
    code, out = _verify(dst, capsys)
    assert code == 1
    assert "val.beton: unreadable after record 0" in out and "val.beton: 1,048,576 bytes, index says" in out
    assert "train.beton: SHA256 differs" in out


def test_not_a_dataset_is_a_one_line_error(tmp_path, capsys) -> None:
    assert main(["data", "verify", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no index.json" in err


def test_member_names_that_leave_the_folder_and_links_are_reported(wds_dataset, tmp_path, capsys) -> None:
    dst = _copy(wds_dataset, tmp_path)
    shard = dst / read_index(dst).splits["val"].files[0].path
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    bad = [tarfile.TarInfo(n) for n in ("../up.jpg", "/abs/x.jpg", "a/../../b.jpg", "sym.jpg", "hard.jpg", "fifo")]
    bad[3].type, bad[3].linkname = tarfile.SYMTYPE, "/etc/passwd"
    bad[4].type, bad[4].linkname = tarfile.LNKTYPE, members[0][0].name
    bad[5].type = tarfile.FIFOTYPE
    with tarfile.open(shard, "w") as tar:  # every original member kept, the bad ones appended
        for m, data in members:
            tar.addfile(m, io.BytesIO(data))
        for m in bad:
            tar.addfile(m, io.BytesIO(b"") if m.isfile() else None)
    code, out = _verify(dst, capsys)
    assert code == 1
    for name in ("../up.jpg", "/abs/x.jpg", "a/../../b.jpg"):
        assert f"{shard.name}: {name}: the name leaves the folder (absolute or with ..)" in out, out
    assert f"{shard.name}: sym.jpg: a link (to /etc/passwd), not a file" in out
    assert f"{shard.name}: hard.jpg: a link (to {members[0][0].name}), not a file" in out
    assert f"{shard.name}: fifo: not a regular file" in out
