"""Where this process sits in the job: the ONLY reader of RANK / LOCAL_RANK / WORLD_SIZE / SLURM_* variables
(and of CUDA_VISIBLE_DEVICES, for whether GPUs were given).

Precedence: a torchrun/deepspeed launcher (``RANK`` and ``WORLD_SIZE`` set) wins, because under Slurm
``srun torchrun ...`` the Slurm task is the node, not the rank; else Slurm's one-task-per-GPU layout
(``SLURM_PROCID`` ...); else one process. Pure: no torch import, unit-tested with fake environ dicts.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
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
    # The variable that says this task was given GPUs (``SLURM_JOB_GPUS=0,1``), or None: a GPU allocation
    # where CUDA sees no device is an error (:func:`cuda_index`), not a silent CPU run.
    gpus_given: str | None = None
    # torchrun's: the file its summary reads a failed worker's message from, and which restart this is
    error_file: str | None = None
    elastic_attempt: int = 0

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


# Set by Slurm for a job or step with GPUs (gres), or by the user/launcher for CUDA itself.
_GPU_VARIABLES = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "SLURM_GPUS_ON_NODE", "CUDA_VISIBLE_DEVICES")


def _gpus_given(env: Mapping[str, str]) -> str | None:
    for key in _GPU_VARIABLES:
        value = env.get(key, "").strip()
        # CUDA_VISIBLE_DEVICES="" or "-1" hides every GPU on purpose; SLURM_GPUS_ON_NODE=0 gives none
        none = {"", "-1", "0"} if key == "SLURM_GPUS_ON_NODE" else {"", "-1"}
        if value not in none:
            return f"{key}={value}"
    return None


def cuda_index(env: DistEnv, visible: int, why_none: str) -> int | None:
    """The CUDA device of this process among the ``visible`` ones, or None (the CPU).

    One visible device: that one, whatever the local rank (``--gpus-per-task``, ``--gpu-bind``: each task
    sees only its own); several: the one of this local rank (one task sees the node's GPUs). A task that
    was given GPUs (``env.gpus_given``) but sees none is a one-line error ending in ``why_none`` (the
    driver requirement of this torch build): training on the CPU with gloo instead would be silent.
    """
    if visible == 0:
        if env.gpus_given:
            raise ValueError(f"{env.gpus_given} gives this task GPUs, but CUDA sees none: {why_none}")
        return None
    if visible == 1:
        return 0
    if env.local_rank >= visible:
        raise ValueError(
            f"local rank {env.local_rank} has no GPU: this task sees {visible} (one GPU per task, or all of a "
            f"node's GPUs for its {env.local_world_size} tasks)"
        )
    return env.local_rank


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
            gpus_given=_gpus_given(env),
            error_file=env.get("TORCHELASTIC_ERROR_FILE") or None,
            elastic_attempt=_int(env, "TORCHELASTIC_RESTART_COUNT", 0),
        )
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        per_node = env.get("SLURM_NTASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or "1"
        hosts = expand_nodelist(env.get("SLURM_JOB_NODELIST", "") or env.get("SLURM_NODELIST", ""))
        addr = env.get("MASTER_ADDR") or (hosts[0] if hosts else "127.0.0.1")
        nodes = _int(env, "SLURM_NNODES", 1)
        if not _resolvable(addr):
            if nodes > 1:  # 127.0.0.1 would leave the other nodes waiting at the rendezvous forever
                raise ValueError(
                    f"the master address {addr!r} (MASTER_ADDR, else the first node of SLURM_JOB_NODELIST) does "
                    f"not resolve on this node, and the job has {nodes} nodes: set MASTER_ADDR to an address "
                    "every node reaches (the cluster profile's env)"
                )
            addr = "127.0.0.1"  # one node: the loopback reaches every rank
        port = _int(env, "MASTER_PORT", port_from_job(job_id))
        return DistEnv(
            rank=_int(env, "SLURM_PROCID", 0),
            local_rank=_int(env, "SLURM_LOCALID", 0),
            world_size=_int(env, "SLURM_NTASKS", 1),
            local_world_size=tasks_per_node(per_node),
            node_rank=_int(env, "SLURM_NODEID", 0),
            num_nodes=nodes,
            master_addr=addr,
            master_port=port,
            job_id=job_id,
            restart_count=restarts,
            launcher="slurm",
            gpus_given=_gpus_given(env),
        )
    return DistEnv(
        master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
        master_port=_int(env, "MASTER_PORT", DEFAULT_PORT),
        job_id=job_id,
        restart_count=restarts,
        gpus_given=_gpus_given(env),
    )


def tell_launcher(env: DistEnv, text: str) -> None:
    """Under torchrun, write ``text`` to torchelastic's error file, so torchrun's failure summary shows our
    line instead of "To enable traceback see: ...". The format is the one torch's ``@record`` writes, less
    its ``py_callstack``: the summary would print that traceback instead of the line. Best effort."""
    if env.error_file:
        record = {"message": {"message": text, "extraInfo": {"timestamp": str(int(time.time()))}}}
        try:
            with open(env.error_file, "w") as f:
                f.write(json.dumps(record))
        except OSError:
            pass
