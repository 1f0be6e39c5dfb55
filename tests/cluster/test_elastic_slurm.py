"""Against the private Slurm (conftest.py): a 2-node job preempted by USR2 and submitted again with
``--nodes 1`` is the same run - the same run folder, the same per-step losses as the uninterrupted 2-node
job (global batch 32: 2 x 16 before, 1 x 16 x accumulation 2 after), and `swat-dist jobs` lists the change."""

from __future__ import annotations

from pathlib import Path

import pytest

from swat_dist.cli import main
from swat_dist.cluster.submit import JobFailed, wait

from .test_slurm import STEPS, _final_state, _launch, _sh, _wait_for_step
from .tiny import losses, plan, profile_with


@pytest.mark.slow
def test_a_preempted_two_node_job_resubmitted_on_one_node_trains_on_the_same(slurm, tmp_path, capsys):
    ref = tmp_path / "ref"
    assert wait(_launch(plan(ref)), timeout_s=300)["world_size"] == 2
    # max_requeues 0: the preempted job saves and stops instead of requeueing itself on 2 nodes
    profile = profile_with(tmp_path, "no-requeue", "max_requeues: 0")
    out = tmp_path / "run"
    job = _launch(plan(out, cluster=str(profile)))
    _wait_for_step(out, 5, job)
    _sh("scancel", "--signal=USR2", job.job_id)
    with pytest.raises(JobFailed, match="not requeued"):
        wait(job, timeout_s=120)
    stop = int((out / "checkpoints" / "latest").read_text().strip().split("_")[1])
    assert 5 <= stop < STEPS
    one = plan(out, cluster=str(profile), nodes=1)  # submit's check: 1 rank keeps the global batch of 32
    assert one.world_size == 1
    again = _launch(one)
    summary = wait(again, timeout_s=300)
    assert summary["steps"] == STEPS and summary["world_size"] == 1
    assert _final_state(again.job_id)[:2] == ("COMPLETED", 0)
    log = Path(again.paths.stdout).read_text()
    assert (
        f"resuming step {stop} of 2 ranks on 1: global batch 32 kept as data.batch_size=16 x engine.grad_accum=2" in log
    )
    a, b = losses(ref), losses(out)
    assert sorted(b) == sorted(a) == list(range(1, STEPS + 1))
    assert max(abs(a[s] - b[s]) for s in a) <= 1e-5, {s: (a[s], b[s]) for s in a if abs(a[s] - b[s]) > 1e-5}
    assert main(["jobs", str(out)]) == 0
    listing = capsys.readouterr().out
    assert f"world size changed at step {stop}: 2 -> 1 ranks (data.batch_size=16 x engine.grad_accum=2)" in listing
