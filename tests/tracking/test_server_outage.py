"""Against a real ``mlflow server``: killed mid-run and restarted on the same port and database, the
training job never stops, and every step's metrics end up in one run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swat_dist.tracking import mlflow_store

from .conftest import Server
from .helpers import ROOT, assert_matches_jsonl, jsonl, run_id, train_args

# sched.epochs=100 x 2 steps: ~10-20 s of training on a shared 2-core machine, time to kill the server mid-run
STEPS = 200


def _last_step(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return json.loads(lines[-1])["step"] if lines else 0


@pytest.mark.slow
def test_server_killed_mid_run_and_restarted_loses_nothing(server: Server, tmp_path):
    out = tmp_path / "run"
    # flush_timeout_s: on a loaded machine a restarted server once took 50 s to serve its API
    args = train_args(out, f"max_steps={STEPS}", "eval.every_epochs=0", "checkpoint.every_steps=null",
                      "tracking.experiment=outage", "tracking.http_timeout_s=3",
                      "tracking.flush_timeout_s=240")  # fmt: skip
    env = dict(os.environ, MLFLOW_TRACKING_URI=server.uri, OMP_NUM_THREADS="1")
    log = tmp_path / "train.log"
    proc = subprocess.Popen([sys.executable, "-m", "swat_dist", "train", *args], cwd=ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while _last_step(out) < 20 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        killed_at = _last_step(out)
        server.kill()
        while _last_step(out) < killed_at + 20 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _last_step(out) >= killed_at + 20, "training must go on while the server is down"
        server.start()  # same port, same sqlite file
        assert proc.wait(timeout=240) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert killed_at < STEPS - 20, f"the server went down at step {killed_at}: too late to test an outage"
    assert text.count("[tracking] warning: sending to MLflow") == 1, text[-3000:]  # one warning per outage
    assert "answers again" in text and "were not sent" not in text
    (only,) = mlflow_store.find_runs(server.uri, "outage", [])
    assert only["run_id"] == run_id(out) and only["status"] == "FINISHED"
    steps = assert_matches_jsonl(server.uri, only["run_id"], out, ("train/loss", "lr", "throughput/images_per_sec"))
    assert steps["train/loss"] == list(range(1, STEPS + 1))
    assert len(jsonl(out)) == STEPS + 1  # and the final evaluation
