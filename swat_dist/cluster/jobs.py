"""A run's jobs: recorded at submission in ``RUN/slurm/jobs.jsonl``, listed and cancelled from there.

Slurm keeps a requeued job's id, so one record covers every attempt; ``sacct --duplicates`` shows each
attempt as a row (all but the last in state REQUEUED), which is where the requeue count comes from.
Only Slurm's command-line tools are used (no submitit, no torch), so this works on any login node.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..train.checkpoint_paths import latest_tag, step_of
from ..train.elastic import changes as elastic_changes

RECORDS = Path("slurm") / "jobs.jsonl"
FINISHED = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
    "FINISHED",
}  # FINISHED: a local job whose controller has exited


def record(run_dir: Path, job_id: str, **info: Any) -> None:
    path = run_dir / RECORDS
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(dict(job_id=str(job_id), submitted=time.strftime("%Y-%m-%dT%H:%M:%S"), **info)) + "\n")


def records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / RECORDS
    if not run_dir.is_dir():
        what = f"{run_dir} is a file, not a run folder" if run_dir.exists() else f"run folder {run_dir} does not exist"
        raise FileNotFoundError(f"{what} (give the run's output_dir)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no jobs recorded (was this run submitted with swat-dist submit?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class JobInfo:
    job_id: str
    state: str
    requeues: int
    exit_code: str
    stdout: str
    stderr: str


def _run(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return ""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False).stdout
    except subprocess.TimeoutExpired:  # a busy controller: report what we know instead of hanging
        return ""


def slurm_state(job_id: str) -> tuple[str, int, str]:
    """(state, requeue count, exit code) of a Slurm job, from sacct (all attempts) or squeue (pending)."""
    out = _run(["sacct", "-j", job_id, "--duplicates", "-X", "-n", "-P", "-o", "JobID,State,ExitCode"])
    rows = [line.split("|") for line in out.splitlines() if line.split("|")[0] == job_id]
    if rows:
        requeued = sum(1 for r in rows if r[1].startswith("REQUEUED") or r[1].startswith("PREEMPTED"))
        return rows[-1][1].split()[0], requeued, rows[-1][2]
    queued = _run(["squeue", "-h", "-j", job_id, "-o", "%T"]).strip()
    return (queued or "UNKNOWN"), 0, ""


def local_state(job_id: str) -> str:
    try:
        os.kill(int(job_id), 0)  # the local executor's job id is its controller's pid
    except (OSError, ValueError):
        return "FINISHED"
    return "RUNNING"


def job_infos(run_dir: Path) -> list[JobInfo]:
    infos = []
    for rec in records(run_dir):
        jid = rec["job_id"]
        if rec.get("executor") == "local":
            state, requeues, code = local_state(jid), 0, ""
        else:
            state, requeues, code = slurm_state(jid)
        folder = Path(rec.get("folder", run_dir / "slurm" / jid))
        out, err = (str(folder / f"{jid}_0_log.{ext}") for ext in ("out", "err"))  # submitit's names, task 0
        infos.append(JobInfo(jid, state, requeues, code, out, err))
    return infos


def last_step(run_dir: Path) -> int | None:
    """The newest step the run reached: the last logged step, else the latest checkpoint's."""
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        for line in reversed(metrics.read_text().splitlines()):
            if line.strip():
                return int(json.loads(line)["step"])
    tag = latest_tag(run_dir / "checkpoints")
    return step_of(tag) if tag else None


def render(run_dir: Path) -> str:
    infos = job_infos(run_dir)
    step = last_step(run_dir)
    lines = [f"run {run_dir}: last step {step if step is not None else '-'}"]
    lines += [f"world size changed at {change}" for change in elastic_changes(run_dir)]
    lines.append(f"{'JOB':>10}  {'STATE':<12} {'REQUEUES':>8}  {'EXIT':<6} LOG")
    for j in infos:
        lines.append(f"{j.job_id:>10}  {j.state:<12} {j.requeues:>8}  {j.exit_code or '-':<6} {j.stdout}")
        lines.append(f"{'':>10}  {'':<12} {'':>8}  {'':<6} {j.stderr}")
    return "\n".join(lines)


def cancel(run_dir: Path) -> list[str]:
    """Cancel the run's unfinished jobs; return their ids."""
    local = {r["job_id"] for r in records(run_dir) if r.get("executor") == "local"}
    done = []
    for j in job_infos(run_dir):
        if j.state in FINISHED:
            continue
        if j.job_id in local:  # the local executor's controller: SIGINT ends it and its tasks (submitit's own
            try:  # cancel; a SIGTERM is forwarded to the tasks, which submitit makes ignore it)
                os.kill(int(j.job_id), signal.SIGINT)
            except OSError:
                continue
        else:
            subprocess.run(["scancel", j.job_id], check=True, timeout=30)
        done.append(j.job_id)
    return done


# -- sweeps: every element's jobs, from the sweep folder -----------------------------------------------


def element_state(run_dir: Path) -> tuple[str, int, str | None]:
    """(state, requeues over every submission, job id) of one sweep element's latest job."""
    if not (run_dir / RECORDS).is_file():
        return ("FINISHED" if (run_dir / "summary.json").is_file() else "NOT SUBMITTED"), 0, None
    infos = job_infos(run_dir)
    return infos[-1].state, sum(j.requeues for j in infos), infos[-1].job_id


def render_sweep(sweep_dir: Path, elements: list[str]) -> str:
    """One line per element: its latest job's state, its requeues, the last step it reached."""
    width = max(len(e) for e in elements)
    lines = [f"sweep {sweep_dir}: {len(elements)} element(s)",
             f"{'ELEMENT':<{width}}  {'JOB':>12}  {'STATE':<13} {'REQUEUES':>8}  {'STEP':>6}  SUMMARY"]  # fmt: skip
    for name in elements:
        run_dir = sweep_dir / name
        state, requeues, job_id = element_state(run_dir)
        step = last_step(run_dir) if run_dir.is_dir() else None
        done = "yes" if (run_dir / "summary.json").is_file() else "-"
        lines.append(f"{name:<{width}}  {job_id or '-':>12}  {state:<13} {requeues:>8}  "
                     f"{step if step is not None else '-':>6}  {done}")  # fmt: skip
    return "\n".join(lines)


def cancel_sweep(sweep_dir: Path, elements: list[str], driver_pid: int | None) -> list[str]:
    """Cancel every unfinished element (``scancel ARRAY_i`` each: pending elements of an array included).

    ``driver_pid``: the ``swat-dist sweep`` process that runs local elements one after another; it is
    stopped first, or it would start the next element once the current one is cancelled."""
    stopped = []
    if driver_pid is not None and local_state(str(driver_pid)) == "RUNNING":
        os.kill(driver_pid, signal.SIGTERM)
        stopped.append(f"sweep driver {driver_pid}")
    return stopped + [jid for e in elements if (sweep_dir / e / RECORDS).is_file() for jid in cancel(sweep_dir / e)]
