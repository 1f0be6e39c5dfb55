"""Tiny single-process training runs with tracking on, and reading back what MLflow holds."""

from __future__ import annotations

import json
from pathlib import Path

from swat_dist.tracking import mlflow_store

from ..train.test_train_runs import overrides, spawn

ROOT = Path(__file__).resolve().parents[2]
TRACKED = ("tracking.backend=mlflow", "tracking.system_metrics=false", "tracking.flush_timeout_s=60")


def train_args(out: Path, *extra: str) -> list[str]:
    """The tiny 2-rank recipe of the training tests as one process (batch 16 of 32 samples: 2 steps/epoch)."""
    return overrides(out, *TRACKED, *extra)


def train(out: Path, *extra: str) -> dict:
    """One rank in a fresh process (DeepSpeed keeps process-group state that a second run in-process trips on)."""
    return spawn(1, train_args(out, *extra), out.parent)


def jsonl(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]


def run_id(run_dir: Path) -> str:
    return json.loads((run_dir / "tracking" / "run.json").read_text())["run_id"]


def assert_matches_jsonl(uri: str, rid: str, run_dir: Path, keys: tuple[str, ...]) -> dict[str, list[int]]:
    """Every (key, step) of metrics.jsonl is in the run exactly once, with the same value; return the steps."""
    records = jsonl(run_dir)
    steps = {}
    for key in keys:
        want = {r["step"]: r[key] for r in records if key in r}
        got = mlflow_store.history(uri, rid, key)
        got_steps = [s for s, _, _ in got]
        assert got_steps == sorted(want), f"{key}: MLflow has steps {got_steps}, metrics.jsonl {sorted(want)}"
        for step, value, _ in got:
            assert abs(value - want[step]) <= 1e-6 * max(1.0, abs(want[step])), (key, step, value, want[step])
        steps[key] = got_steps
    return steps
