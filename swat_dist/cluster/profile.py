"""Cluster profiles (``launch/clusters/NAME.yaml``): WHERE a run goes, kept apart from WHAT it trains.

A profile names the Slurm partition, account, QoS, constraint, time limit, resources per task, extra
sbatch options, environment and the preemption policy (signal, lead time, requeue bound). :func:`resolve`
combines it with the command line (``--nodes``, ``--gpus-per-node``) and the training config into the
:class:`Plan` that is submitted, after checking everything that can be checked before submitting (a
``data.path`` in an object store included: its index is read): an error here costs nothing, one found by
Slurm or by the job costs a queue wait. No torch import.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from ..config import Config, check_runtime, derived, read_yaml_file
from ..tracking.describe import without_credentials
from ..train.checkpoint_paths import check_model
from ..train.checkpoint_paths import resolve as resolve_checkpoint
from ..train.elastic import relayout
from .container import Container
from .container import parse as parse_container

Executor = Literal["auto", "slurm", "local"]
CLUSTERS_DIR = Path(__file__).resolve().parents[2] / "launch" / "clusters"


@dataclass(frozen=True)
class ClusterProfile:
    name: str
    source: str  # the file it came from, for messages
    executor: Executor = "auto"  # auto: Slurm where `srun` exists, else submitit's local executor
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    time: str | int = "01:00:00"  # Slurm syntax (D-HH:MM:SS, HH:MM:SS, MM) or minutes
    nodes: int = 1
    gpus_per_node: int = 0  # 0: a CPU cluster (gloo), with tasks_per_node tasks per node
    tasks_per_node: int = 1  # CPU clusters only: on GPU clusters it is one task per GPU
    cpus_per_task: int | None = None
    mem_per_task_gb: float | None = None
    sbatch: dict[str, Any] = field(default_factory=dict)  # extra sbatch options, e.g. {exclusive: true}
    setup: list[str] = field(default_factory=list)  # shell lines before srun (module load, venv activation)
    env: dict[str, str] = field(default_factory=dict)  # exported to every task
    signal: str = "USR2"  # sent before the time limit / on preemption (NCCL owns USR1)
    signal_lead_s: int = 90
    max_requeues: int = 3  # requeues after a stop signal, counted by SLURM_RESTART_COUNT
    container: Container | None = None  # run each task in the image: apptainer or pyxis (container.py)


def known_profiles(directory: Path = CLUSTERS_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []


def load_profile(name: str, directory: Path | None = None) -> ClusterProfile:
    """The profile ``name`` from ``launch/clusters/`` (or ``$SWAT_CLUSTERS_DIR``), or a YAML file path."""
    folder = directory or Path(os.environ.get("SWAT_CLUSTERS_DIR") or CLUSTERS_DIR)
    path = Path(name) if name.endswith((".yaml", ".yml")) else folder / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(known_profiles(folder)) or "none"
        raise ValueError(f"--cluster: unknown cluster profile {name!r} (known in {folder}: {known})")
    raw = read_yaml_file(path) or {}  # a binary file or bad YAML: one line naming the file
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a cluster profile must be a mapping of settings")
    allowed = [f.name for f in fields(ClusterProfile) if f.name not in ("name", "source")]
    for key in raw:
        if key not in allowed:
            raise ValueError(f"{path}: unknown setting {key!r} (allowed: {', '.join(allowed)})")
    if "container" in raw:
        raw["container"] = parse_container(raw["container"], str(path))
    profile = ClusterProfile(name=path.stem, source=str(path), **raw)
    _check(profile)
    return profile


def _check(p: ClusterProfile) -> None:
    where = p.source
    if p.executor not in ("auto", "slurm", "local"):
        raise ValueError(f"{where}: executor must be auto, slurm or local, got {p.executor!r}")
    if p.executor != "local" and not p.partition:
        raise ValueError(f"{where}: partition is required (the Slurm partition to submit to)")
    for key in ("nodes", "tasks_per_node", "signal_lead_s"):
        if not isinstance(getattr(p, key), int) or getattr(p, key) < 1:
            raise ValueError(f"{where}: {key} must be an integer >= 1, got {getattr(p, key)!r}")
    for key in ("gpus_per_node", "max_requeues"):
        if not isinstance(getattr(p, key), int) or getattr(p, key) < 0:
            raise ValueError(f"{where}: {key} must be an integer >= 0, got {getattr(p, key)!r}")
    time_minutes(p.time, f"{where}: time")
    from ..train.preempt import signal_number  # signal names only; no torch

    signal_number(p.signal)


def time_minutes(value: str | int, what: str = "time") -> int:
    """Slurm's time syntax -> whole minutes (rounded up): ``90``, ``'1:30:00'``, ``'2-00:00:00'``."""
    if isinstance(value, int) and value > 0:
        return value
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(value).strip())
    if not m:
        raise ValueError(f"{what}: {value!r} is not a Slurm time (minutes, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = (int(x) if x else None for x in m.groups())
    if b is None:  # "MM" or "D-HH"
        seconds = (a or 0) * (3600 if days is not None else 60)
    elif c is None:  # "MM:SS" or "D-HH:MM"
        seconds = (a or 0) * 3600 + b * 60 if days is not None else (a or 0) * 60 + b
    else:
        seconds = (a or 0) * 3600 + b * 60 + c
    seconds += (days or 0) * 86400
    if seconds <= 0:
        raise ValueError(f"{what}: {value!r} must be longer than zero")
    return -(-seconds // 60)


@dataclass(frozen=True)
class Plan:
    """One job, resolved: what is submitted (or printed by ``--dry-run``)."""

    profile: ClusterProfile
    executor: Literal["slurm", "local"]
    nodes: int
    gpus_per_node: int
    tasks_per_node: int
    time_min: int
    run_dir: Path
    folder: Path  # submitit's folder: batch scripts, pickles, logs
    job_name: str
    config_files: list[str]
    overrides: list[str]

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node


def resolve(
    cfg: Config, files: list[str], overrides: list[str], profile: ClusterProfile, *,
    nodes: int | None, gpus_per_node: int | None, slurm_available: bool,
) -> Plan:  # fmt: skip
    """Combine config, profile and command line; raise ValueError naming the setting on any mismatch."""
    executor = profile.executor if profile.executor != "auto" else ("slurm" if slurm_available else "local")
    if executor == "local" and profile.container is not None:
        raise ValueError(f"{profile.source}: container needs Slurm (tasks enter the image through srun); no Slurm here")
    if executor == "slurm" and not slurm_available:
        raise ValueError(f"{profile.source}: executor slurm, but there is no srun/sbatch here (not a Slurm login node)")
    n = profile.nodes if nodes is None else nodes
    g = profile.gpus_per_node if gpus_per_node is None else gpus_per_node
    if n < 1:
        raise ValueError(f"--nodes must be >= 1, got {n}")
    if g < 0:
        raise ValueError(f"--gpus-per-node must be >= 0, got {g}")
    if executor == "local" and n != 1:
        raise ValueError(f"--nodes: the local executor (no Slurm here) runs on this machine only; got {n} nodes")
    tasks = g if g > 0 else profile.tasks_per_node  # one task per GPU: the layout dist.read_env expects
    world = n * tasks
    layout = f"--nodes {n} x {'--gpus-per-node ' + str(g) if g else 'tasks_per_node ' + str(tasks)} = {world} ranks"
    try:
        check_runtime(cfg, world, "cuda" if g > 0 else "cpu")
    except ValueError as err:
        raise ValueError(f"{layout}: {err}") from None
    run_dir = Path(derived(cfg, world)["output_dir"]).absolute()
    _check_resumable(run_dir, cfg, world, layout)
    _check_data(cfg, profile)  # last: the only check that may wait on the network
    # the job's cwd may differ from ours; the run dir must not
    overrides = [*map(_credentials_to_env, overrides), f"output_dir={run_dir}"]
    return Plan(
        profile=profile, executor=executor, nodes=n, gpus_per_node=g, tasks_per_node=tasks,
        time_min=time_minutes(profile.time, f"{profile.source}: time"), run_dir=run_dir, folder=run_dir / "slurm",
        job_name=f"swat-{cfg.run_name}", config_files=[str(Path(f).absolute()) for f in files], overrides=overrides,
    )  # fmt: skip


def _credentials_to_env(override: str) -> str:
    """``tracking.uri=http(s)://user:pw@host`` -> ``tracking.uri=http(s)://host``, the user and password moved
    to this process's MLFLOW_TRACKING_USERNAME / PASSWORD (:func:`~swat_dist.tracking.describe.without_credentials`).
    submitit pickles the overrides into ``RUN/slurm/`` and the dry run prints them; sbatch hands the job our
    environment (``--export=ALL``, Slurm's default; a profile that sets ``export`` must keep these two)."""
    key, _, value = override.partition("=")
    if key.strip() != "tracking.uri" or "@" not in value:
        return override
    return f"{key}={without_credentials(value.strip())}"


def _check_data(cfg: Config, profile: ClusterProfile) -> None:
    """``data.path: s3://bucket/prefix``: read its index now, as the job's loaders will, so that an unreachable
    endpoint, an unknown bucket, a refused key or a conversion that never wrote its index is one line here,
    not a failed job after a queue wait. The profile's ``env`` is laid over ours while it runs (an
    ``AWS_ENDPOINT_URL`` set there is the one the job uses). Cost: one small GET, or up to 5 s of retries
    where the endpoint does not answer; boto3 is imported only for such a path. A local path is left to the
    job (the login node may not see the compute nodes' disks)."""
    from ..data.sources.location import parse_location  # string work only

    where = parse_location(cfg.data.path or "")
    if isinstance(where, str):
        return
    from ..data.sources.index import read_index  # the object store's client, for an s3:// path only

    saved = {k: os.environ.get(k) for k in profile.env}
    os.environ.update({k: str(v) for k, v in profile.env.items()})
    try:
        read_index(where.url())
    except ValueError as err:
        raise ValueError(f"data.path: {err}") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _check_resumable(run_dir: Path, cfg: Config, world: int, layout: str) -> None:
    """resume=auto in a run dir whose checkpoint is another model's, or whose global batch ``world`` ranks
    cannot keep (:func:`~swat_dist.train.elastic.relayout`), would fail inside the job (after a queue
    wait): say it now. Another world size that keeps it is fine: the job re-derives micro-batch and
    accumulation and prints them."""
    if cfg.checkpoint.resume != "auto":
        return
    latest = resolve_checkpoint(run_dir, "auto")
    meta_path = latest / "meta.json" if latest is not None else None
    if latest is None or meta_path is None or not meta_path.is_file():
        return
    check_model(latest, cfg.model.name)
    meta = json.loads(meta_path.read_text())
    if isinstance(meta.get("world_size"), int) and meta["world_size"] != world:
        try:
            relayout(cfg, meta, world, latest)
        except ValueError as err:
            raise ValueError(f"{layout}, but {err}") from None
