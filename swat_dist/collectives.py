"""Every collective of ours goes through here, so the device rule for NCCL lives in one place.

NCCL accepts only CUDA tensors, gloo CPU ones: a tensor handed to a collective must be on the device
the process group was joined with (:func:`set_device`, called by the engine at start; the engine's
device). A tensor made without ``device=`` is a CPU tensor, which works under gloo and crashes the
first NCCL call: :func:`sum_` and :func:`max_` refuse any tensor not on that device, on CPU as well, so
the mistake is found where it is made. Without a process group (one process) every call is a no-op.

Cost: the checks read tensor metadata only (no host sync). DeepSpeed's own collectives stay inside
DeepSpeed; these are ours (the trainer's flags and loss sums, evaluation sums, the tracking run id,
checkpoint barriers).
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
import torch.distributed as tdist
from torch import Tensor

T = TypeVar("T")

_device: dict[str, torch.device] = {"device": torch.device("cpu")}


def set_device(device: torch.device) -> None:
    """The device every collective input must be on (the engine's: cuda:<local rank> or cpu)."""
    _device["device"] = device


def device() -> torch.device:
    return _device["device"]


def _checked(t: Tensor, what: str) -> Tensor:
    want = _device["device"]
    if t.device.type != want.type or (want.index is not None and t.device.index != want.index):
        raise RuntimeError(
            f"{what}: tensor on {t.device}, but the process group runs on {want} (NCCL takes only CUDA "
            "tensors): make it with device=... or move it first"
        )
    return t


def world_size() -> int:
    """The process group's size (1 without one: every collective here is then a no-op)."""
    return tdist.get_world_size() if tdist.is_initialized() else 1


def sum_(t: Tensor) -> Tensor:
    """All-reduce ``t`` in place with SUM across ranks; returns ``t``."""
    if tdist.is_initialized():
        tdist.all_reduce(_checked(t, "sum_"), op=tdist.ReduceOp.SUM)
    return t


def max_(t: Tensor) -> Tensor:
    """All-reduce ``t`` in place with MAX across ranks; returns ``t``."""
    if tdist.is_initialized():
        tdist.all_reduce(_checked(t, "max_"), op=tdist.ReduceOp.MAX)
    return t


def broadcast_(t: Tensor, src: int = 0) -> Tensor:
    """``src``'s values of ``t`` on every rank, in place; returns ``t``."""
    if tdist.is_initialized():
        tdist.broadcast(_checked(t, "broadcast_"), src=src)
    return t


def broadcast_object(obj: T, src: int = 0) -> T:
    """``src``'s picklable ``obj`` on every rank (torch moves the bytes over the backend's device itself)."""
    if not tdist.is_initialized():
        return obj
    box: list[Any] = [obj]
    tdist.broadcast_object_list(box, src=src, device=_device["device"])
    return box[0]


def gather_object(obj: T, dst: int = 0) -> list[T] | None:
    """Every rank's picklable ``obj``, in rank order, on ``dst`` (None on the others; ``[obj]`` alone).

    For small objects (a checkpoint's per-file digests): the bytes go through the backend on the device of
    :func:`set_device` (under NCCL torch uses the current CUDA device, which the engine set to the same).
    Unpickled weights-only: plain data (str, int, float, None, lists, dicts) and nothing that runs code."""
    if not tdist.is_initialized():
        return [obj]
    rank = tdist.get_rank()
    out: list[Any] | None = [None] * tdist.get_world_size() if rank == dst else None
    tdist.gather_object(obj, out, dst=dst, weights_only=True)
    return out


def barrier() -> None:
    """Wait for every rank (on NCCL, torch's barrier runs on the current CUDA device set by the engine)."""
    if tdist.is_initialized():
        tdist.barrier()
