"""The NCCL device rule, checked on CPU: every collective input is on the engine's device.

Under NCCL the engine's device is CUDA while a tensor made without ``device=`` lands on the CPU, and
NCCL refuses it (the first logged step of every GPU run crashed that way: the trainer's loss sum). On a
CPU run both are "cpu", so the mistake is invisible. :class:`ImplicitDevice` makes it visible: it marks
every tensor a factory made without ``device=`` - and every tensor the loaders yield, which live on the
host by design - as "host", propagates the mark through every torch op, and clears it where a tensor is
moved with an explicit device. A short training run then records each collective of
:mod:`swat_dist.collectives`; any host-marked input would be a CPU tensor under NCCL.
"""

from __future__ import annotations

import json
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from swat_dist import collectives
from swat_dist.config import load_config
from swat_dist.dist import DistEnv

from .test_train_runs import _port, overrides

FACTORIES = {torch.tensor, torch.zeros, torch.ones, torch.full, torch.empty, torch.arange, torch.as_tensor,
             torch.rand, torch.randn, torch.randint, torch.linspace, torch.eye}  # fmt: skip
MOVES = {torch.Tensor.to, torch.Tensor.cuda}


class ImplicitDevice(TorchFunctionMode):
    """Marks tensors that would be on the CPU under CUDA (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        # by identity (a WeakSet would compare tensors with ==); entries go when their tensor does
        self.host: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary()

    def mark(self, obj: Any) -> Any:
        for t in tree_flatten(obj)[0]:
            if isinstance(t, torch.Tensor):
                self.host[id(t)] = t
        return obj

    def is_host(self, t: torch.Tensor) -> bool:
        return self.host.get(id(t)) is t

    @staticmethod
    def _says_where(args: tuple, kwargs: dict, func: Any) -> bool:
        if func is torch.Tensor.cuda or "device" in kwargs:
            return True
        return any(isinstance(a, (torch.device, str, torch.Tensor)) for a in args[1:])  # .to(other) too

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is torch.Tensor.cpu:  # a deliberate host copy: what it gives is host memory under CUDA too
            return self.mark(out)
        if func in MOVES and self._says_where(args, kwargs, func):
            for t in tree_flatten(out)[0]:  # .to(device) / .cuda(): where it lands is said
                if isinstance(t, torch.Tensor):
                    self.host.pop(id(t), None)
            return out
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if (func in FACTORIES and kwargs.get("device") is None) or any(self.is_host(t) for t in inputs):
            self.mark(out)
        return out


class Recording:
    """Stands in for ``torch.distributed`` inside :mod:`swat_dist.collectives`: records, then delegates."""

    def __init__(self, mode: ImplicitDevice) -> None:
        self.mode, self.calls = mode, []

    def __getattr__(self, name: str) -> Any:
        return getattr(tdist, name)

    def all_reduce(self, t: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(dict(op="all_reduce", device=str(t.device), host=self.mode.is_host(t), shape=list(t.shape)))
        return tdist.all_reduce(t, *args, **kwargs)

    def broadcast_object_list(self, box: list, src: int = 0, device: Any = None, **kwargs: Any) -> Any:
        self.calls.append(dict(op="broadcast_object_list", device=str(device), host=device is None, shape=[]))
        return tdist.broadcast_object_list(box, src=src, device=device, **kwargs)


def _marking_loaders(mode: ImplicitDevice) -> None:
    """Every batch a loader yields is host memory: mark it, so a missing ``.to(device)`` shows."""
    from swat_dist.data.loaders.loader import TrainLoader, ValLoader

    for cls in (TrainLoader, ValLoader):
        original = cls.__iter__

        def marked(self, _original=original):
            for batch in _original(self):
                yield mode.mark(batch)

        cls.__iter__ = marked


def _rank(rank: int, world: int, port: int, args: list[str], result: str) -> None:
    from swat_dist.train.run import run

    torch.set_num_threads(1)
    mode = ImplicitDevice()
    recording = Recording(mode)
    collectives.tdist = recording  # type: ignore[assignment]
    _marking_loaders(mode)
    env = DistEnv(rank=rank, local_rank=rank, world_size=world, local_world_size=world, master_port=port,
                  launcher="torchrun" if world > 1 else "single")  # fmt: skip
    with mode:
        run(load_config([], args), env)
    if rank == 0:
        Path(result).write_text(json.dumps(recording.calls))


@pytest.mark.slow
def test_every_collective_input_of_a_training_run_is_on_the_engine_device(tmp_path):
    out = tmp_path / "run"
    args = overrides(out, "max_steps=4", "log_every=2", "eval.every_epochs=1", "checkpoint.every_steps=null")
    result = tmp_path / "calls.json"
    mp.spawn(_rank, args=(2, _port(), args, str(result)), nprocs=2, join=True)
    calls = json.loads(result.read_text())
    ops = [c["op"] for c in calls]
    # per micro-batch flags (4 steps x 1 micro-batch), 2 loss logs, 2 evaluations (model + EMA) at step 2 and 4
    assert ops.count("all_reduce") >= 4 + 2 + 4, calls
    shapes = [c["shape"] for c in calls]
    # flags (non-finite loss, checkpoint due, stop asked, non-finite grad norm), loss sums, evaluation sums
    assert shapes.count([4]) >= 4 and [2] in shapes, shapes
    wrong = [c for c in calls if c["host"] or c["device"] not in ("cpu", "None")]
    assert not wrong, f"collective inputs not made on the engine's device (would be CPU tensors under NCCL): {wrong}"


def test_the_marking_sees_an_implicit_cpu_tensor_and_a_missing_move():
    # guards the mode itself: the old trainer's loss sum and a forgotten .to(device) are marked, moved ones not
    mode = ImplicitDevice()
    device = torch.device("cpu")
    with mode:
        loss_sum = torch.zeros((), dtype=torch.float64)  # no device=: CPU under CUDA
        loss_sum += torch.ones((), device=device).double()
        stacked = torch.stack([loss_sum, torch.tensor(1.0, dtype=torch.float64, device=device)])
        labels = mode.mark(torch.arange(4, device=device))  # what a loader yields
        kept, moved = labels * 2, labels.to(device, non_blocking=True)
        on_device = torch.zeros(2, device=device) + 1
        copied = (torch.ones(2, device=device) * 3).cpu()  # a host copy (on CPU .cpu() returns the same tensor)
    assert mode.is_host(loss_sum) and mode.is_host(stacked) and mode.is_host(kept) and mode.is_host(copied)
    assert not mode.is_host(moved) and not mode.is_host(on_device)


def test_collectives_refuse_a_tensor_off_the_process_group_device(tmp_path):
    # NCCL pretended: the group's device is CUDA, the tensor a CPU one -> one clear error, before any call
    store = tdist.FileStore(str(tmp_path / "store"), 1)
    tdist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        collectives.set_device(torch.device("cuda", 0))
        with pytest.raises(RuntimeError, match=r"tensor on cpu, but the process group runs on cuda:0"):
            collectives.sum_(torch.zeros(2))
        with pytest.raises(RuntimeError, match="max_"):
            collectives.max_(torch.zeros(2))
        collectives.set_device(torch.device("cpu"))
        assert collectives.sum_(torch.ones(2)).tolist() == [1.0, 1.0]
        assert collectives.broadcast_object({"run": "x"}) == {"run": "x"}
    finally:
        collectives.set_device(torch.device("cpu"))
        tdist.destroy_process_group()
