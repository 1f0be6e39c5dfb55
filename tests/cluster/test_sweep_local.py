"""Without Slurm, `swat-dist sweep` runs the elements one after another with submitit's local executor:
each finishes in its own folder as a child of one FINISHED parent run (sqlite store), `jobs` lists them,
and running the same command again skips both (nothing is resubmitted)."""

from __future__ import annotations

import json

import pytest

from swat_dist.cli import main
from swat_dist.tracking import mlflow_store

from .tiny import losses, overrides

pytestmark = pytest.mark.slow


def test_local_sweep_runs_in_turn_tracks_a_parent_and_skips_finished_on_rerun(tmp_path, capsys):
    (tmp_path / "local.yaml").write_text("executor: local\ntasks_per_node: 1\ntime: 5\nenv: {OMP_NUM_THREADS: '1'}\n")
    sweep = tmp_path / "sw"
    args = [o for o in overrides(sweep, "max_steps=4", "tracking.backend=mlflow", "tracking.system_metrics=false")
            if not o.startswith("seed=")]  # fmt: skip
    cmd = ["sweep", "--cluster", str(tmp_path / "local.yaml"), "--grid", "seed=0,1", *args]
    assert main(cmd) == 0, capsys.readouterr().err[-3000:]
    out = capsys.readouterr().out
    assert "[1/2] seed-0: local job" in out and "[2/2] seed-1: 4 steps" in out
    manifest = json.loads((sweep / "sweep.json").read_text())
    assert manifest["driver_pid"] is None and [a["elements"] for a in manifest["arrays"]] == [["seed-0"], ["seed-1"]]
    for name in ("seed-0", "seed-1"):
        assert sorted(losses(sweep / name)) == [1, 2, 3, 4]

    uri, parent = f"sqlite:///{sweep / 'mlflow.db'}", manifest["tracking"]["parent_run_id"]
    assert mlflow_store.run_info(uri, parent)["status"] == "FINISHED"
    children = mlflow_store.find_children(uri, parent)
    assert sorted(c["tags"]["swat.sweep_point"] for c in children) == ["seed=0", "seed=1"]
    assert {c["status"] for c in children} == {"FINISHED"}
    assert {c["name"] for c in children} == {"sw/seed-0", "sw/seed-1"}

    assert main(["jobs", str(sweep)]) == 0
    listing = capsys.readouterr().out
    assert listing.count("FINISHED") == 2 and "seed-1" in listing

    assert main(cmd) == 0  # the same command again: both finished, nothing submitted, same parent
    assert "2 finished before (skipped), 0 to run" in capsys.readouterr().out
    assert len(json.loads((sweep / "sweep.json").read_text())["arrays"]) == 2
