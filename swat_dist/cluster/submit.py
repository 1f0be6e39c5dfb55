"""The submitit seam (the only submitit importer): build the executor from a :class:`Plan`, submit the
:class:`TrainJob`, and inside the job turn a stop signal into a collective save plus a requeue.

Preemption, step by step (USERS.md 7-8: why others get it wrong):

1. sbatch asks Slurm for ``--signal=USR2@LEAD``; submitit installs its requeue handler on that signal when
   each task starts. :class:`TrainJob` replaces it with :mod:`swat_dist.train.preempt`'s flag setter and
   keeps submitit's handler.
2. On the signal every rank's trainer learns of it through its per-micro-batch all-reduce, finishes the
   optimizer step, writes one collective checkpoint and returns ``{"stopped": True}``.
3. Rank 0 then calls submitit's handler, which calls :meth:`TrainJob.checkpoint` (this same job: it
   resumes with ``checkpoint.resume=auto``), re-pickles it, runs ``scontrol requeue`` and exits. The other
   ranks wait to be ended by Slurm, so no task writes a result for the interrupted attempt.
4. The requeued job (same id, same run dir) resumes from that checkpoint. After ``max_requeues`` of these
   requeues (counted in the job's pickle; administrator requeues do not count) the job stops with an error
   instead, its checkpoint intact.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import submitit

from ..dist import DistEnv, port_from_job, read_env
from ..train import preempt
from ..train.checkpoint_paths import resolve
from .container import python_command, srun_args
from .profile import Plan
from .sweep_parent import end_parent_when_all_done

REQUEUE_WAIT_S = 300  # how long ranks > 0 wait for Slurm to end them after rank 0 requeued the job


class JobStopped(RuntimeError):
    """A stop signal ended the job and it was not requeued (bound reached, or no Slurm to requeue)."""


class TrainJob(submitit.helpers.Checkpointable):
    """One task of a training job: ``swat-dist train`` as a picklable callable (the same in every task)."""

    def __init__(self, config_files: list[str], overrides: list[str], stop_signal: str, max_requeues: int) -> None:
        self.config_files, self.overrides = config_files, overrides
        self.stop_signal, self.max_requeues = stop_signal, max_requeues
        self.requeues = 0  # our own preemption requeues: carried in the pickle checkpoint() writes

    def __setstate__(self, state: dict[str, Any]) -> None:
        # The first code of ours a job task runs (submitit unpickles the job, then installs its own handler,
        # then calls it): a stop signal from here on sets the flag, and the trainer saves at its first step
        # boundary. Before it (interpreter start, submitit's import: well under a second) the signal's default
        # action still ends the task.
        self.__dict__.update({"requeues": 0, **state})
        with contextlib.suppress(ValueError):  # signal handlers can only be set in the main thread
            preempt.install(self.stop_signal)

    def __call__(self) -> dict[str, Any]:
        signum = preempt.install(self.stop_signal)  # after submitit installed its own: we keep it to chain
        env = _dist_env()
        from ..config import derived, load_config
        from ..train.run import run  # deepspeed and the model stack load here, inside the job only

        cfg = load_config(self.config_files, self.overrides)
        if env.is_main:  # which attempt this is and where it starts: the first thing to look for in a log
            try:  # sizes only here (stat calls); run() verifies the hashes and picks the checkpoint for all ranks
                latest = resolve(Path(derived(cfg, env.world_size)["output_dir"]), "auto")
                start = f"resuming from {latest.name}" if latest is not None else "starting"
            except ValueError as err:  # raising here would leave the other ranks waiting in run()'s rendezvous
                start = f"cannot resume ({err}); every rank stops in run()"
            print(f"[swat-dist] job {env.job_id} attempt {env.restart_count + 1}: {start}", flush=True)
        summary = run(cfg, env)
        if not summary.get("stopped"):
            if env.is_main and cfg.tracking.backend == "mlflow" and summary.get("run_dir"):
                end_parent_when_all_done(cfg, Path(summary["run_dir"]))
            return summary
        return self._requeue(env, signum, int(summary["steps"]))

    def _requeue(self, env: DistEnv, signum: int, step: int) -> dict[str, Any]:
        name = signal.Signals(preempt.received() or signum).name
        where = f"stopped by {name} at step {step} after a checkpoint"
        if env.launcher != "slurm":
            raise JobStopped(f"{where}; the local executor does not requeue: submit again to resume")
        # Counted by us, not SLURM_RESTART_COUNT: an administrator's `scontrol requeue` (or a node failure)
        # restarts the job from the last pickle without passing here, and does not use up max_requeues.
        if self.requeues >= self.max_requeues:
            raise JobStopped(
                f"{where}; not requeued: the job was already requeued {self.requeues} times "
                f"(max_requeues {self.max_requeues} in the cluster profile); submit again to resume"
            )
        if env.rank != 0:
            time.sleep(REQUEUE_WAIT_S)  # Slurm ends this task when rank 0's requeue takes effect
            raise JobStopped(f"{where}; rank 0 did not requeue the job within {REQUEUE_WAIT_S} s")
        handler = preempt.previous(signum)
        self.requeues += 1  # before the handler: submitit's checkpoint() pickles this job for the next attempt
        print(f"[swat-dist] {where}: requeueing (restart {self.requeues} of at most {self.max_requeues})")
        sys.stdout.flush()
        if callable(handler):
            handler(signum, None)  # submitit: checkpoint() -> re-pickle -> scontrol requeue -> sys.exit
        raise JobStopped(f"{where}; submitit's requeue handler did not take over ({handler!r})")


def _dist_env() -> DistEnv:
    """Slurm tasks are read by dist.read_env from SLURM_*; the local executor has its own variables, which
    we export under torchrun's names so that read_env (the one reader) sees the same layout."""
    job = submitit.JobEnvironment()
    if job.cluster != "slurm":
        os.environ.update(
            RANK=str(job.global_rank), LOCAL_RANK=str(job.local_rank), WORLD_SIZE=str(job.num_tasks),
            LOCAL_WORLD_SIZE=str(job.num_tasks // max(job.num_nodes, 1)), MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port_from_job(str(job.job_id))),
        )  # fmt: skip
    return read_env()


def slurm_available() -> bool:
    return submitit.SlurmExecutor.affinity() > 0


def _check_signal(plan: Plan) -> None:
    # submitit reads SUBMITIT_PREEMPT_SIGNAL once, at import: commands.py sets it before importing us.
    have = submitit.JobEnvironment._usr_sig()
    if have != preempt.signal_number(plan.profile.signal):
        raise ValueError(
            f"{plan.profile.source}: signal {plan.profile.signal} but submitit was imported with "
            f"{signal.Signals(have).name} (set SUBMITIT_PREEMPT_SIGNAL before importing submitit)"
        )


def slurm_parameters(plan: Plan) -> dict[str, Any]:
    """The resolved sbatch parameters, in submitit's Slurm names (what --dry-run prints)."""
    p = plan.profile
    params: dict[str, Any] = dict(
        job_name=plan.job_name, partition=p.partition, time=plan.time_min, nodes=plan.nodes,
        ntasks_per_node=plan.tasks_per_node, signal_delay_s=p.signal_lead_s,
    )  # fmt: skip
    if plan.gpus_per_node:
        params["gpus_per_node"] = plan.gpus_per_node
    optional = dict(account=p.account, qos=p.qos, constraint=p.constraint, cpus_per_task=p.cpus_per_task)
    params.update({k: v for k, v in optional.items() if v})
    if p.mem_per_task_gb:
        params["mem"] = f"{int(p.mem_per_task_gb * plan.tasks_per_node * 1024)}M"  # sbatch --mem is per node
    env = {"SUBMITIT_PREEMPT_SIGNAL": p.signal.upper().removeprefix("SIG"), **p.env}
    params["setup"] = [*p.setup, *(f"export {k}={shlex.quote(str(v))}" for k, v in env.items())]
    # open-mode=append: a requeued job appends to its logs instead of truncating the attempt that failed
    params["additional_parameters"] = {"open-mode": "append", **{k.replace("_", "-"): v for k, v in p.sbatch.items()}}
    if p.container is not None and srun_args(p.container, plan.run_dir, plan.config_files):
        params["srun_args"] = srun_args(p.container, plan.run_dir, plan.config_files)
    return params


def task_python(plan: Plan) -> str:
    """The command that runs each task's Python: this interpreter, or the image's (profile ``container:``)."""
    c = plan.profile.container
    return shlex.quote(sys.executable) if c is None else python_command(c, plan.run_dir, plan.config_files,
                                                                        gpus=plan.gpus_per_node > 0)  # fmt: skip


def sbatch_script(plan: Plan) -> str:
    """The batch script submitit writes for this plan (rendered by submitit itself, so it cannot drift)."""
    from submitit.slurm import slurm as submitit_slurm

    folder = plan.folder / "%j"
    command = " ".join([task_python(plan), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return submitit_slurm._make_sbatch_string(command=command, folder=folder, **slurm_parameters(plan))


def make_executor(plan: Plan) -> submitit.AutoExecutor:
    _check_signal(plan)
    folder = plan.folder / "%j"  # one folder per job: scripts, pickles and logs of every attempt
    if plan.executor == "local":
        ex = submitit.AutoExecutor(folder=folder, cluster="local")
        os.environ.update(plan.profile.env)  # the local job is our child: it inherits our environment
        ex.update_parameters(timeout_min=plan.time_min, tasks_per_node=plan.tasks_per_node, nodes=1)
        return ex
    ex = submitit.AutoExecutor(
        folder=folder, cluster="slurm", slurm_max_num_timeout=plan.profile.max_requeues, slurm_python=task_python(plan)
    )
    ex.update_parameters(**{f"slurm_{k}": v for k, v in slurm_parameters(plan).items()})
    return ex


def submit(plan: Plan) -> submitit.Job:
    """Submit the plan's job; return submitit's handle (``.job_id``, ``.result()``, ``.paths``).

    When sbatch refuses (``sbatch`` exists but Slurm is not configured: no slurm.conf, no reachable
    controller), a one-line ValueError with sbatch's last line, and what submitit left in the run's
    ``slurm/`` folder for the job that never was (its pickle, its batch script) is removed.
    """
    created = [d for d in (plan.run_dir, plan.folder) if not d.exists()]
    before = set(plan.folder.iterdir()) if plan.folder.is_dir() else set()
    executor = make_executor(plan)
    job = TrainJob(plan.config_files, plan.overrides, plan.profile.signal, plan.profile.max_requeues)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):  # submitit prints sbatch's stderr, then raises it
            return executor.submit(job)
    except (submitit.core.utils.FailedJobError, FileNotFoundError) as err:  # sbatch failed, or is not there
        if isinstance(err, FileNotFoundError) and err.filename != "sbatch":
            raise  # a file of ours went missing after sbatch ran: the job may exist; keep what is there
        for leftover in set(plan.folder.iterdir()) - before if plan.folder.is_dir() else set():
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        for folder in reversed(created):  # the slurm/ folder, then the run folder, when we made them
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty
        lines = [ln.strip() for ln in (str(err) or printed.getvalue()).splitlines() if ln.strip()]
        raise ValueError(
            f"{plan.executor} executor: sbatch did not submit the job ({lines[-1] if lines else type(err).__name__}); "
            "is Slurm configured on this machine (slurm.conf, a reachable slurmctld)? Nothing was submitted"
        ) from None


def log_paths(job: submitit.Job) -> tuple[Path, Path]:
    return Path(job.paths.stdout), Path(job.paths.stderr)


class JobFailed(RuntimeError):
    """The job ended without a summary; the message names its state, its error and its log."""


def wait(job: submitit.Job, timeout_s: float | None = None, poll_s: float = 2.0) -> dict[str, Any]:
    """Wait for the job's summary, asking Slurm for its state every ``poll_s`` seconds.

    submitit's own wait checks the result file every second but asks Slurm at most every 10 minutes
    once a job is old, so a job killed without writing a result (OOM, node failure, scancel) would keep
    a caller waiting that long; polling sacct costs one short call per ``poll_s``.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not job.done(force_check=True):
        if deadline is not None and time.monotonic() > deadline:
            raise JobFailed(f"job {job.job_id} did not finish within {timeout_s:.0f} s (state {job.state})")
        time.sleep(poll_s)
    try:
        return job.results()[0]  # every task returns the summary; rank 0 speaks for the job
    except Exception as err:  # submitit's FailedJobError / UncompletedJobError: keep the first useful lines
        errlog = log_paths(job)[1]
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        # a Python exception's last line ("pkg.mod.SomeError: what"), else submitit's own first line
        raised = [ln for ln in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Stopped|Interrupt)\b", ln)]
        cause = raised[-1] if raised else (lines[0] if lines else type(err).__name__)
        raise JobFailed(f"job {job.job_id} failed ({job.state}): {cause}; log: {errlog}") from err


# -- job arrays (swat-dist sweep) ----------------------------------------------------------------------


def array_parameters(plan: Plan, count: int, max_parallel: int | None) -> dict[str, Any]:
    """:func:`slurm_parameters` of one element plus the array throttle (``--array=0-N%K``)."""
    return {**slurm_parameters(plan), "array_parallelism": min(max_parallel or count, count)}


def array_sbatch_script(plan: Plan, count: int, max_parallel: int | None) -> str:
    """The batch script of a ``count``-element array (submitit's own rendering, its ``--array`` line included).

    ``plan`` is the array's: its ``folder`` (the sweep's ``slurm/``) and job name; the rest is one element's."""
    from submitit.slurm import slurm as submitit_slurm

    folder = plan.folder / "%j"  # submitit turns %j into %A_%a for an array: one folder per element
    command = " ".join([task_python(plan), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    params = array_parameters(plan, count, max_parallel)
    return submitit_slurm._make_sbatch_string(command=command, folder=folder, map_count=count, **params)


def submit_array(plan: Plan, elements: list[Plan], max_parallel: int | None) -> list[submitit.Job]:
    """Submit ``elements`` (same layout, each its own run dir and overrides) as ONE Slurm array; one handle
    per element, in order (ids ``ARRAY_i``). ``plan``: the array's folder and job name (see above).

    Every element is a :class:`TrainJob`: requeue on preemption works per element (``scontrol requeue
    ARRAY_i``), and one element's preemption leaves the others alone. A refused sbatch: a one-line ValueError,
    nothing queued, and this call's leftovers removed from the sweep's ``slurm/`` folder.
    """
    if plan.executor != "slurm":
        raise ValueError("a job array needs Slurm; the local executor runs the elements one after another")
    before = set(plan.folder.iterdir()) if plan.folder.is_dir() else set()
    executor = make_executor(plan)
    if max_parallel:
        executor.update_parameters(slurm_array_parallelism=max_parallel)
    fns = [TrainJob(p.config_files, p.overrides, p.profile.signal, p.profile.max_requeues) for p in elements]
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):
            return executor.submit_array(fns)
    except (submitit.core.utils.FailedJobError, FileNotFoundError) as err:
        if isinstance(err, FileNotFoundError) and err.filename != "sbatch":
            raise
        for leftover in set(plan.folder.iterdir()) - before if plan.folder.is_dir() else set():
            shutil.rmtree(leftover) if leftover.is_dir() and not leftover.is_symlink() else leftover.unlink()
        lines = [ln.strip() for ln in (str(err) or printed.getvalue()).splitlines() if ln.strip()]
        raise ValueError(
            f"sbatch did not submit the array ({lines[-1] if lines else type(err).__name__}); "
            "is Slurm configured on this machine (slurm.conf, a reachable slurmctld)? Nothing was submitted"
        ) from None
