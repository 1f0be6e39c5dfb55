"""Resumable checkpoints: DeepSpeed's shards + our per-rank state + single-file fp32 weights + ``latest``.

Layout of ``RUN/checkpoints/``::

    step_00000120/           one tag per save
      (DeepSpeed's files)    model and optimizer state, sharded as ZeRO wants
      rank00000.pt ...       per rank: step, epoch, loader position, every RNG state; the EMA in rank 0's
                             alone under ZeRO 0-2 (it is the same on every rank), each rank's partition under ZeRO-3
      meta.json              step, epoch, world size, ZeRO stage, model name, config hash, tracking run id
      model.safetensors      full fp32 weights, loadable by timm (see :mod:`.export`)
      ema.safetensors        the same for the EMA weights (if enabled)
      manifest.json          size and sha256 of every file above: written last (see :mod:`.checkpoint_paths`)
    latest                   the tag of the newest complete save

A save is collective. Replicated state is written once: rank 0 alone writes the EMA (ZeRO 0-2), the
weights files and meta.json, and only rank 0 copies weights to host memory for them (under ZeRO-3 every
rank takes part in the gather, rank 0 keeps the result). After a barrier, i.e. after every rank has
finished writing, every rank hashes its share of the files (:func:`.checkpoint_paths.shares`: about
equal bytes each), rank 0 gathers the digests, writes the manifest and then replaces ``latest``
atomically, so a crash mid-save leaves the previous checkpoint as the latest; older tags beyond
``keep_last`` are deleted only after that. A resume takes the newest checkpoint that verifies against
its manifest (:func:`resume_point`: the hashing split over the ranks the same way). Checkpoints
written before (every rank file with the full EMA) load as they are. Resuming as another model is
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
from .checkpoint_paths import (
    TAG,
    check_model,
    checkpoint_files,
    hash_files,
    latest_tag,
    read_meta,
    resolve,
    shares,
    tag_for,
    verify_here,
    write_manifest,
)
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
        if self.env.is_main:  # here, not in DeepSpeed: its failed mkdir surfaces later as "Parent directory
            with self._disk_full_named(path):  # ... does not exist"; this one names the folder and the cause
                path.mkdir(parents=True)
        collectives.barrier()
        with self._disk_full_named(path):
            self._write(path, tag, step, state, meta)
        collectives.barrier()  # every rank's files are complete before the manifest and the pointer
        entries = self._hash_shared(path)
        if self.env.is_main:
            with self._disk_full_named(path):
                write_manifest(path, entries)
                atomic_write(self.dir / "latest", tag + "\n")
            self._prune(keep=tag)
        collectives.barrier()
        self.last_step = step
        return path

    def _hash_shared(self, path: Path) -> dict[str, dict[str, Any]] | None:
        """Collective: every rank hashes its share of the save's files; their entries, on rank 0 (None elsewhere).

        A checkpoint is <= 7 x the fp32 weights with EMA (DeepSpeed's module weights, the fp32 master and
        Adam's two moments, both .safetensors, one EMA), hashed at 0.5-1 GB/s per rank in parallel:
        ~(total / ranks + largest file) on the slowest rank instead of the whole on rank 0.
        """
        rank, world = self.env.rank, collectives.world_size()
        plan: list[list[str]] = collectives.broadcast_object(shares(checkpoint_files(path), world) if rank == 0 else [])
        parts = collectives.gather_object(hash_files(path, plan[rank]))
        return None if parts is None else {name: entry for part in parts for name, entry in part.items()}

    def _write(self, path: Path, tag: str, step: int, state: dict[str, Any], meta: dict[str, Any]) -> None:
        """This rank's files of the save (rank 0 also the weights, meta.json and, under ZeRO 0-2, the EMA);
        collective under ZeRO-3."""
        self.engine.save(str(self.dir), tag)
        # Under ZeRO 0-2 the EMA is the same on every rank: written once (rank 0), not once per rank.
        own_ema = self.ema if self.env.is_main or self.engine.zero_stage == 3 else None
        rank_state = dict(state, rng=rng_state(), ema=own_ema.state_dict() if own_ema is not None else None)
        torch.save(rank_state, path / f"rank{self.env.rank:05d}.pt")
        weights = self.engine.full_state_dict(keep=self.env.is_main)  # collective under ZeRO-3
        ema_weights = None
        if own_ema is not None:  # ZeRO 0-2: only rank 0 swaps (a local copy); ZeRO-3: every rank, for the gather
            with own_ema.swapped():
                ema_weights = self.engine.full_state_dict(keep=self.env.is_main)
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
        # DeepSpeed's module weights, fp32 master, Adam's 2 moments, 2 .safetensors, one EMA: <= 7 fp32 copies
        params = sum(self.engine.local_numels())  # whatever the world size: replicated state is written once
        return 4 * params * 7, f"4 bytes x {params} parameters x 7 copies"

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
        if meta.get("config_hash") != config_hash and self.env.is_main:  # the same note on every rank: once
            print(f"[swat-dist] note: resuming {path} written with config {meta.get('config_hash')}, now {config_hash}")
        self.engine.load(str(path.parent), path.name)
        same = saved_world == self.env.world_size
        state = load_state(path / f"rank{self.env.rank if same else 0:05d}.pt")  # weights-only: data, no code
        if self.ema is not None:
            ema = state.get("ema") if same else None  # checkpoints before 2026-12 hold it in every rank file
            if ema is None:  # ZeRO 0-2: in rank 0's file alone; or another world size
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
    newest checkpoint that verifies with sha256 and broadcasts its choice, so the ranks cannot disagree.
    The hashing is split over the ranks (each its share of the files, :func:`.checkpoint_paths.shares`),
    the others serving rank 0's requests meanwhile: ~(total / ranks + largest file) read per rank, at
    0.5-1 GB/s each. A checkpoint of another model than ``model`` (``model.name``), or with a ``.pt``
    file that names anything but data (:func:`.safe_load.refusal`), is refused. Rank 0 says which
    checkpoint it continues from, in one line. Call before anything is built or written.
    """
    choice: Path | str | None
    if not env.is_main and collectives.world_size() > 1:
        choice = _serve_hashing(env.rank)
    else:
        choice = "rank 0 failed while choosing the checkpoint to resume from (its traceback says why)"
        try:
            choice = _choose(run_dir, resume, model, collectives.world_size())
        finally:  # also on an error: it ends the others' loop in _serve_hashing
            collectives.broadcast_object(("done", choice, None))
    if choice is None or isinstance(choice, Path):
        return choice
    raise ValueError(choice)


def _choose(run_dir: Path, resume: str, model: str, world: int) -> Path | str | None:
    """Rank 0: the checkpoint to resume from, or why none can be (a one-line message, raised on every rank)."""
    try:
        choice = resolve(run_dir, resume, hashes=lambda f, e: _verify_shared(f, e, world), report=_say)
        if choice is not None:
            check_model(choice, model)
            why = refusal(choice)  # before any rank loads a byte of it
            if why:
                raise ValueError(why)
            print(f"[checkpoint] resuming from {choice} (step {read_meta(choice)['step']})", flush=True)
        return choice
    except ValueError as err:  # raised on every rank by resume_point: rank 0 alone would leave the others waiting
        return str(err)


def _say(line: str) -> None:
    print(line, flush=True)


def _verify_shared(folder: Path, expected: dict[str, str], world: int) -> str | None:
    """Rank 0's :data:`.checkpoint_paths.Verify`: every rank checks its share of ``expected``; the first
    problem any rank found (by rank), or None. Collective: the other ranks are in :func:`_serve_hashing`."""
    plan = shares({name: (folder / name).stat().st_size for name in expected}, world)
    asks = [{name: expected[name] for name in share} for share in plan]
    collectives.broadcast_object(("verify", folder, asks))
    found = collectives.gather_object(_verify_safely(folder, asks[0]))
    return next((why for why in found or [] if why), None)


def _serve_hashing(rank: int) -> Path | str | None:
    """Ranks other than 0: verify the share rank 0 asks for until it sends its choice (a path, a message)."""
    while True:
        ask: tuple[str, Any, list[dict[str, str]]] = ("", None, [])
        kind, what, asks = collectives.broadcast_object(ask)
        if kind == "done" or what is None:
            return what
        collectives.gather_object(_verify_safely(what, asks[rank]))


def _verify_safely(folder: Path, expected: dict[str, str]) -> str | None:
    """:func:`.checkpoint_paths.verify_here`, an unreadable file a problem too: a rank that raised here
    would leave the others waiting in the gather."""
    try:
        return verify_here(folder, expected)
    except OSError as err:
        return f"not readable: {err}"  # OSError's text names the file
