"""Resumable checkpoints: DeepSpeed's shards + our per-rank state + single-file fp32 weights + ``latest``.

Layout of ``RUN/checkpoints/``::

    step_00000120/           one tag per save
      (DeepSpeed's files)    model and optimizer state, sharded as ZeRO wants
      rank00000.pt ...       per rank: step, epoch, loader position, every RNG state, its EMA part
      meta.json              step, epoch, world size, ZeRO stage, model name, config hash, tracking run id
      model.safetensors      full fp32 weights, loadable by timm (see :mod:`.export`)
      ema.safetensors        the same for the EMA weights (if enabled)
      manifest.json          size and sha256 of every file above: written last (see :mod:`.checkpoint_paths`)
    latest                   the tag of the newest complete save

A save is collective. After a barrier, i.e. after every rank has finished writing, rank 0 writes the
manifest and then replaces ``latest`` atomically, so a crash mid-save leaves the previous checkpoint as
the latest; older tags beyond ``keep_last`` are deleted only after that. A resume takes the newest
checkpoint that verifies against its manifest (:func:`resume_point`). Resuming as another model is
refused; resuming on another world size keeps the checkpoint's global batch (:mod:`.elastic`). Every
``.pt`` file is loaded weights-only: no code runs from a checkpoint, whoever wrote it (:mod:`.safe_load`).
A save that runs out of space is a one-line :class:`DiskFull`; ``latest`` keeps the previous checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import save_file

from .. import collectives
from ..config import CheckpointConfig
from ..dist import DistEnv
from ..files import as_if_opened, atomic_write
from .checkpoint_paths import TAG, check_model, latest_tag, read_meta, resolve, tag_for, write_manifest
from .ema import EMA, ema_state
from .safe_load import load_state, refusal

if TYPE_CHECKING:  # the engine imports deepspeed (~7 s): export and eval read checkpoints without it
    from .engine import Engine


def rng_state() -> dict[str, Any]:
    state = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state())
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointManager:
    def __init__(self, run_dir: Path, cfg: CheckpointConfig, env: DistEnv, engine: Engine, ema: EMA | None) -> None:
        self.dir, self.cfg, self.env, self.engine, self.ema = run_dir / "checkpoints", cfg, env, engine, ema
        self.last_step: int | None = None

    def save(self, step: int, state: dict[str, Any], meta: dict[str, Any]) -> Path:
        """Collective save of tag ``step_<step>``; ``state`` is this rank's trainer state (no RNG: added here).

        A full disk is a :class:`DiskFull` naming the folder, the bytes needed and free; ``latest`` still
        names the previous complete checkpoint (the unfinished folder is skipped at resume, and said so)."""
        tag = tag_for(step)
        path = self.dir / tag
        if self.env.is_main and path.exists():  # a save of this step that crashed before ``latest``
            shutil.rmtree(path)
        collectives.barrier()
        with self._disk_full_named(path):
            self._write(path, tag, step, state, meta)
        collectives.barrier()  # every rank's files are complete before the manifest and the pointer
        if self.env.is_main:
            # Hashing reads the whole checkpoint once while the other ranks wait at the barrier below, at
            # 0.5-1 GB/s: 5 ms for the 3.7 MB test model, 0.25-0.5 s per 250 MB. With EMA under ZeRO 0-2 a
            # checkpoint is ~(5 + ranks) x the fp32 weights (Adam's two moments, both .safetensors, one EMA
            # copy per rank file): DeiT-S (88 MB) on 8 GPUs writes ~1.1 GB, 1-2 s of hashing per save.
            with self._disk_full_named(path):
                write_manifest(path)
                atomic_write(self.dir / "latest", tag + "\n")
            self._prune(keep=tag)
        collectives.barrier()
        self.last_step = step
        return path

    def _write(self, path: Path, tag: str, step: int, state: dict[str, Any], meta: dict[str, Any]) -> None:
        """This rank's files of the save (rank 0 also the weights and meta.json); collective under ZeRO-3."""
        self.engine.save(str(self.dir), tag)
        rank_state = dict(state, rng=rng_state(), ema=self.ema.state_dict() if self.ema else None)
        torch.save(rank_state, path / f"rank{self.env.rank:05d}.pt")
        weights = self.engine.full_state_dict()  # collective under ZeRO-3
        ema_weights = None
        if self.ema is not None:
            with self.ema.swapped():
                ema_weights = self.engine.full_state_dict()
        if self.env.is_main:
            save_file(weights, str(path / "model.safetensors"))
            as_if_opened(path / "model.safetensors")  # save_file writes a 0600 temporary file
            if ema_weights is not None:
                save_file(ema_weights, str(path / "ema.safetensors"))
                as_if_opened(path / "ema.safetensors")
            atomic_write(path / "meta.json", json.dumps(dict(meta, step=step, world_size=self.env.world_size)))

    @contextlib.contextmanager
    def _disk_full_named(self, path: Path) -> Iterator[None]:
        """A write that failed for want of space raises :class:`DiskFull` (one line) instead of what the
        writer said: torch.save's is ``basic_ios::clear: iostream error`` or ``unexpected pos N vs M``."""
        try:
            yield
        except Exception as err:
            full = disk_full(err, path, *self._needed())
            if full is None:
                raise
            raise full from err

    def _needed(self) -> tuple[int, str]:
        """(bytes, how they were estimated) of one save: the last complete one's size, or from the model."""
        tag = latest_tag(self.dir)
        if tag and (self.dir / tag).is_dir():
            return sum(f.stat().st_size for f in (self.dir / tag).iterdir() if f.is_file()), f"the size of {tag}"
        params, ranks = sum(self.engine.local_numels()), self.env.world_size
        return 4 * params * (5 + ranks), f"4 bytes x {params} parameters x (5 + {ranks} ranks)"

    def _prune(self, keep: str) -> None:
        tags = sorted(p.name for p in self.dir.iterdir() if TAG.match(p.name))
        old = [t for t in tags if t != keep][: max(len(tags) - self.cfg.keep_last, 0)]
        for t in old:
            shutil.rmtree(self.dir / t, ignore_errors=True)

    def load(self, path: Path, config_hash: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Restore engine, EMA and RNG from ``path``; return (this rank's trainer state, meta).

        On another world size than the checkpoint's (the engine built with ``universal`` for ZeRO 1-3, the
        config re-laid out by :func:`.elastic.relayout`) every rank takes rank 0's trainer, loader and RNG
        state (they agree across ranks), its loader position re-counted, and its EMA re-cut (:mod:`.elastic`).
        """
        meta = read_meta(path)
        saved_world = int(meta["world_size"])
        if meta.get("config_hash") != config_hash:
            print(f"[swat-dist] note: resuming {path} written with config {meta.get('config_hash')}, now {config_hash}")
        self.engine.load(str(path.parent), path.name)
        same = saved_world == self.env.world_size
        state = load_state(path / f"rank{self.env.rank if same else 0:05d}.pt")  # weights-only: data, no code
        if self.ema is not None:
            if same:
                ema = state.get("ema")
            else:
                stage, numels = self.engine.zero_stage, self.engine.local_numels()
                ema = ema_state(path, saved_world, stage, self.env.world_size, self.env.rank, numels)
            if ema is None:
                raise ValueError(f"checkpoint {path} has no EMA state but ema.enabled is true")
            self.ema.load_state_dict(ema)
        set_rng_state(state.pop("rng"))
        self.last_step = int(meta["step"])
        return state, meta


class DiskFull(OSError):
    """A checkpoint save ran out of space (ENOSPC); its message is one line."""


# What the writers of a save say when a write fails: torch.save (C++ streams, no errno kept), safetensors.
_WRITE_FAILED = ("iostream error", "inline_container", "PytorchStreamWriter", "file write failed")


def disk_full(err: BaseException, path: Path, needed: int, how: str) -> DiskFull | None:
    """``err`` as a one-line :class:`DiskFull`, when it is a write that failed for want of space: errno
    ENOSPC or its text; or torch's errno-less write failure while less than ``needed`` bytes are free."""
    where = next(p for p in (path, *path.parents) if p.exists())  # the save may have failed before its mkdir
    free = shutil.disk_usage(where).free
    text = str(err)
    enospc = getattr(err, "errno", None) == errno.ENOSPC or "os error 28" in text or "No space left" in text
    if not enospc and not (any(mark in text for mark in _WRITE_FAILED) and free < needed):
        return None
    latest = latest_tag(path.parent)
    return DiskFull(
        errno.ENOSPC,
        f"checkpoint {path}: no space left on the device (ENOSPC): a save needs ~{needed:,} bytes ({how}), "
        f"{free:,} are free in {path.parent}; the last complete checkpoint stays the latest: {latest or 'none yet'}",
    )


def resume_point(run_dir: Path, resume: str, model: str, env: DistEnv) -> Path | None:
    """The checkpoint every rank resumes from: rank 0 resolves ``resume`` (``checkpoint.resume``) to the
    newest checkpoint that verifies with sha256 and broadcasts its choice, so the ranks cannot disagree
    and only one process reads the checkpoint to hash it (~0.3-0.5 s per 250 MB). A checkpoint of
    another model than ``model`` (``model.name``), or with a ``.pt`` file that names anything but data
    (:func:`.safe_load.refusal`), is refused. Rank 0 says which checkpoint it continues from, in one line.
    Call before anything is built or written.
    """
    choice: Path | str | None = None
    if env.is_main:
        try:
            choice = resolve(run_dir, resume, hashes=True, report=lambda line: print(line, flush=True))
            if choice is not None:
                check_model(choice, model)
                why = refusal(choice)  # before any rank loads a byte of it
                if why:
                    raise ValueError(why)
                print(f"[checkpoint] resuming from {choice} (step {read_meta(choice)['step']})", flush=True)
        except ValueError as err:  # raised on every rank below: rank 0 alone would leave the others waiting
            choice = str(err)
    choice = collectives.broadcast_object(choice)
    if isinstance(choice, str):
        raise ValueError(choice)
    return choice
