"""A run whose output goes to files (a Slurm log) writes short plain progress lines, never tqdm redraws:
training every ``progress_every`` steps, its final evaluation, and ``swat-dist eval`` at start and end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .test_train_runs import ROOT, overrides


def _swat(args: list[str], tmp: Path, name: str) -> list[str]:
    """Run ``python -m swat_dist ARGS`` as one process, stdout and stderr to two files; the lines of both."""
    out, err = tmp / f"{name}.out", tmp / f"{name}.err"
    with out.open("w") as o, err.open("w") as e:
        done = subprocess.run([sys.executable, "-m", "swat_dist", *args], cwd=ROOT, stdout=o, stderr=e,
                              env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)  # fmt: skip
    text = out.read_text() + err.read_text()
    assert done.returncode == 0, text[-3000:]
    assert "\r" not in text, "a carriage-return redraw reached the log"
    return text.splitlines()


@pytest.mark.slow
def test_a_logged_run_prints_plain_progress_lines_at_its_cadence(tmp_path):
    run = tmp_path / "run"
    args = overrides(run, "max_steps=10", "progress_every=4", "ema.enabled=true")
    lines = _swat(["train", *args], tmp_path, "train")
    train = [line for line in lines if line.startswith("train ")]
    assert [line.split(" | ")[0] for line in train] == [f"train {n}/10 step" for n in (0, 4, 8, 10)]
    assert all(len(line) < 200 for line in train)
    records = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    logged = {r["step"]: r for r in records if "train/loss" in r}
    for line, step in zip(train[1:], (4, 8, 10)):  # each line shows its own step's loss and lr
        assert f"loss={logged[step]['train/loss']:.4f} lr={logged[step]['lr']:.2e}" in line
        assert re.search(r" \| [\d.]+ img/s \| \d\d:\d\d elapsed", line), line
    assert "ETA" in train[1] and "ETA" not in train[-1]
    for desc in ("val", "val_ema"):  # the final evaluation, each at start and end (1 val batch here)
        assert [line.split(" | ")[0] for line in lines if line.startswith(f"{desc} ")] == [
            f"{desc} 0/1 batch",
            f"{desc} 1/1 batch",
        ]

    lines = _swat(["eval", *args, "--checkpoint", str(run)], tmp_path, "eval")
    assert [line.split(" | ")[0] for line in lines if line.startswith("eval ")] == ["eval 0/1 batch", "eval 1/1 batch"]
