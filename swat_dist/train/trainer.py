"""The training loop: one optimizer step after another, with logging, evaluation and checkpoints on cadence.

Every collective happens at the same point on every rank: one small all-reduce per micro-batch (is
any rank's loss non-finite? is any rank's checkpoint timer due? did any rank get a stop signal, see
:mod:`.preempt`? - it costs one latency-bound collective, and keeps ranks from disagreeing about
skipping, saving or stopping), one per logged step (the
mean loss), and the evaluation and checkpoint collectives at deterministic steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import collectives
from ..config import Config, Derived
from ..data.loaders.batches import TrainBatch
from ..data.loaders.build import Loaders
from ..data.loaders.plan import sample_position
from ..data.loaders.seeds import seed_everything
from ..dist import DistEnv
from ..progress import progress
from ..tasks import Task
from . import preempt
from .checkpoint import CheckpointManager
from .ema import EMA
from .engine import Engine
from .evaluate import evaluate
from .metrics import MetricsWriter, NullMetrics, Tracker, memory_gb
from .optim import lr_at

MAX_BAD_STEPS = 10  # non-finite losses in a row before giving up


def _to_device(values: list[float], device: torch.device) -> Tensor:
    """Host numbers on ``device`` without waiting for it: on CUDA from page-locked memory, copied
    non-blocking behind the queued forward. ``torch.tensor(values, device=cuda)`` copies from pageable
    memory, which makes the host wait for everything queued before it (a second sync per micro-batch)."""
    if device.type != "cuda":
        return torch.tensor(values, device=device)
    # the caching host allocator keeps the page-locked block until the copy has run
    return torch.tensor(values).pin_memory().to(device, non_blocking=True)


class NonFiniteLoss(RuntimeError):
    pass


class NonFiniteGradNorm(NonFiniteLoss):
    """The last optimizer step's gradient norm was inf or nan. DeepSpeed's ZeRO 1-3 skip such an update
    as an overflow (the loop would count it as a step, silently); at stage 0 the client AdamW applies it
    and the weights are nan. Either way nothing more is saved."""


@dataclass
class TrainState:
    """What the loop itself must carry across a restart (the loader, engine, EMA and RNG travel separately)."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    best: dict[str, float] = field(default_factory=dict)
    last_val: dict[str, float] = field(default_factory=dict)
    skipped: int = 0  # non-finite micro-batches skipped in total
    val_step: int = -1  # the step of the last evaluation
    tracking_run_id: str | None = None
    # wall seconds of the earlier attempts, each up to its last checkpoint (summary.json's wall_time_s adds
    # the last attempt's): a run requeued twice reports its whole time, not its last attempt's
    elapsed_s: float = 0.0


