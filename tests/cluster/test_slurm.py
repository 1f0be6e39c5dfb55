"""Against a real private Slurm (conftest.py): a 2-node job trains; a job stopped by USR2 mid-run saves
collectively, is requeued, resumes and ends exactly where an uninterrupted run ends; the requeue bound
holds; a crashing job reports its error and log in bounded time; `swat-dist jobs` / `cancel`."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from swat_dist.cli import main
from swat_dist.cluster import jobs
from swat_dist.cluster.submit import JobFailed, submit, wait

from .tiny import losses, plan, profile_with

STEPS = 40


def _sh(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout.strip()


def _launch(p):  # what `swat-dist submit` does, keeping submitit's handle
    job = submit(p)
    jobs.record(p.run_dir, job.job_id, executor=p.executor, folder=str(Path(job.paths.stdout).parent))
    return job


def _final_state(job_id: str, timeout: float = 60) -> tuple[str, int, str]:
    """The result file lands a moment before Slurm marks the job finished: wait for the mark."""
    deadline = time.monotonic() + timeout
    while (state := jobs.slurm_state(job_id))[0] not in jobs.FINISHED and time.monotonic() < deadline:
        time.sleep(0.2)
    return state


def _wait_for_step(run_dir: Path, step: int, job, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / "metrics.jsonl").is_file() and max(losses(run_dir), default=0) >= step:
            return
        assert not job.done(), f"job ended before step {step}: {job.paths.stderr}"
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached in {timeout} s")


def _start_when_requeued(job_id: str, timeout: float = 120) -> None:
    """A requeued job waits ~150 s (BeginTime) before it may start again; a test need not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = _sh("scontrol", "show", "job", job_id)
        if "JobState=PENDING" in info and "Restarts=1" in info:
            _sh("scontrol", "update", f"JobId={job_id}", "StartTime=now+2")
            return
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} was not requeued within {timeout} s:\n{info}")


@pytest.fixture(scope="module")
def reference(slurm, tmp_path_factory):
    """An uninterrupted 2-node x 1-task run: the baseline every preempted run must reproduce."""
    out = tmp_path_factory.mktemp("ref") / "run"
    job = _launch(plan(out))
    return out, wait(job, timeout_s=300), job


def test_two_node_job_trains_and_writes_its_summary(reference):
    out, summary, job = reference
    assert summary["steps"] == STEPS and summary["world_size"] == 2
    assert json.loads((out / "summary.json").read_text())["final"] == summary["final"]
    assert sorted(losses(out)) == list(range(1, STEPS + 1))
    assert _final_state(job.job_id)[:2] == ("COMPLETED", 0)
    assert _sh("sacct", "-j", job.job_id, "-X", "-n", "-P", "-o", "NodeList,State") == "n[1-2]|COMPLETED"
    assert (out / "checkpoints" / "latest").read_text().strip() == f"step_{STEPS:08d}"


def test_usr2_mid_run_saves_requeues_resumes_and_matches_the_uninterrupted_run(reference, tmp_path, capsys):
    ref, ref_summary, _ = reference
    out = tmp_path / "run"
    job = _launch(plan(out))
    _wait_for_step(out, 5, job)
    t0 = time.monotonic()
    _sh("scancel", "--signal=USR2", job.job_id)  # what Slurm sends signal_lead_s before a limit or preemption
    _start_when_requeued(job.job_id)
    t1 = time.monotonic()
    summary = wait(job, timeout_s=300)
    print(
        f"\nUSR2 -> saved and requeued: {t1 - t0:.1f} s; requeued attempt to its result: {time.monotonic() - t1:.1f} s"
    )

    log = Path(job.paths.stdout).read_text()  # open-mode=append: both attempts
    stops = [line for line in log.splitlines() if "stopped by SIGUSR2 at step" in line]
    assert len(stops) == 1 and "requeueing (restart 1 of at most 2)" in stops[0], log[-3000:]
    stop_step = int(stops[0].split("at step ")[1].split()[0])
    assert 5 <= stop_step < STEPS
    assert _final_state(job.job_id)[:2] == ("COMPLETED", 1)  # exactly one requeue
    # the same result as never stopping: every step's loss, the final weights, the final metrics
    a, b = losses(ref), losses(out)
    assert sorted(b) == list(range(1, STEPS + 1))
    assert max(abs(a[s] - b[s]) for s in a) <= 1e-6, {s: (a[s], b[s]) for s in a if a[s] != b[s]}
    tag = f"step_{STEPS:08d}"
    for name in ("model.safetensors", "ema.safetensors"):
        wa, wb = (load_file(str(d / "checkpoints" / tag / name)) for d in (ref, out))
        assert wa.keys() == wb.keys()
        assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) <= 1e-6
    assert summary["steps"] == STEPS
    for key, value in ref_summary["final"].items():
        assert summary["final"][key] == pytest.approx(value, abs=1e-6), key
    assert main(["jobs", str(out)]) == 0
    listing = capsys.readouterr().out
    assert f"last step {STEPS}" in listing and "COMPLETED" in listing and job.paths.stdout.name in listing


