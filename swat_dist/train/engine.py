"""DeepSpeed behind one small class: the ONLY module of the package that imports deepspeed.

It owns the process group (gloo on CPU, nccl on CUDA, from :class:`~swat_dist.dist.DistEnv`), the
engine built from the generated config (:mod:`.ds_config`) with a client ``torch.optim.AdamW`` (DeepSpeed's
own Adams JIT-compile ~50 s, PLATFORM.md), and the few things the trainer needs from it: forward,
backward, step, grad norm, checkpoints, and full fp32 parameters under any ZeRO stage; and the one
conversion a resume on another world size needs (:func:`universal_copy`, see :mod:`.elastic`).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist
from torch import Tensor, nn

from .. import collectives
from ..config import Config
from ..dist import DistEnv, cuda_index
from .ds_config import deepspeed_config
from .safe_load import DEEPSPEED_GLOBALS, weights_only, what_was_refused


@contextlib.contextmanager
def _hidden(module: str) -> Iterator[None]:
    """``import module`` fails inside (Python's documented ``sys.modules[name] = None``) unless it is loaded.

    DeepSpeed's config imports its autotuner, which imports mlflow whenever it is installed, to log autotuning
    trials we never run: 1.3 s of every rank's start here (~4 s on a loaded machine; docs/benchmarks.md), with
    tracking off too. Rank 0 imports mlflow itself when it tracks, through :mod:`swat_dist.tracking`.
    """
    if module in sys.modules:
        yield
        return
    sys.modules[module] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if sys.modules.get(module, 0) is None:
            del sys.modules[module]


with _hidden("mlflow"):
    import deepspeed


def device_for(env: DistEnv) -> torch.device:
    """This rank's device, from the GPUs this task can see (:func:`~swat_dist.dist.cuda_index`)."""
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cuda, version = torch.version.cuda, torch.__version__
    why = (
        f"the NVIDIA driver must support CUDA {cuda}, which torch {version} was built for (nvidia-smi shows "
        "the highest CUDA version the driver supports)"
        if cuda
        else f"torch {version} is a CPU-only build"
    )
    index = cuda_index(env, visible, why)
    if index is None:
        return torch.device("cpu")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_exported: dict[str, str | None] = {}  # variable -> its value before init_distributed (None: unset)


def init_distributed(env: DistEnv, device: torch.device) -> None:
    """Join the process group described by ``env`` (a group of one for a single process)."""
    collectives.set_device(device)
    if tdist.is_initialized():
        return
    # A single process gets a free port: a fixed default would collide with other runs on the machine.
    port = env.master_port if env.launcher != "single" else _free_port()
    # DeepSpeed reads these itself in places (e.g. LOCAL_RANK for the device): export what we decided, and
    # put back what was there when the group is left (destroy): a run in a process that goes on (a notebook,
    # a test) must not make its later subprocesses think they are rank 0 of a launch on this port.
    for key, value in dict(
        RANK=env.rank, LOCAL_RANK=env.local_rank, WORLD_SIZE=env.world_size, LOCAL_WORLD_SIZE=env.local_world_size,
        MASTER_ADDR=env.master_addr, MASTER_PORT=port,
    ).items():  # fmt: skip
        _exported.setdefault(key, os.environ.get(key))
        os.environ[key] = str(value)
    _forget_deepspeed_groups()
    deepspeed.init_distributed(
        dist_backend="nccl" if device.type == "cuda" else "gloo",
        init_method=f"tcp://{env.master_addr}:{port}",
        rank=env.rank,
        world_size=env.world_size,
        timeout=timedelta(minutes=30),
        verbose=False,
    )


def _forget_deepspeed_groups() -> None:
    """Drop the groups DeepSpeed cached in an earlier group's life in this process (its clone of WORLD, the
    data-parallel group): torch's teardown leaves them naming destroyed groups, and the next engine built in
    the same process (tests, notebooks) failed in its first broadcast ("Group ... is not registered").
    DeepSpeed's own destroy_process_group does the same; this DeepSpeed version keeps it private."""
    release = getattr(getattr(deepspeed.utils, "groups", None), "_release_process_group_references", None)
    if release is not None:
        release(None)


def destroy(failed: bool = False) -> None:
    """Leave the process group (a 2-rank CPU run once aborted at exit without it, PLATFORM.md) and restore
    the environment variables :func:`init_distributed` exported.

    ``failed``: this rank raised. No barrier then - the other ranks wait in another collective (the step's
    flags all-reduce), so a barrier would match nothing and every rank would sit out the 30-minute timeout.
    The group is aborted instead: on NCCL that cancels this rank's pending kernels; on gloo and NCCL the
    peers' next collective fails (gloo: "Connection closed by peer" within ~1 s, measured; NCCL: a remote
    error once this process is gone), and torchrun stops the other workers when this one exits non-zero.
    """
    if tdist.is_initialized():
        if failed:
            _abort_group()
        else:
            collectives.barrier()
            tdist.destroy_process_group()
    for key, before in _exported.items():
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before
    _exported.clear()


def _abort_group() -> None:
    # torch 2.14 has no public abort; _abort_process_group is what destroy_process_group's docs point to for
    # a group with collectives in flight. Without it (another torch), destroy without a barrier.
    abort = getattr(tdist.distributed_c10d, "_abort_process_group", None)
    with contextlib.suppress(RuntimeError, ValueError):  # already torn down by the failure itself
        abort() if abort is not None else tdist.destroy_process_group()


UNIVERSAL = "universal"  # the universal copy of a ZeRO 1-3 checkpoint: CHECKPOINT/universal/
# Saved in every checkpoint so that DeepSpeed's converter accepts ZeRO 1/2 ones (PLATFORM.md).
UNIVERSAL_INFO = {"universal_checkpoint_version": 0.4}


def _convert(tag_dir: Path, out: Path) -> str | None:
    """Run DeepSpeed's converter into a hidden folder, then rename it to ``out``: None, or why it failed.

    The rename is the commit: ``out`` exists only complete, a crash leaves a hidden folder that the next
    try removes. Cost: one process that imports deepspeed (~7 s) and reads and writes the fp32 weights and
    both Adam moments once (~3 x 4 bytes x params written, e.g. ~1 GB for DeiT-S).
    """
    for stale in tag_dir.glob(f".{UNIVERSAL}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = tag_dir / f".{UNIVERSAL}-{os.getpid()}"
    # DeepSpeed's converter, its every torch.load made weights-only (:func:`convert_main`)
    cmd = [sys.executable, "-c", "from swat_dist.train.engine import convert_main; convert_main()",
           "--input_folder", str(tag_dir), "--output_folder", str(tmp), "--num_extract_workers", "1",
           "--num_merge_workers", "1", "--inject_missing_state"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    if done.returncode != 0:
        log = tag_dir / f"{UNIVERSAL}-failed.log"
        log.write_text(done.stdout + done.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"converting {tag_dir} to DeepSpeed's universal format failed ({last}); its output: {log}"
    os.replace(tmp, out)
    return None


def _deepspeed_globals() -> list[Any]:
    """The objects :data:`~.safe_load.DEEPSPEED_GLOBALS` names (modules deepspeed has already imported)."""
    found = []
    for name in DEEPSPEED_GLOBALS:
        module, _, attr = name.rpartition(".")
        found.append((getattr(importlib.import_module(module), attr), name))
    return found


def convert_main() -> None:
    """``ds_to_universal``'s command line (``sys.argv``), with every checkpoint file it reads loaded
    weights-only: the converter passes ``weights_only=False`` itself. Run in the converter's process
    (:func:`_convert`); with one extract and one merge worker it starts no other."""
    from deepspeed.checkpoint import ds_to_universal

    with weights_only(_deepspeed_globals()):
        ds_to_universal.main(ds_to_universal.parse_arguments())


def universal_copy(tag_dir: Path, env: DistEnv) -> Path:
    """``tag_dir/universal``: the ZeRO 1-3 checkpoint in ``tag_dir`` in DeepSpeed's universal format,
    which loads at any data-parallel size. Collective: rank 0 converts (once: a later resume reuses the
    copy), the other ranks wait for it; a failure is a one-line ValueError on every rank."""
    out = tag_dir / UNIVERSAL
    why = _convert(tag_dir, out) if env.is_main and not out.is_dir() else None
    if env.is_main and why is None and not out.is_dir():
        why = f"DeepSpeed's converter wrote no {out}"
    why = collectives.broadcast_object(why)
    if why is not None:
        raise ValueError(why)
    return out


class Engine:
    """A DeepSpeed engine around ``model`` with a client AdamW over ``groups`` (see :mod:`.optim`).

    ``universal``: load checkpoints from their universal copy (a resume on another world size)."""

    def __init__(
        self, model: nn.Module, groups: list[dict[str, Any]], cfg: Config, env: DistEnv, universal: bool = False
    ) -> None:
        self.env = env
        self.zero_stage = cfg.engine.zero_stage
        o = cfg.optim
        plain = [{k: v for k, v in g.items() if k != "names"} for g in groups]
        optimizer = torch.optim.AdamW(plain, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
        ds_config = deepspeed_config(cfg, env.world_size)
        if self.zero_stage == 3 and cfg.ema.enabled:
            # ZeRO-3 keeps parameters below this size whole on every rank ("persistent") and runs the
            # forward on those copies, not on the partitions the EMA swaps; 0 partitions them all. Cost:
            # small parameters are all-gathered in every forward too (latency, no extra memory).
            ds_config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
        if universal:
            ds_config["checkpoint"] = {"load_universal": True}
        model.universal_checkpoint_info = dict(UNIVERSAL_INFO)  # type: ignore[assignment]  # read at save
        self.universal = universal
        self.ds, self.optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
        self.device = self.ds.device
        self._norm: Tensor | None = None  # stage 0: the last step's norm, read (a host sync) only when logged
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.engine.precision, torch.float32)

    @property
    def module(self) -> nn.Module:
        return self.ds.module

    def train(self, mode: bool = True) -> None:
        self.ds.train(mode)

    def forward(self, x: Tensor) -> Tensor:
        return self.ds(x.to(self.dtype))

    def backward(self, loss: Tensor) -> None:
        self.ds.backward(loss)

    def step(self) -> bool:
        """DeepSpeed's step (an optimizer step only at an accumulation boundary); True if it was one."""
        boundary = bool(self.ds.is_gradient_accumulation_boundary())
        if boundary and self.zero_stage == 0:
            # DeepSpeed keeps no norm for a client optimizer at stage 0; the grads are already all-reduced
            # here, so their norm is the global one (one pass over the grads: cheap next to the step).
            grads = [p.grad.detach().float().norm() for p in self.module.parameters() if p.grad is not None]
            self._norm = torch.stack(grads).norm() if grads else None
        self.ds.step()
        return boundary

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def grad_norm(self) -> float:
        """Global grad norm of the last optimizer step, before clipping (nan if DeepSpeed has none)."""
        norm = self.grad_norm_tensor()
        return float(norm) if norm is not None else float("nan")

    def grad_norm_tensor(self) -> Tensor | None:
        """:meth:`grad_norm` where it lives, no host sync (on the device; ZeRO 1-3 keep a tensor, or a
        Python inf after a step they skipped as an overflow); None if DeepSpeed keeps no norm."""
        norm = self._norm if self.zero_stage == 0 else self.ds.get_global_grad_norm()
        if norm is None or isinstance(norm, Tensor):
            return norm
        return torch.tensor(float(norm), device=self.device)

    def sync_buffers(self) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank, as DDP's broadcast_buffers does.

        Without SyncBatchNorm (always on CPU: torch has no CPU kernel) each rank's running statistics drift
        apart, and an evaluation would score a different model on each rank's share of the val set; rank
        0's are also the ones checkpoints and exports keep. One small broadcast per buffer, per evaluation.
        """
        for buf in self.module.buffers():
            if buf.is_floating_point():
                collectives.broadcast_(buf.data)

    def save(self, directory: str, tag: str) -> None:
        """Collective: every rank writes its model/optimizer shards; no ``latest`` file (ours is)."""
        self.ds.save_checkpoint(directory, tag=tag, save_latest=False)

    def load(self, directory: str, tag: str) -> None:
        """Load checkpoint ``tag`` of ``directory``; with ``universal``, its universal copy (made beforehand
        by :func:`universal_copy`; stage 0 loads at any world size as it is, PLATFORM.md)."""
        universal = self.universal and self.zero_stage > 0
        if universal:
            directory, tag = str(Path(directory) / tag), UNIVERSAL
        # DeepSpeed 0.19.8's ZeRO-3 universal load copies the first param group's hyperparameters into every
        # group (weight_decay 0 of the no-decay group, say, onto the decayed weights): put ours back. They
        # come from the config, as the checkpoint's did; the lr is set again before every micro-batch.
        groups = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        path = self._load_weights_only(directory, tag)
        if path is None:
            raise ValueError(f"DeepSpeed found no checkpoint {tag!r} in {directory}")
        if universal:
            for group, saved in zip(self.optimizer.param_groups, groups):
                group.update(saved)
            # The same DeepSpeed load also gives every flat fp32 partition (one per param group) ONE shared
            # tensor as Adam's ``step``; ZeRO-3 steps each partition with its own optimizer.step(), and
            # torch's AdamW increments ``step`` in place, so with 2 groups the count grew by 2 per optimizer
            # step and the bias correction 1 - beta^t was wrong from the first step after the resume (the
            # ZeRO-3 drift of issue 17: tests/train/test_elastic.py measured 1.6e-5 in the loss one step after
            # the first update, up to 3.7e-2 in 40 steps; 0 with this). One tensor per partition, as a fresh or
            # same-size load has; harmless where none is shared (ZeRO 1/2 load one step per parameter).
            for state in self.optimizer.state.values():
                if isinstance(state.get("step"), Tensor):
                    state["step"] = state["step"].clone()

    def _load_weights_only(self, directory: str, tag: str) -> str | None:
        """DeepSpeed's load with every torch.load in it weights-only (DeepSpeed asks for pickle): a file that
        names anything but data is a one-line ValueError (:mod:`.safe_load`; resume_point scans first)."""
        try:
            with weights_only(_deepspeed_globals()):
                path, _ = self.ds.load_checkpoint(directory, tag=tag, load_lr_scheduler_states=False)
        except pickle.UnpicklingError as err:
            raise ValueError(
                f"checkpoint {Path(directory) / tag}: DeepSpeed's state refused by the weights-only load "
                f"({what_was_refused(err)}): nothing of it was run"
            ) from None
        return path

    def local_numels(self) -> list[int]:
        """The whole element count of each parameter :meth:`local_params` returns (ZeRO-3: not the partition's)."""
        params: list[Any] = [p for p in self.module.parameters() if p.requires_grad]
        return [int(p.ds_numel) if self.zero_stage == 3 else p.numel() for p in params]

    def local_params(self) -> list[Tensor]:
        """This rank's trainable parameter storage: full tensors (ZeRO 0-2) or its ZeRO-3 partition."""
        params: list[Any] = [p for p in self.module.parameters() if p.requires_grad]
        return [p.ds_tensor for p in params] if self.zero_stage == 3 else params

    def release_gathered(self) -> None:
        """ZeRO-3: drop every all-gathered copy, so the next forward gathers the partitions afresh.

        Needed after writing into the partitions (the EMA swap): DeepSpeed keeps parameters it expects
        to reuse soon gathered across forwards, and would run on the stale copies.
        """
        if self.zero_stage == 3:
            self.ds.empty_partition_cache()

    @contextlib.contextmanager
    def full_params(self) -> Iterator[nn.Module]:
        """The module with every parameter whole on every rank (ZeRO-3 all-gathers them, read-only)."""
        if self.zero_stage != 3:
            yield self.module
            return
        with deepspeed.zero.GatheredParameters(list(self.module.parameters()), modifier_rank=None):
            yield self.module

    def full_state_dict(self, keep: bool = True) -> dict[str, Tensor]:
        """fp32 host copies of every parameter and buffer (collective under ZeRO-3: call it on all ranks).

        ``keep=False`` (the ranks that write no weights file): {} without the copies, one fp32 model of
        host memory and a device-to-host copy saved per rank; under ZeRO-3 it still takes part in the gather.
        Under bf16 these are the module's bf16 weights cast up, not the optimizer's fp32 master weights.
        """
        if not keep and self.zero_stage != 3:
            return {}
        with self.full_params() as module:
            return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()} if keep else {}
