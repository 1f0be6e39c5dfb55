"""Ctrl-C and ``kill`` stop ``swat-dist train`` like a preemption: one checkpoint at the next step, one line
saying where, exit 130 / 143, no traceback; the same command resumes there, and its summary's wall time
counts both attempts. A second Ctrl-C exits at once."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from .test_train_runs import ROOT, losses, overrides


def _args(out: Path, *extra: str) -> list[str]:
    return overrides(out, "max_steps=400", "sched.epochs=400", "checkpoint.every_steps=null", "ema.enabled=false",
                     *extra)  # fmt: skip


def _start(out: Path, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "swat_dist", "train", *_args(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # stderr to a file, not a pipe: the progress bar would fill a pipe nobody reads while training
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))


def _wait_for_steps(proc: subprocess.Popen, out: Path, steps: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (out / "metrics.jsonl").is_file() and len(losses(out)) >= steps:
            return
        assert proc.poll() is None, f"the run ended early (exit {proc.returncode})"
        time.sleep(0.05)
    raise AssertionError(f"{steps} steps not reached in {timeout} s")


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_saves_once_says_where_and_the_same_command_resumes(sig, code, tmp_path):
    out = tmp_path / "run"
    proc = _start(out, tmp_path / "err.log")
    _wait_for_steps(proc, out, 3)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    err = (tmp_path / "err.log").read_text()
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    (line,) = [x for x in err.splitlines() if "stopped by" in x]
    step = int(re.search(r"at step (\d+)", line).group(1))
    assert f"stopped by {signal.Signals(sig).name} at step {step}" in line and "the same command resumes" in line
    assert (out / "checkpoints" / "latest").read_text().strip() == f"step_{step:08d}"
    assert str(out / "checkpoints" / f"step_{step:08d}") in line
    assert not (out / "summary.json").exists()  # stopped, not finished
    saved = torch.load(out / "checkpoints" / f"step_{step:08d}" / "rank00000.pt", weights_only=False)
    first_attempt_s = saved["trainer"]["elapsed_s"]
    assert first_attempt_s > 0
    done = subprocess.run([sys.executable, "-m", "swat_dist", "train", *_args(out, f"max_steps={step + 2}")],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(losses(out)) == list(range(1, step + 3))  # continued at step + 1, nothing repeated
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == step + 2 and f"last checkpoint: {summary['checkpoint']}" in done.stdout
    assert summary["wall_time_s"] > first_attempt_s  # both attempts' time, not only the last one's


SECOND_CTRL_C = """
import os, signal
from swat_dist.train import preempt
preempt.install_interrupts()
os.kill(os.getpid(), signal.SIGTERM)  # torchrun's SIGTERM after a Ctrl-C: still one stop, no exit
os.kill(os.getpid(), signal.SIGINT)
print("stop asked:", preempt.requested(), signal.Signals(preempt.received()).name, flush=True)
os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C: now
print("still running", flush=True)
"""


def test_a_second_ctrl_c_exits_at_once():
    # signals sent to oneself are handled before the next statement: deterministic, unlike two SIGINTs from
    # outside, which the kernel may merge into one while the first is pending
    done = subprocess.run([sys.executable, "-c", SECOND_CTRL_C], capture_output=True, text=True, timeout=60)
    assert done.returncode == 130 and done.stderr == "", done.stderr
    assert done.stdout == "stop asked: True SIGTERM\n"
