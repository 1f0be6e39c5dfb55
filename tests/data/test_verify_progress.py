"""``swat-dist data verify`` shows progress on stderr: plain start and end lines in a log, a bar on a terminal."""

from __future__ import annotations

import io
import sys

from swat_dist.cli import main
from swat_dist.data.sources.index import read_index


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_gets_plain_start_and_end_lines(wds_dataset, capsys) -> None:
    files = sum(len(s.files) for s in read_index(wds_dataset).splits.values())
    assert main(["data", "verify", str(wds_dataset), "--workers", "1"]) == 0
    captured = capsys.readouterr()
    assert "ok - wds" in captured.out and "verify" not in captured.out  # the result alone on stdout
    lines = captured.err.splitlines()
    assert lines[0] == f"verify {wds_dataset.name} 0/{files} file"
    assert lines[-1].startswith(f"verify {wds_dataset.name} {files}/{files} file | ")
    assert "elapsed" in lines[-1]
    assert "\r" not in captured.err and all(len(line) < 200 for line in lines)


def test_a_terminal_gets_the_bar(wds_dataset, capsys, monkeypatch) -> None:
    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    assert main(["data", "verify", str(wds_dataset), "--workers", "1"]) == 0
    assert "\r" in tty.getvalue() and "file/s" in tty.getvalue()  # tqdm's redraw and rate
    assert "ok - wds" in capsys.readouterr().out