def step_seed(seed: int, epoch: int, position: int) -> int:
    """The RNG seed of one micro-batch's device-side randomness (erasing, mixup, drop-path, dropout), from
    its global :func:`~swat_dist.data.loaders.plan.sample_position`, not the rank: resume-exact, different
    on every rank, and the same after an elastic resume that keeps the micro-batch size."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1)[0])


@dataclass
class Trainer:
    cfg: Config
    env: DistEnv
    d: Derived
    engine: Engine
    loaders: Loaders
    task: Task
    ema: EMA | None
    ckpt: CheckpointManager
    metrics: MetricsWriter | NullMetrics
    tracker: Tracker
    flops_per_step: float  # training FLOPs of one optimizer step, all ranks
    peak_flops: float  # per device
    state: TrainState
    config_hash: str

    def __post_init__(self) -> None:
        self.steps_per_epoch = self.loaders.train.steps_per_epoch // self.cfg.engine.grad_accum
        if self.steps_per_epoch < 1:
            raise ValueError("an epoch holds less than one optimizer step: more data or a smaller batch is needed")
        total = self.d["total_epochs"] * self.steps_per_epoch
        self.total_steps = min(total, self.cfg.max_steps or total)
        # A bar on a terminal; in a log file a plain line every progress_every steps (swat_dist.progress).
        self.bar = progress(self.total_steps, "train", unit="step", show=self.env.is_main, initial=self.state.step,
                            every=self.cfg.progress_every, interval_s=None, rate_scale=self.d["global_batch"],
                            rate_unit="img")  # fmt: skip
        self._ready: float = time.perf_counter()  # when the previous micro-batch finished
        self._attempt = (time.perf_counter(), self.state.elapsed_s)  # this attempt's start, and the time before it
        self._reset_window()
        self._time_due = False
        self._bad_in_row = 0
        self._last_save = time.monotonic()
        self._stop_asked = False  # some rank got a stop signal (agreed through the flags all-reduce)
        self.stopped = False  # fit() returned early on a stop request, after a collective save

    def fit(self) -> None:
        train = self.loaders.train
        while self.state.step < self.total_steps and not self.stopped:
            train.set_epoch(self.state.epoch)  # no-op when resuming mid-epoch
            for images, labels in self._epoch_batches():
                if self._micro_step(images, labels):
                    self._after_step()
                    if self.state.step >= self.total_steps or self._stop_if_asked():
                        break
            if self.stopped:  # leave before the epoch bookkeeping: the resumed run does it, as without a stop
                break
            used = train.step >= self.steps_per_epoch * self.cfg.engine.grad_accum  # left at its last step
            if train.epoch > self.state.epoch or used:  # the epoch's batches are all used
                self.state.epoch += 1
                every = self.cfg.eval.every_epochs
                if every and self.state.epoch % every == 0:
                    self.validate()
        self.bar.close()

    def _epoch_batches(self) -> Iterator[TrainBatch]:
        """The loader's batches of this epoch up to its last whole optimizer step, then the next epoch.

        With accumulation the loader's micro-steps need not fill whole optimizer steps (25 micro-batches
        of 4 at accumulation 2): the leftover ones would add their gradients to the next epoch's first
        step. Cutting them keeps an epoch's optimizer steps the same on every layout of one global batch
        (:mod:`.elastic`): ``samples // global batch``.
        """
        train = self.loaders.train
        epoch, limit = train.epoch, self.steps_per_epoch * self.cfg.engine.grad_accum
        if train.step < limit:
            for batch in train:
                yield batch
                if train.step >= limit:
                    break
        if train.epoch == epoch:  # stopped at the limit, before the loader's own end of epoch
            train.set_epoch(epoch + 1)

    def _micro_step(self, images: Any, labels: Tensor) -> bool:
        """Forward/backward one micro-batch; True when DeepSpeed took an optimizer step. ``images``: uint8
        (B, 3, H, W), or an EncodedBatch with ``data.augment_on: device`` - only the task reads it."""
        start = time.perf_counter()
        self._data_wait += start - self._ready
        train, device = self.loaders.train, self.engine.device
        # train.step - 1: the loader counts a batch when it hands it over. Seeds the CPU generator and the
        # device's (CUDA: a cheap manual_seed of one generator, no sync).
        at = sample_position(train.step - 1, self.env.world_size, self.env.rank, self.cfg.data.batch_size)
        seed_everything(step_seed(self.cfg.seed, train.epoch, at), device)
        x, y = self.task.batch(images, labels, device, train=True)
        self.engine.set_lr(self._lr(self.state.step))
        loss = self.task.loss(self.engine.forward(x), y)
        minutes = self.cfg.checkpoint.every_minutes
        due = minutes is not None and time.monotonic() - self._last_save > minutes * 60
        host = _to_device([float(due), float(preempt.requested())], device)
        flags = collectives.max_(torch.cat([(~torch.isfinite(loss)).float().reshape(1), host, self._bad_norm()]))
        # The one host sync of a micro-batch: whether to skip must be known before the backward. It waits
        # for this forward (and the flags all-reduce) to finish before the backward is queued.
        bad, due_any, stop_any, bad_norm = flags.tolist()
        if bad_norm:  # the previous step's: found here, with the flags, at no extra sync
            self._stop_non_finite_norm(self.state.step)
        self._time_due = bool(due_any)
        self._stop_asked = self._stop_asked or bool(stop_any)
        if bad:  # skip on every rank: no backward, no step, DeepSpeed's counters untouched
            self._skip()
            return False
        self._bad_in_row = 0
        self.engine.backward(loss)
        stepped = self.engine.step()
        self._loss_sum += loss.detach().double()
        self._micro += 1
        self._step_time += time.perf_counter() - start
        self._ready = time.perf_counter()
        return stepped

    def _lr(self, step: int) -> float:
        return lr_at(step, self.steps_per_epoch, self.cfg.sched, self.d, run_steps=self.total_steps)

    def _stop_if_asked(self) -> bool:
        """At an optimizer-step boundary after an agreed stop request: one collective save, then stop."""
        if self._stop_asked and not self.stopped:
            if self.ckpt.last_step != self.state.step:
                self.save()
            self.stopped = True
        return self.stopped

    def _skip(self) -> None:
        self._bad_in_row += 1
        self.state.skipped += 1
        self._ready = time.perf_counter()
        if self._bad_in_row >= MAX_BAD_STEPS:
            last = self.ckpt.last_step
            where = f"step {last} in {self.ckpt.dir}" if last is not None else "none (no checkpoint was written)"
            raise NonFiniteLoss(
                f"the loss was not finite for {MAX_BAD_STEPS} micro-batches in a row at step {self.state.step}; "
                f"stopped without saving. Last good checkpoint: {where}. Lower optim.lr or raise sched.warmup_epochs"
            )

    def _bad_norm(self) -> Tensor:
        """1 if the last optimizer step's global gradient norm is not finite, else 0 (on the device)."""
        norm = self.engine.grad_norm_tensor() if self.state.step > 0 else None
        if norm is None:
            return torch.zeros(1, device=self.engine.device)
        return (~torch.isfinite(norm.detach().float())).reshape(1).to(self.engine.device)

    def _stop_non_finite_norm(self, step: int) -> None:
        last = self.ckpt.last_step
        where = f"step {last} in {self.ckpt.dir}" if last is not None else "none (no checkpoint was written)"
        raise NonFiniteGradNorm(
            f"the gradient norm was not finite at step {step}; stopped without saving. Last good checkpoint: "
            f"{where}. Lower optim.lr, set optim.clip_grad, or raise sched.warmup_epochs"
        )

    def _after_step(self) -> None:
        self.state.step += 1
        step = self.state.step
        if self.ema is not None:
            self.ema.update()
        if step % self.cfg.log_every == 0 or step == self.total_steps:
            self._log()
        self.bar.update(1)  # after the log: a plain line shows this step's loss when the cadences meet
        every = self.cfg.checkpoint.every_steps
        if (every and step % every == 0) or self._time_due:
            self.save()

    def _log(self) -> None:
        micro = torch.tensor(float(self._micro), dtype=torch.float64, device=self.engine.device)
        loss_sum, micro_sum = collectives.sum_(torch.stack([self._loss_sum, micro])).tolist()  # a sync per log
        steps = self.state.step - self._window_start
        wall = time.perf_counter() - self._window_t0
        images_per_sec = steps * self.d["global_batch"] / wall
        # the share of this window every rank spent waiting for its loader: mean and the slowest rank's, so a
        # data-bound run shows at a glance (one more small all-reduce per log, where the log syncs anyway)
        wait = torch.tensor([self._data_wait / wall], dtype=torch.float64, device=self.engine.device)
        wait_max = collectives.max_(wait.clone()).item()
        wait_mean = collectives.sum_(wait).item() / self.env.world_size
        record: dict[str, Any] = {
            "step": self.state.step,
            "epoch": self.state.step / self.steps_per_epoch,
            "train/loss": loss_sum / max(micro_sum, 1.0),
            "lr": self._lr(self.state.step - 1),
            "grad_norm": self.engine.grad_norm(),
            "throughput/images_per_sec": images_per_sec,
            "throughput/images_per_sec_per_device": images_per_sec / self.env.world_size,
            "throughput/mfu": self.flops_per_step * steps / wall / (self.env.world_size * self.peak_flops),
            "time/step_s": wall / steps,
            "time/data_wait_s": self._data_wait / steps,
            "time/data_wait_fraction": wait_mean,
            "time/data_wait_fraction_max": wait_max,
            "time/compute_s": self._step_time / steps,
            "memory/peak_gb": memory_gb(self.engine.device),
        }
        self.metrics.log(record)
        self.bar.set_postfix(loss=f"{record['train/loss']:.4f}", lr=f"{record['lr']:.2e}")
        self._reset_window()

    def _reset_window(self) -> None:
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=self.engine.device)  # summed on the device
        self._micro, self._data_wait, self._step_time = 0, 0.0, 0.0
        self._window_start, self._window_t0 = self.state.step, time.perf_counter()
        self._ready = time.perf_counter()

    def validate(self) -> dict[str, float]:
        """Evaluate the model (and its EMA), log ``val/*`` (``val_ema/*``), track the best of the task's keys."""
        start = time.perf_counter()
        self.engine.sync_buffers()  # every rank evaluates rank 0's model, the one checkpoints keep
        self.engine.train(False)
        out = {f"val/{k}": v for k, v in self._eval("val").items()}
        if self.ema is not None and self.cfg.ema.eval:
            with self.ema.swapped():
                out |= {f"val_ema/{k}": v for k, v in self._eval("val_ema").items()}
        self.engine.train(True)
        for key in (f"{prefix}/{k}" for prefix in ("val", "val_ema") for k in self.task.best_keys):
            if key in out:
                self.state.best[key] = max(self.state.best.get(key, -math.inf), out[key])
        self.state.last_val, self.state.val_step = out, self.state.step
        self.metrics.log({"step": self.state.step, "epoch": self.state.epoch, **out})
        self._window_t0 += time.perf_counter() - start  # evaluation time is not training throughput
        self._ready = time.perf_counter()
        return out

    def _eval(self, desc: str) -> dict[str, float]:
        val, device = self.loaders.val, self.engine.device
        return evaluate(self.engine.forward, val, self.task, device, show=self.env.is_main, desc=desc)

    def elapsed_s(self) -> float:
        """Wall seconds of this run so far, over every attempt (each earlier one up to its last checkpoint)."""
        t0, before = self._attempt
        return before + time.perf_counter() - t0

    def save(self) -> None:
        if collectives.max_(self._bad_norm()).item():  # one sync per save: never a checkpoint of nan weights
            self._stop_non_finite_norm(self.state.step)
        start = time.perf_counter()
        self.state.elapsed_s = self.elapsed_s()
        rank_state = dict(trainer=asdict(self.state), loader=self.loaders.train.state_dict())
        meta = dict(epoch=self.state.epoch, config_hash=self.config_hash, zero_stage=self.cfg.engine.zero_stage,
                    tracking_run_id=self.state.tracking_run_id, model=self.cfg.model.name,
                    global_batch=self.d["global_batch"], micro_batch=self.cfg.data.batch_size,
                    grad_accum=self.cfg.engine.grad_accum)  # fmt: skip
        self.ckpt.save(self.state.step, rank_state, meta)
        self._last_save = time.monotonic()
        self._time_due = False
        self._window_t0 += time.perf_counter() - start  # saving time is not training throughput
        self._ready = time.perf_counter()
