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
from typing import Any

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


_NVML: dict[str, Any] = {}  # "nvml": the initialised pynvml module, or None where there is none


def _nvml() -> Any:
    """pynvml (package nvidia-ml-py), initialised once per process; None without it or without a driver."""
    if "nvml" not in _NVML:
        try:
            import pynvml

            pynvml.nvmlInit()
            _NVML["nvml"] = pynvml
        except Exception:  # not installed (CPU machines), no driver, or NVML not permitted
            _NVML["nvml"] = None
    return _NVML["nvml"]


def _gpus() -> dict[str, float]:
    """Every GPU of the node, read through NVML. Not through torch.cuda.mem_get_info(i): that creates a
    CUDA context (~0.3-0.5 GB) on each device it asks about - every other rank's GPU. NVML creates none,
    and is also where utilisation comes from. NVML numbers the node's devices itself (CUDA_VISIBLE_DEVICES
    does not apply): the node's metrics, not one rank's."""
    nvml = _nvml()
    if nvml is None:
        return {}
    out = {}
    for i in range(nvml.nvmlDeviceGetCount()):
        with contextlib.suppress(Exception):  # a device this job's cgroup hides: skip it
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            mem = nvml.nvmlDeviceGetMemoryInfo(handle)  # the whole device, every process on it
            out[f"gpu_{i}_memory_usage_megabytes"] = mem.used / 2**20
            out[f"gpu_{i}_memory_usage_percentage"] = 100 * mem.used / mem.total
            out[f"gpu_{i}_utilization_percentage"] = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
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
