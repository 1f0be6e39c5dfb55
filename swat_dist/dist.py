"""Where this process sits in the job: the ONLY reader of RANK / LOCAL_RANK / WORLD_SIZE / SLURM_* variables.

Precedence: a torchrun/deepspeed launcher (``RANK`` and ``WORLD_SIZE`` set) wins, because under Slurm
``srun torchrun ...`` the Slurm task is the node, not the rank; else Slurm's one-task-per-GPU layout
(``SLURM_PROCID`` ...); else one process. Pure: no torch import, unit-tested with fake environ dicts.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Launcher = Literal["single", "torchrun", "slurm"]
DEFAULT_PORT = 29500


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    node_rank: int = 0
    num_nodes: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_PORT
    job_id: str | None = None
    restart_count: int = 0
    launcher: Launcher = "single"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _int(environ: Mapping[str, str], key: str, default: int) -> int:
    value = environ.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {key}={value!r} is not an integer") from None


def expand_nodelist(nodelist: str) -> list[str]:
    """Slurm's compressed host list -> host names: ``gpu[001-002,007],cpu5`` -> gpu001 gpu002 gpu007 cpu5."""
    hosts: list[str] = []
    for prefix, ranges, plain in re.findall(r"([^,\[]+)\[([^\]]*)\]|([^,\[\]]+)", nodelist):
        if plain:
            hosts.append(plain)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            if not hi:
                hosts.append(prefix + lo)
                continue
            hosts += [prefix + str(i).zfill(len(lo)) for i in range(int(lo), int(hi) + 1)]
    return hosts


def tasks_per_node(value: str) -> int:
    """The first node's task count from ``SLURM_TASKS_PER_NODE`` (``4(x2),3`` -> 4)."""
    m = re.match(r"(\d+)", value)
    return int(m.group(1)) if m else 1


def _resolvable(host: str) -> bool:
    try:
        socket.gethostbyname(host)
        return True
    except OSError:
        return False


def port_from_job(job_id: str | None) -> int:
    """A port in 20000-29999 from the job id, so two jobs on one node rarely collide."""
    if not job_id or not job_id.split("_")[0].isdigit():
        return DEFAULT_PORT
    return 20000 + int(job_id.split("_")[0]) % 10000


def read_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """The distributed layout of this process, from the launcher's environment variables."""
    env = os.environ if environ is None else environ
    job_id = env.get("SLURM_JOB_ID")
    restarts = _int(env, "SLURM_RESTART_COUNT", 0)
    if "RANK" in env and "WORLD_SIZE" in env:
        world = _int(env, "WORLD_SIZE", 1)
        local_world = _int(env, "LOCAL_WORLD_SIZE", world)
        rank = _int(env, "RANK", 0)
        return DistEnv(
            rank=rank,
            local_rank=_int(env, "LOCAL_RANK", 0),
            world_size=world,
            local_world_size=local_world,
            node_rank=_int(env, "GROUP_RANK", rank // local_world),
            num_nodes=max(world // local_world, 1),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=_int(env, "MASTER_PORT", DEFAULT_PORT),
            job_id=job_id,
            restart_count=restarts,
            launcher="torchrun",
        )
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        per_node = env.get("SLURM_NTASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or "1"
        hosts = expand_nodelist(env.get("SLURM_JOB_NODELIST", "") or env.get("SLURM_NODELIST", ""))
        addr = env.get("MASTER_ADDR") or (hosts[0] if hosts else "127.0.0.1")
        if not _resolvable(addr):  # e.g. virtual Slurm nodes on one host (PLATFORM.md)
            addr = "127.0.0.1"
        port = _int(env, "MASTER_PORT", port_from_job(job_id))
        return DistEnv(
            rank=_int(env, "SLURM_PROCID", 0),
            local_rank=_int(env, "SLURM_LOCALID", 0),
            world_size=_int(env, "SLURM_NTASKS", 1),
            local_world_size=tasks_per_node(per_node),
            node_rank=_int(env, "SLURM_NODEID", 0),
            num_nodes=_int(env, "SLURM_NNODES", 1),
            master_addr=addr,
            master_port=port,
            job_id=job_id,
            restart_count=restarts,
            launcher="slurm",
        )
    return DistEnv(
        master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
        master_port=_int(env, "MASTER_PORT", DEFAULT_PORT),
        job_id=job_id,
        restart_count=restarts,
    )
