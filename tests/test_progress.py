"""swat_dist.progress: a tqdm bar on a terminal, short plain lines on anything else; the progress_every key."""

from __future__ import annotations

import io
import sys

import pytest
from tqdm import tqdm

from swat_dist import progress as progress_mod
from swat_dist.config import ConfigError, load_config
from swat_dist.progress import PlainProgress, progress


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(file: io.StringIO, total: int = 10, **kw: object) -> list[str]:
    with progress(total, "train", unit="step", file=file, **kw) as bar:  # type: ignore[arg-type]
        for step in range(1, total + 1):
            bar.set_postfix(loss=f"{1 / step:.4f}")
            bar.update(1)
    return file.getvalue().splitlines()


def test_a_terminal_gets_the_tqdm_bar_with_its_redraws():
    tty = FakeTTY()
    bar = progress(10, "train", unit="step", file=tty, every=4)
    assert isinstance(bar, tqdm)
    bar.update(10)
    bar.close()
    assert "\r" in tty.getvalue() and "10/10" in tty.getvalue()


def test_a_file_gets_one_short_plain_line_every_n_and_at_start_and_end():
    log = io.StringIO()
    assert isinstance(progress(1, "x", file=log), PlainProgress)
    lines = _run(io.StringIO(), every=4, interval_s=None, rate_scale=32, rate_unit="img")
    assert [line.split(" | ")[0] for line in lines] == [f"train {n}/10 step" for n in (0, 4, 8, 10)]
    assert lines[1].split(" | ")[1] == "loss=0.2500"  # the postfix set before that update
    assert all(" img/s | " in line for line in lines[1:])  # steps/s x rate_scale, in the rate unit
    assert "ETA" in lines[1] and "ETA" not in lines[-1]
    assert all(len(line) < 200 for line in lines)


def test_the_end_is_not_printed_twice_and_nothing_is_written_as_a_redraw():
    log = io.StringIO()
    lines = _run(log, total=8, every=4, interval_s=None)
    assert [line.split(" | ")[0] for line in lines] == ["train 0/8 step", "train 4/8 step", "train 8/8 step"]
    assert "\r" not in log.getvalue()


def test_without_a_count_cadence_lines_come_at_most_every_interval(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: clock[0])
    log = io.StringIO()
    with progress(None, "eval", unit="batch", file=log, interval_s=60.0) as bar:
        for _ in range(150):
            clock[0] += 1.0  # one batch a second
            bar.update(1)
    heads = [line.split(" | ")[0] for line in log.getvalue().splitlines()]
    assert heads == ["eval 0 batch", "eval 60 batch", "eval 120 batch", "eval 150 batch"]  # no total: no ETA
    assert "1.0 batch/s" in log.getvalue()


def test_a_resumed_count_starts_at_initial_and_rates_count_only_new_work():
    log = io.StringIO()
    with progress(10, "train", unit="step", file=log, every=4, interval_s=None, initial=5) as bar:
        for _ in range(5):
            bar.update(1)
    heads = [line.split(" | ")[0] for line in log.getvalue().splitlines()]
    assert heads == ["train 5/10 step", "train 8/10 step", "train 10/10 step"]


@pytest.mark.parametrize("stream", [FakeTTY, io.StringIO])
def test_show_false_prints_nothing(stream):
    out = stream()
    _run(out, every=1, show=False)
    assert out.getvalue() == ""


def test_the_default_stream_is_stderr_as_it_is_when_called(capsys):
    _run(sys.stderr, every=5)  # an explicit file still works
    with progress(3, "verify", unit="file") as bar:  # sys.stderr looked up now: capsys's, not a terminal
        bar.update(3)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "verify 0/3 file\n" in captured.err and "verify 3/3 file | " in captured.err


def test_every_below_one_is_refused():
    with pytest.raises(ValueError, match="every must be >= 1"):
        PlainProgress(10, "x", file=io.StringIO(), every=0)


def test_progress_every_is_a_root_key_of_at_least_one():
    base = ["data.format=synthetic"]
    assert load_config([], base).progress_every == 50
    assert load_config([], [*base, "progress_every=4"]).progress_every == 4
    with pytest.raises(ConfigError, match="progress_every"):
        load_config([], [*base, "progress_every=0"])
