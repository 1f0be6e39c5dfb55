"""``data convert --overwrite`` replaces DST whole, so it refuses while DST holds a file the previous conversion
did not write (one line naming it) instead of deleting it unseen."""

from __future__ import annotations

from pathlib import Path

import pytest

from swat_dist.cli import main
from swat_dist.data.convert.base import ConvertOptions
from swat_dist.data.convert.front import convert
from swat_dist.data.sets.synthetic import write_synthetic


def _options(**kw: object) -> ConvertOptions:
    return ConvertOptions(fmt="wds", max_resolution=32, workers=1, **kw)  # type: ignore[arg-type]


@pytest.fixture
def converted(tmp_path: Path) -> tuple[Path, Path]:
    write_synthetic(tmp_path / "src", classes=2, images=6, size=32, val_images=2, seed=0)
    assert convert(tmp_path / "src", tmp_path / "dst", _options()) == 0
    return tmp_path / "src", tmp_path / "dst"


def test_overwrite_refuses_while_dst_holds_a_file_it_did_not_write(converted, capsys):
    src, dst = converted
    notes = dst / "notes.txt"
    notes.write_text("which GPUs read this, and when")
    argv = ["data", "convert", str(src), str(dst), "--format", "wds", "--max-resolution", "32", "--workers", "1"]
    assert main([*argv, "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"swat-dist data convert: error: {dst}: --overwrite replaces the whole folder, but {notes} was not "
        "written by the conversion there; move it out of DST first"
    )
    assert notes.read_text() == "which GPUs read this, and when"  # nothing deleted
    (dst / "extra").mkdir()
    with pytest.raises(ValueError, match=r"extra \(and 1 more\) was not written"):
        convert(src, dst, _options(overwrite=True, seed=1))


def test_overwrite_replaces_a_previous_conversion_that_holds_only_its_own_files(converted):
    src, dst = converted
    before = sorted(p.name for p in dst.iterdir())
    assert set(before) >= {"index.json", "SHA256SUMS", "report.json", "report.txt", "train-000000.tar"}
    assert convert(src, dst, _options(overwrite=True, seed=1)) == 0
    assert '"seed": 1' in (dst / "index.json").read_text()
