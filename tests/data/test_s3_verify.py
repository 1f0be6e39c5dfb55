"""``swat-dist data verify s3://bucket/prefix`` against a real SeaweedFS on 127.0.0.1: a sound dataset
gives the local summary; damage in the store is reported naming the s3:// object, never a temp path."""

from __future__ import annotations

import tarfile
import tempfile

from swat_dist.cli import main
from swat_dist.data.sources.location import S3Location
from swat_dist.data.sources.object_store import ObjectStore

from .s3server import BUCKET, upload_dataset


def _verify(dst: str, capsys, workers: int = 1) -> tuple[int, str]:
    code = main(["data", "verify", dst, "--workers", str(workers)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out


def test_a_sound_dataset_in_the_store_verifies_as_on_disk(s3_ids, capsys):
    local, url = s3_ids
    code, on_disk = _verify(str(local), capsys)
    assert code == 0, on_disk
    code, in_store = _verify(url, capsys)
    assert code == 0, in_store
    assert in_store == on_disk.replace(str(local), url)  # same counts, "checksums match" included


def test_a_flipped_byte_and_a_missing_shard_in_the_store_name_their_objects(s3_ids, tmp_path, monkeypatch, capsys):
    local, _ = s3_ids
    where = S3Location(BUCKET, "ids/verify-damaged")
    upload_dataset(local, where)
    damaged = tmp_path / "train-000003.tar"
    data = bytearray((local / damaged.name).read_bytes())
    with tarfile.open(local / damaged.name) as tar:
        jpg = next(m for m in tar.getmembers() if m.name.endswith(".jpg"))
    data[jpg.offset_data + jpg.size // 2] ^= 0x55  # inside entropy-coded data: only the checksum sees it
    damaged.write_bytes(bytes(data))
    store = ObjectStore(where)
    store.upload(damaged, damaged.name)
    store.delete("train-000005.tar")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the downloads go: left empty
    (tmp_path / "tmp").mkdir()
    code, out = _verify(where.url(), capsys, workers=2)  # each forked worker downloads with its own client
    assert code == 1
    assert f"{where.url('train-000003.tar')}: SHA256 differs from SHA256SUMS" in out, out
    assert f"{where.url('train-000005.tar')}: missing" in out, out
    assert out.startswith(f"{where.url()}: ") and str(tmp_path) not in out  # object names, not the copies
    assert not any((tmp_path / "tmp").iterdir())
