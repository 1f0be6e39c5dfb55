"""Running a resolved sweep (:mod:`.sweep`): the MLflow parent run, then ONE Slurm array of the elements
left to run, or (no Slurm) the local executor running them one after another, with every job recorded
where ``jobs`` and ``cancel`` look (each element's ``slurm/jobs.jsonl``, the sweep's manifest).

Order matters: the manifest (with the parent run id) is written before anything is queued, because each
element's tracker reads it when the job starts; the array ids are added once sbatch answers.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from . import jobs
from .submit import JobFailed, array_sbatch_script, log_paths, sbatch_script, submit, submit_array, wait
from .sweep import Element, SweepPlan, describe, write_manifest
from .sweep_parent import end_parent, open_parent


def array_plan(sweep: SweepPlan) -> Any:
    """The array's own plan: one element's layout, the sweep's ``slurm/`` folder and a job name of its own."""
    first = sweep.todo[0].plan
    return dataclasses.replace(first, run_dir=sweep.sweep_dir, folder=sweep.sweep_dir / "slurm",
                               job_name=f"swat-sweep-{sweep.name}")  # fmt: skip


def dry_run(sweep: SweepPlan) -> str:
    """The grid, each element's overrides, and what would be queued (the sbatch script, ``--array`` line and all)."""
    todo, executor = sweep.todo, sweep.elements[0].plan.executor
    out = [describe(sweep)]
    if not todo:
        out.append("# every element has finished: nothing to submit")
    elif executor == "local":
        out.append(f"# executor local: the {len(todo)} element(s) left run here one after another")
    elif len(todo) == 1:  # submitit submits a single function as a plain job, not an array
        out += ["# one element left: a plain Slurm job", sbatch_script(todo[0].plan)]
    else:
        out += [f"# one Slurm array of {len(todo)} element(s)", array_sbatch_script(array_plan(sweep), len(todo),
                                                                                   sweep.max_parallel)]  # fmt: skip
    return "\n".join(out)


def _record(e: Element, job: Any) -> None:
    p = e.plan
    jobs.record(p.run_dir, job.job_id, executor=p.executor, cluster=p.profile.name, nodes=p.nodes,
                tasks_per_node=p.tasks_per_node, folder=str(log_paths(job)[0].parent), sweep=e.name)  # fmt: skip


def run_sweep(sweep: SweepPlan, wait_for_it: bool) -> int:
    """Submit (or run) the elements left; print where to look. 1 when an element failed (local / --wait)."""
    todo = sweep.todo
    skipped = len(sweep.elements) - len(todo)
    print(f"sweep {sweep.name}: {len(sweep.elements)} element(s), {skipped} finished before (skipped), "
          f"{len(todo)} to run; folder {sweep.sweep_dir}")  # fmt: skip
    if not todo:
        print(f"compare: swat-dist compare --sweep {sweep.sweep_dir} --out {sweep.sweep_dir / 'compare'}")
        return 0
    tracking = open_parent(sweep)
    if tracking is not None:
        print(f"MLflow parent run {tracking['parent_run_id']} (experiment {tracking['experiment']!r}) in "
              f"{tracking['uri']}")  # fmt: skip
    write_manifest(sweep, tracking, [])
    if todo[0].plan.executor == "local":
        failed = _run_locally(sweep, tracking)
    else:
        failed = _submit_array(sweep, tracking, wait_for_it)
    for line in failed:
        print(f"swat-dist sweep: {line}", file=sys.stderr)
    print(f"monitor: swat-dist jobs {sweep.sweep_dir}    cancel: swat-dist cancel {sweep.sweep_dir}\n"
          f"compare: swat-dist compare --sweep {sweep.sweep_dir} --out {sweep.sweep_dir / 'compare'}")  # fmt: skip
    return 1 if failed else 0


def _run_locally(sweep: SweepPlan, tracking: dict[str, str] | None) -> list[str]:
    """One element at a time on this machine (each as ``submit`` would run it); a failure does not stop the rest."""
    failed: list[str] = []
    write_manifest(sweep, tracking, [], driver_pid=os.getpid())  # `cancel` stops us before the element we run
    # `cancel`'s SIGTERM as an exception, so that the finally below forgets our pid (it may be reused later)
    before = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        for i, e in enumerate(sweep.todo):
            job = submit(e.plan)
            _record(e, job)
            write_manifest(sweep, tracking, [{"job_id": job.job_id, "executor": "local", "elements": [e.name],
                                              "submitted": time.strftime("%Y-%m-%dT%H:%M:%S")}])  # fmt: skip
            where = f"[{i + 1}/{len(sweep.todo)}] {e.name}"
            print(f"{where}: local job {job.job_id}; log {log_paths(job)[0]}", flush=True)
            try:
                summary = wait(job)
            except JobFailed as err:
                failed.append(f"{e.name}: {err}")
                continue
            final = {k: round(v, 2) for k, v in (summary.get("final") or {}).items() if k.endswith(("top1", "mIoU"))}
            print(f"{where}: {summary.get('steps')} steps, final {final}", flush=True)
    finally:  # also when interrupted: the next `cancel` must not signal a pid that is no longer ours
        write_manifest(sweep, tracking, [], driver_pid=None)
        signal.signal(signal.SIGTERM, before)  # the process goes on (a test, a notebook): as it was
    end_parent(sweep, tracking, failed)
    return failed


def _submit_array(sweep: SweepPlan, tracking: dict[str, str] | None, wait_for_it: bool) -> list[str]:
    todo = sweep.todo
    handles = submit_array(array_plan(sweep), [e.plan for e in todo], sweep.max_parallel)
    for e, job in zip(todo, handles):
        _record(e, job)
    array_id = str(handles[0].job_id).split("_")[0]
    write_manifest(sweep, tracking, [{"job_id": array_id, "executor": "slurm", "elements": [e.name for e in todo],
                                      "submitted": time.strftime("%Y-%m-%dT%H:%M:%S")}])  # fmt: skip
    throttle = f", at most {sweep.max_parallel} at once" if sweep.max_parallel else ""
    print(f"submitted array {array_id} ({len(todo)} element(s){throttle})")
    for e, job in zip(todo, handles):
        print(f"  {job.job_id}  {e.name}  {Path(log_paths(job)[0])}")
    if not wait_for_it:
        return []
    failed = []
    for e, job in zip(todo, handles):
        try:
            wait(job)
        except JobFailed as err:
            failed.append(f"{e.name}: {err}")
    end_parent(sweep, tracking, failed)
    return failed
