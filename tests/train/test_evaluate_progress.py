"""evaluate() shows progress once: rank 0 (or whoever is told ``show=True``), plain lines when not on a terminal."""

from __future__ import annotations

import io
import sys
from types import SimpleNamespace

import pytest
import torch

from swat_dist.train import evaluate as evaluate_mod
from swat_dist.train.evaluate import evaluate


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class CountTask:
    """Just enough of the Task interface: counts samples."""

    def batch(self, images, targets, device, train):
        return images, targets

    def eval_zeros(self, device):
        return torch.zeros(1, dtype=torch.float64)

    def eval_sums(self, forward, x, y):
        return torch.tensor([float(len(forward(x)))], dtype=torch.float64)

    def metrics(self, sums):
        return {"samples": int(sums.item())}


LOADER = [(torch.zeros(2, 3), torch.zeros(2)) for _ in range(3)]


def _eval(**kw: object) -> dict[str, float]:
    return evaluate(lambda x: x, LOADER, CountTask(), torch.device("cpu"), **kw)  # type: ignore[arg-type]


def test_plain_lines_at_start_and_end_when_not_a_terminal(capsys):
    assert _eval(desc="val_ema") == {"samples": 6}
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0] == "val_ema 0/3 batch" and lines[-1].startswith("val_ema 3/3 batch | ")
    assert len(lines) == 2 and "\r" not in err


def test_a_terminal_gets_a_bar(monkeypatch):
    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    _eval()
    assert "\r" in tty.getvalue() and "0/3 [" in tty.getvalue()  # tqdm's bar (cleared at the end: leave=False)
    assert "eval 0/3 batch" not in tty.getvalue()


@pytest.mark.parametrize(("rank", "shown"), [(0, True), (1, False)])
def test_by_default_only_rank_zero_of_a_process_group_shows_it(monkeypatch, capsys, rank, shown):
    fake = SimpleNamespace(is_initialized=lambda: True, get_rank=lambda: rank)
    monkeypatch.setattr(evaluate_mod, "tdist", fake)  # evaluate's view only: the collectives stay single-process
    _eval()
    assert ("eval 3/3 batch" in capsys.readouterr().err) is shown


def test_show_false_prints_nothing(capsys):
    _eval(show=False)
    assert capsys.readouterr().err == ""
