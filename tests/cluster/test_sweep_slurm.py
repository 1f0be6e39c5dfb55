"""A 2-element sweep as one job array on the real private Slurm (conftest.py), tracked by a real MLflow
server: one element is stopped by USR2 mid-run, requeued and resumed while the other runs on untouched;
the sweep ends with a FINISHED parent run and exactly two FINISHED children (one run per element across
its requeue). Submitted without --wait, as users do: the driver returns at once and the last element to
finish ends the parent run. Run it under `flock /tmp/swat-slurm.lock` (the private Slurm is one per machine)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from swat_dist.cli import main
from swat_dist.cluster import jobs
from swat_dist.cluster.sweep import ended_summary
from swat_dist.tracking import mlflow_store
from tests.tracking.conftest import Server

from .test_slurm import _final_state, _sh, _start_when_requeued
from .tiny import losses, overrides

STEPS = 40
pytestmark = pytest.mark.slow


def _wait(cond, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)


def _step(run_dir) -> int:
    return max(losses(run_dir), default=0) if (run_dir / "metrics.jsonl").is_file() else 0


def test_array_sweep_preempted_element_resumes_alone_parent_and_two_children(slurm, tmp_path, capsys):
    server = Server(tmp_path)
    server.start()
    try:
        sweep = tmp_path / "sw"
        # 6 blocks, not tiny.py's 1: one process runs 1 block at ~30 steps/s (OMP_WAIT_POLICY=PASSIVE), all 40
        # steps in ~1.3 s - done before the USR2 sent at step 5 arrived (CI, 2026-12-07); 6 blocks take ~6 s
        args = [o for o in overrides(sweep, "model.kwargs={depth: 6}") if not o.startswith("seed=")]
        args += ["tracking.backend=mlflow", f"tracking.uri={server.uri}", "tracking.system_metrics=false",
                 "tracking.experiment=sweep_test"]  # fmt: skip
        rc: list[int] = []
        cmd = ["sweep", "--cluster", "local-test", "--nodes", "1", "--grid", "seed=0,1", *args]
        driver = threading.Thread(target=lambda: rc.append(main(cmd)))
        driver.start()
        _wait(lambda: (sweep / "sweep.json").is_file() and len(json.loads((sweep / "sweep.json").read_text())
                                                                ["arrays"]) == 1, "array submitted")  # fmt: skip
        manifest = json.loads((sweep / "sweep.json").read_text())
        first, second = (sweep / name for name in manifest["elements"])
        job0 = jobs.records(first)[-1]["job_id"]
        job1 = jobs.records(second)[-1]["job_id"]
        array = manifest["arrays"][0]["job_id"]
        assert (job0, job1) == (f"{array}_0", f"{array}_1")
        _wait(lambda: _step(first) >= 5, "element 0 at step 5")
        _sh("scancel", "--signal=USR2", job0)  # preempt element 0 only
        _start_when_requeued(job0)
        driver.join(timeout=60)  # no --wait: it returned once the array was queued
        assert not driver.is_alive() and rc == [0], capsys.readouterr().err[-3000:]
        _wait(lambda: all(ended_summary(d) is not None for d in (first, second)), "both elements finished", 300)

        for run_dir in (first, second):  # both complete, every step once (the resumed one continued)
            assert sorted(losses(run_dir)) == list(range(1, STEPS + 1))
            assert json.loads((run_dir / "summary.json").read_text())["steps"] == STEPS
        assert _final_state(job0)[:2] == ("COMPLETED", 1) and _final_state(job1)[:2] == ("COMPLETED", 0)
        log1 = (sweep / "slurm" / job1 / f"{job1}_0_log.out").read_text()
        assert "attempt 1: starting" in log1 and "attempt 2" not in log1  # the other element ran once
        listing = jobs.render_sweep(sweep, list(manifest["elements"]))
        assert f"{job0}  COMPLETED            1      {STEPS}" in listing, listing

        parent = manifest["tracking"]["parent_run_id"]
        _wait(lambda: mlflow_store.run_info(server.uri, parent)["status"] == "FINISHED", "the parent ended", 60)
        children = mlflow_store.find_children(server.uri, parent)
        assert len(children) == 2 and {c["status"] for c in children} == {"FINISHED"}
        by_seed = {c["params"]["sweep.seed"]: c for c in children}
        assert by_seed["0"]["tags"]["swat.sweep_point"] == "seed=0"
        assert by_seed["0"]["tags"]["slurm.restart_count"] == "1" and by_seed["1"]["tags"]["slurm.restart_count"] == "0"
        points = mlflow_store.history(server.uri, by_seed["0"]["run_id"], "train/loss")
        assert [s for s, _, _ in points] == list(range(1, STEPS + 1))  # one run, no step twice, none missing
    finally:
        server.kill()
