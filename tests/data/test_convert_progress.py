"""Conversion says what it does when not on a terminal: plain start and end lines per split, no redraws."""

from __future__ import annotations

from swat_dist.cli import main

from .helpers import write_id_folder


def test_convert_prints_plain_progress_lines_off_a_terminal(tmp_path, capsys):
    write_id_folder(tmp_path / "src", classes=2, per_class={"train": 3, "val": 2})
    assert main(["data", "convert", str(tmp_path / "src"), str(tmp_path / "wds"), "--format", "wds"]) == 0
    err = capsys.readouterr().err  # captured: not a terminal, as a Slurm log is not
    assert "\r" not in err
    lines = err.splitlines()
    for split, n in (("train", 6), ("val", 4)):
        assert f"{split} (wds) 0/{n} img" in lines, err
        assert any(line.startswith(f"{split} (wds) {n}/{n} img | ") for line in lines), err
