"""System metrics of one node (CPU, memory, and each GPU's utilisation and memory), sampled in a daemon
thread and logged under the node's id: ``system/node0/cpu_utilization_percentage`` and so on, as MLflow's
own system metrics are named, one prefix per node so that nodes do not overwrite each other.

Their step is the second since the run began (the store fills it in), so samples of a requeued job
continue the axis instead of restarting at 0. Cost: one psutil call and, on GPUs, one NVML query per
device every ``interval_s`` (milliseconds), off the training thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

SYSTEM_STEP = -1  # placeholder step: the store replaces it with seconds since the run's start


def node_id(node_rank: int) -> str:
    return f"node{node_rank}"


def sample(node: str) -> dict[str, float]:
    """One reading of this node; keys missing where a probe is unavailable (no GPU, no NVML)."""
    import psutil  # deepspeed depends on it, so it is always installed with us

    mem = psutil.virtual_memory()
    out = {
        "cpu_utilization_percentage": psutil.cpu_percent(interval=None),  # since the previous call
        "system_memory_usage_percentage": mem.percent,
        "system_memory_usage_megabytes": (mem.total - mem.available) / 2**20,
    }
    out |= _gpus()
    return {f"system/{node}/{k}": float(v) for k, v in out.items()}


def _gpus() -> dict[str, float]:
    import torch

    if not torch.cuda.is_available():
        return {}
    out = {}
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)  # the whole device, every process on it
        out[f"gpu_{i}_memory_usage_megabytes"] = (total - free) / 2**20
        out[f"gpu_{i}_memory_usage_percentage"] = 100 * (total - free) / total
        with contextlib.suppress(Exception):  # NVML (pynvml) missing or not permitted: memory only
            out[f"gpu_{i}_utilization_percentage"] = float(torch.cuda.utilization(i))
    return out


class NodeMonitor:
    """Calls ``emit(sample)`` every ``interval_s`` until :meth:`close`."""

    def __init__(self, emit: Callable[[dict[str, float]], None], node: str, interval_s: float) -> None:
        self.emit, self.node, self.interval_s = emit, node, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"swat-system-{node}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sample(self.node)  # primes psutil's CPU counter, which is per thread: its first reading is always 0
        while not self._stop.wait(self.interval_s):
            self.emit(sample(self.node))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