def test_external_scontrol_requeue_resumes_from_the_last_periodic_checkpoint(slurm, tmp_path):
    # Longer than the others: after `scontrol requeue` the job runs on for KillWait (5 s) before SIGKILL,
    # since submitit ignores SIGTERM, and it must still be mid-run when it dies. 160 steps once ran out
    # in that window in CI (the micro model trains at ~30 steps/s): 600 leave ~20 s of margin.
    steps, out = 600, tmp_path / "run"
    job = _launch(plan(out, f"max_steps={steps}", f"sched.epochs={steps}", "checkpoint.every_steps=20"))
    _wait_for_step(out, 25, job)
    _sh("scontrol", "requeue", job.job_id)  # no signal to the job: it is killed and starts over
    _start_when_requeued(job.job_id)
    summary = wait(job, timeout_s=400)
    assert _final_state(job.job_id)[:2] == ("COMPLETED", 1) and summary["steps"] == steps
    log = Path(job.paths.stdout).read_text()
    assert "stopped by" not in log  # no stop request was seen, so no stop checkpoint was written
    attempts = re.findall(rf"job {job.job_id} attempt (\d+): (starting|resuming from step_(\d+))", log)
    assert [a[0] for a in attempts] == ["1", "2"] and attempts[0][1] == "starting", log[-2000:]
    resumed = int(attempts[1][2])
    assert resumed >= 20 and resumed % 20 == 0 and resumed < steps  # a periodic checkpoint, mid-run
    assert sorted(losses(out)) == list(range(1, steps + 1))  # the log reads as one run


def test_requeue_bound_stops_with_a_clear_error_and_a_checkpoint(slurm, tmp_path):
    profile = profile_with(tmp_path, "bounded", "max_requeues: 0")
    out = tmp_path / "run"
    job = _launch(plan(out, cluster=str(profile)))
    _wait_for_step(out, 3, job)
    _sh("scancel", "--signal=USR2", job.job_id)
    with pytest.raises(JobFailed, match=r"not requeued: the job was already requeued 0 times \(max_requeues 0"):
        wait(job, timeout_s=120)
    stop = int((out / "checkpoints" / "latest").read_text().strip().split("_")[1])
    assert 3 <= stop < STEPS and not (out / "summary.json").exists()  # saved, not finished
    state, requeues, _ = _final_state(job.job_id)
    assert state in ("FAILED", "CANCELLED") and requeues == 0  # submitit cancels the rest of a failed job


def test_crashing_job_reports_its_error_and_log_within_bounded_time(slurm, tmp_path):
    out = tmp_path / "run"
    job = _launch(plan(out, "data.format=folder", f"data.path={tmp_path / 'missing'}"))
    t0 = time.monotonic()
    with pytest.raises(JobFailed) as err:
        wait(job, timeout_s=120)
    assert time.monotonic() - t0 < 120
    message = str(err.value)
    assert f"job {job.job_id} failed" in message and f"log: {job.paths.stderr}" in message
    assert "missing" in message  # the cause itself, not only "failed"
    assert "missing" in Path(job.paths.stderr).read_text()


def test_cancel_ends_a_running_job(slurm, tmp_path, capsys):
    out = tmp_path / "run"
    job = _launch(plan(out, "max_steps=100000", "sched.epochs=100000"))  # 1 step an epoch: runs until cancelled
    deadline = time.monotonic() + 60
    while jobs.slurm_state(job.job_id)[0] != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert main(["cancel", str(out)]) == 0
    assert f"cancelled {job.job_id}" in capsys.readouterr().out
    with pytest.raises(JobFailed, match="CANCELLED"):
        wait(job, timeout_s=60)
    assert main(["cancel", str(out)]) == 0 and "no unfinished jobs" in capsys.readouterr().out


@pytest.mark.slow
def test_real_time_limit_warns_saves_and_the_requeued_attempt_resumes_at_that_step(slurm, tmp_path):
    # A 2-minute limit with USR2 30 s before it: Slurm's own timer signals the job (it checks every ~30 s,
    # so the warning comes 60-90 s after the start). A run far longer than that stops, saves, is requeued
    # and resumes at exactly the saved step; then the test cancels it (~2 min in all).
    profile = tmp_path / "short.yaml"
    base = (Path(__file__).parents[2] / "launch/clusters/local-test.yaml").read_text()
    profile.write_text(base.replace("time: 10", "time: 2"))
    out = tmp_path / "run"
    job = _launch(plan(out, "max_steps=100000", "sched.epochs=100000", cluster=str(profile)))
    log, deadline = Path(job.paths.stdout), time.monotonic() + 300
    _start_when_requeued(job.job_id, timeout=240)
    while "attempt 2: resuming" not in (log.read_text() if log.is_file() else ""):
        assert time.monotonic() < deadline and not job.done(), log.read_text()[-3000:]
        time.sleep(0.5)
    stop = int(re.findall(r"stopped by SIGUSR2 at step (\d+)", log.read_text())[0])
    _wait_for_step(out, stop + 3, job)  # the requeued attempt trains on from there
    assert main(["cancel", str(out)]) == 0
    state, requeues, _ = _final_state(job.job_id)
    assert state == "CANCELLED" and requeues == 1  # the warned attempt was requeued, not timed out
    text = log.read_text()
    assert f"attempt 2: resuming from step_{stop:08d}" in text and "TIMEOUT" not in text
    steps = sorted(losses(out))
    assert steps[: stop + 3] == list(range(1, stop + 4))  # one continuous run across the requeue
