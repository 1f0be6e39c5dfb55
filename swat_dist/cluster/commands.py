"""``swat-dist submit | sweep | jobs | cancel``: parsing and printing; the work lives in :mod:`.profile`,
:mod:`.submit` and :mod:`.jobs`. Submitting imports submitit and the config only: no GPU stack."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .profile import Plan


def _plan(args: argparse.Namespace) -> Plan:
    from ..config import load_config
    from .profile import load_profile, resolve

    profile = load_profile(args.cluster)
    # submitit reads its preemption signal from the environment once, when imported (below, not before)
    os.environ.setdefault("SUBMITIT_PREEMPT_SIGNAL", profile.signal.upper().removeprefix("SIG"))
    from .submit import slurm_available

    cfg = load_config(args.config, args.overrides)
    return resolve(
        cfg, args.config, args.overrides, profile, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
        slurm_available=slurm_available() or args.dry_run,  # a dry run shows the Slurm job anywhere
    )  # fmt: skip


def _submit(args: argparse.Namespace) -> int:
    from . import jobs
    from .submit import JobFailed, log_paths, sbatch_script, slurm_parameters, submit, wait

    plan = _plan(args)
    if args.dry_run:
        print(f"# executor: {plan.executor}; run dir: {plan.run_dir}; ranks: {plan.world_size}")
        print("# slurm parameters: " + json.dumps(slurm_parameters(plan), sort_keys=True))
        print(sbatch_script(plan))
        return 0
    job = submit(plan)
    out, err = log_paths(job)
    jobs.record(
        plan.run_dir, job.job_id, executor=plan.executor, cluster=plan.profile.name, nodes=plan.nodes,
        tasks_per_node=plan.tasks_per_node, folder=str(out.parent),
    )  # fmt: skip
    print(f"submitted job {job.job_id} ({plan.executor}, {plan.nodes} node(s) x {plan.tasks_per_node} task(s))")
    print(f"run dir: {plan.run_dir}\nlogs:    {out}\n         {err}")
    print(f"monitor: swat-dist jobs {plan.run_dir}    cancel: swat-dist cancel {plan.run_dir}")
    if args.wait or plan.executor == "local":  # a local job is our child: leaving would orphan it
        try:
            print(json.dumps(wait(job), indent=2))
        except JobFailed as err:
            print(f"swat-dist submit: {err}", file=sys.stderr)
            return 1
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from ..config import load_config
    from .profile import load_profile
    from .sweep import resolve_sweep

    profile = load_profile(args.cluster)
    os.environ.setdefault("SUBMITIT_PREEMPT_SIGNAL", profile.signal.upper().removeprefix("SIG"))  # as _plan
    from .submit import slurm_available
    from .sweep_submit import dry_run, run_sweep

    load_config(args.config, args.overrides)  # the base config's own errors first, without an element's name
    sweep = resolve_sweep(
        args.config, args.overrides, args.grid, profile, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
        max_parallel=args.max_parallel, slurm_available=slurm_available() or args.dry_run,
    )  # fmt: skip
    if args.dry_run:
        print(dry_run(sweep))
        return 0
    return run_sweep(sweep, args.wait)


def _jobs(args: argparse.Namespace) -> int:
    from . import jobs
    from .sweep import read_manifest

    if args.run_dir is None:  # no run: this user's swat jobs in the queue
        print(jobs._run(["squeue", "--me", "-o", "%.10i %.24j %.10T %.6D %R"]) or "no Slurm here")
        return 0
    manifest = read_manifest(Path(args.run_dir))
    if manifest is not None:  # a sweep folder: one line per element
        print(jobs.render_sweep(Path(args.run_dir), list(manifest["elements"])))
        return 0
    print(jobs.render(Path(args.run_dir)))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from . import jobs
    from .sweep import read_manifest

    manifest = read_manifest(Path(args.run_dir))
    if manifest is not None:
        done = jobs.cancel_sweep(Path(args.run_dir), list(manifest["elements"]), manifest.get("driver_pid"))
        print(f"cancelled {' '.join(done)}" if done else "no unfinished jobs")
        return 0
    cancelled = jobs.cancel(Path(args.run_dir))
    print(f"cancelled {' '.join(cancelled)}" if cancelled else "no unfinished jobs")
    return 0


def add_cluster_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("submit", help="submit a training run to Slurm (or run it here) through submitit")
    s.add_argument("-c", "--config", action="append", default=[], help="YAML overlay (repeatable)")
    s.add_argument("--cluster", required=True, help="a profile in launch/clusters/ (name) or a YAML path")
    s.add_argument("--nodes", type=int, help="nodes (default: the profile's)")
    s.add_argument("--gpus-per-node", type=int, help="GPUs per node = tasks per node (default: the profile's)")
    s.add_argument("--dry-run", action="store_true", help="print the Slurm parameters and sbatch script only")
    s.add_argument("--wait", action="store_true", help="wait for the job and print its summary")
    s.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. optim.lr=1e-3")
    s.set_defaults(func=_submit)

    w = sub.add_parser("sweep", help="a grid of runs (cartesian product of --grid) as one Slurm job array")
    w.add_argument("-c", "--config", action="append", default=[], help="YAML overlay (repeatable)")
    w.add_argument("--cluster", required=True, help="a profile in launch/clusters/ (name) or a YAML path")
    w.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a config key and its values (repeatable: the cartesian product is run)")  # fmt: skip
    w.add_argument("--nodes", type=int, help="nodes per element (default: the profile's)")
    w.add_argument("--gpus-per-node", type=int, help="GPUs per node = tasks per node (default: the profile's)")
    w.add_argument("--max-parallel", type=int, help="at most K elements at once (the array's %%K)")
    w.add_argument("--dry-run", action="store_true", help="print the grid, each element's overrides, the sbatch script")
    w.add_argument("--wait", action="store_true", help="wait for every element (local runs always wait)")
    w.add_argument("overrides", nargs="*", help="dotted key=value overrides for every element")
    w.set_defaults(func=_sweep)

    j = sub.add_parser("jobs", help="a run's Slurm jobs: state, requeues, last step, logs")
    j.add_argument("run_dir", nargs="?", help="the run folder, or a sweep's folder (default: your queued jobs)")
    j.set_defaults(func=_jobs)

    c = sub.add_parser("cancel", help="cancel a run's unfinished Slurm jobs")
    c.add_argument("run_dir", help="the run folder, or a sweep's folder (cancels every element)")
    c.set_defaults(func=_cancel)
