"""One run per folder (issue 27 item 3): rank 0 holds ``RUN/run.lock`` for the run's life. A second start
into the folder is refused in one line naming host and pid, on every rank at once, and the first run goes
on unharmed; a lock of a dead process is taken over; a Slurm requeue (the same job id) takes over its
earlier attempt's lock, even from another host, and resumes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swat_dist.dist import DistEnv
from swat_dist.train import run_lock
from swat_dist.train.checkpoint_paths import latest_tag, problem

from .test_train_runs import ROOT, kill_tree, overrides, torchrun

HOST = socket.gethostname()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # reaped: no process has it (the kernel hands pids out in order, rarely this one again soon)


def _plant(run_dir: Path, **record) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / run_lock.LOCK
    path.write_text(json.dumps({"since": "2026-12-07 09:00:00 +0000", "job_id": None, "restart": 0, **record}))
    return path


def _holds_me(path: Path) -> bool:
    record = json.loads(path.read_text())
    return (record["host"], record["pid"]) == (HOST, os.getpid())


def test_a_free_folder_is_locked_and_released(tmp_path):
    held = run_lock.acquire(tmp_path / "run", DistEnv())
    assert _holds_me(held.path) and held.path == tmp_path / "run" / "run.lock"
    with pytest.raises(run_lock.FolderInUse):  # this very process counts as alive
        run_lock.acquire(tmp_path / "run", DistEnv())
    run_lock.release(held)
    assert not held.path.exists()


def test_a_stale_lock_of_a_dead_pid_on_this_host_is_taken_over(tmp_path, capsys):
    dead = _dead_pid()
    path = _plant(tmp_path, host=HOST, pid=dead)
    held = run_lock.acquire(tmp_path, DistEnv())
    assert _holds_me(path)
    out = capsys.readouterr().out
    assert f"took over {path} from pid {dead} on {HOST}" in out and "no longer running" in out
    run_lock.release(held)
    assert not path.exists() and sorted(p.name for p in tmp_path.iterdir()) == []  # nothing moved aside is left


def test_a_pid_given_to_another_process_since_is_stale(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = _plant(tmp_path, host=HOST, pid=live.pid, started=1)  # another start: the pid was reused
        run_lock.release(run_lock.acquire(tmp_path, DistEnv()))
        assert not path.exists()
        _plant(tmp_path, host=HOST, pid=live.pid, started=run_lock._start_ticks(live.pid))
        with pytest.raises(run_lock.FolderInUse, match=f"in use by pid {live.pid} on {HOST}"):
            run_lock.acquire(tmp_path, DistEnv())
    finally:
        live.kill()
        live.wait()


def test_a_lock_from_another_host_is_refused_with_how_to_remove_it(tmp_path):
    path = _plant(tmp_path, host="gpu-node-17", pid=4242, job_id="900", restart=0)
    before = path.read_text()
    for env in (DistEnv(), DistEnv(job_id="901", restart_count=3), DistEnv(job_id="900", restart_count=0)):
        with pytest.raises(run_lock.FolderInUse) as info:
            run_lock.acquire(tmp_path, env)
        line = str(info.value)
        assert "\n" not in line and line.startswith(f"run folder {tmp_path} is in use by pid 4242 on gpu-node-17, ")
        assert "Slurm job 900" in line and "another output_dir" in line
        assert "cannot check a pid on gpu-node-17" in line and f"rm {path}" in line
    assert path.read_text() == before  # a refusal leaves the holder's lock alone


def test_a_requeue_of_the_same_job_takes_over_its_earlier_attempts_lock_from_another_host(tmp_path, capsys):
    path = _plant(tmp_path, host="gpu-node-17", pid=4242, job_id="900", restart=1)
    held = run_lock.acquire(tmp_path, DistEnv(job_id="900", restart_count=2))
    assert _holds_me(path) and json.loads(path.read_text())["restart"] == 2
    assert "an earlier attempt (restart 1) of this Slurm job" in capsys.readouterr().out
    run_lock.release(held)
    assert not path.exists()


def test_an_unreadable_lock_is_refused_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(run_lock, "WRITE_GRACE_S", 0.2)
    path = tmp_path / "run.lock"
    path.write_text("")  # a start that died between its create and its write
    with pytest.raises(run_lock.FolderInUse) as info:
        run_lock.acquire(tmp_path, DistEnv())
    assert "whose holder cannot be read" in str(info.value) and f"(rm {path})" in str(info.value)


def test_release_leaves_a_lock_taken_over_from_us(tmp_path):
    held = run_lock.acquire(tmp_path, DistEnv())
    path = _plant(tmp_path, host="gpu-node-17", pid=4242)
    run_lock.release(held)
    assert path.exists()


# -- real runs --------------------------------------------------------------------------------------------

LONG = ("max_steps=100000", "sched.epochs=100000", "checkpoint.every_steps=50", "log_every=1")


def _train(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "swat_dist", "train", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1", **env),
                            stdout=log.open("w"), stderr=subprocess.STDOUT)  # fmt: skip


def _steps(run_dir: Path) -> list[int]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["step"] for x in lines if "train/loss" in json.loads(x)]


def _train_lines(run_dir: Path) -> list[str]:
    return [x for x in (run_dir / "metrics.jsonl").read_text().splitlines() if "train/loss" in x]


def _wait_for(check, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.mark.slow
def test_a_second_run_into_the_same_folder_is_refused_on_every_rank_and_the_first_goes_on(tmp_path):
    out = tmp_path / "run"
    first = _train(overrides(out, "data.batch_size=32", *LONG), tmp_path / "first.log")
    try:
        logged = lambda: (out / "metrics.jsonl").is_file() or first.poll() is not None  # noqa: E731
        _wait_for(logged, 120, "the first run never logged")
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        # the second: 2 ranks under torchrun, the same folder; all of it must end, quickly and non-zero
        second = torchrun(overrides(out, *LONG), tmp_path / "second.log")
        try:
            assert second.wait(timeout=120) != 0
        finally:
            if second.poll() is None:
                kill_tree(second)  # its ranks run in sessions of their own
        log = (tmp_path / "second.log").read_text()
        errors = [ln for ln in log.splitlines() if "swat-dist train: error:" in ln]
        assert errors == [
            f"swat-dist train: error: run folder {out} is in use by pid {first.pid} on {HOST}, "
            + errors[0].split(f"on {HOST}, ", 1)[1]
        ], log[-3000:]
        assert "give this run another output_dir" in errors[0] and "rm " not in errors[0]  # this host: no rm hint
        assert first.poll() is None, "the first run must go on"
        seen = len(_steps(out))
        _wait_for(lambda: len(_steps(out)) > seen + 2, 60, "the first run stopped training")
    finally:
        first.send_signal(signal.SIGINT)  # Ctrl-C: one checkpoint at the next step, then exit 130
        code = first.wait(timeout=120)
    assert code == 128 + signal.SIGINT, (tmp_path / "first.log").read_text()[-3000:]
    steps = _steps(out)
    assert steps == list(range(1, len(steps) + 1)), "each step logged once, by one run"
    tag = latest_tag(out / "checkpoints")
    assert tag == f"step_{steps[-1]:08d}" and problem(out / "checkpoints" / tag, hashes=True) is None
    assert not (out / "run.lock").exists()


@pytest.mark.slow
def test_a_requeue_takes_over_its_own_lock_and_resumes(tmp_path):
    out = tmp_path / "run"
    args = overrides(out, "data.batch_size=32", "checkpoint.every_steps=4")
    job = {"SLURM_JOB_ID": "777", "SLURM_RESTART_COUNT": "0"}
    first = _train([*args, "max_steps=4"], tmp_path / "first.log", **job)
    assert first.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()[-3000:]
    assert not (out / "run.lock").exists()
    before = _train_lines(out)  # with timings, which differ from run to run: a fresh start would rewrite them
    # the attempt was killed on its node before it could remove its lock; Slurm requeues the job elsewhere
    _plant(out, host="gpu-node-17", pid=4242, job_id="777", restart=0)
    again = _train([*args, "max_steps=8"], tmp_path / "again.log", SLURM_JOB_ID="777", SLURM_RESTART_COUNT="1")
    assert again.wait(timeout=300) == 0, (tmp_path / "again.log").read_text()[-3000:]
    log = (tmp_path / "again.log").read_text()
    assert f"took over {out / 'run.lock'} from pid 4242 on gpu-node-17, Slurm job 777" in log
    assert _train_lines(out)[:4] == before  # resumed at step 4, not started afresh
    assert _steps(out) == list(range(1, 9)) and json.loads((out / "summary.json").read_text())["steps"] == 8
    assert latest_tag(out / "checkpoints") == "step_00000008" and not (out / "run.lock").exists()
