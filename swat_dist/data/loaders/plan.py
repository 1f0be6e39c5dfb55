"""Which sample goes to which rank at which step: one plan shared by every backend.

Training. Each epoch has a global order: a permutation that depends only on (seed, epoch). Step ``s``
takes the global batch ``order[s*W*B : (s+1)*W*B]`` and rank ``r`` gets its ``r``-th slice of ``B``.
So every rank gets the same number of steps (no DDP hang), no sample repeats within an epoch, the
``n mod (W*B)`` samples left over are dropped (a different set every epoch), and the order is a
function of (seed, epoch) alone - not of the number of loader workers, which only decide who decodes
a batch. Resuming at step ``s`` replays exactly the remaining batches. The global batches do not depend
on ``W`` either as long as ``W*B`` stays the same, which is what makes resuming on another world size
exact.

Sharded formats (WebDataset) use a *shard-group* permutation: shards are shuffled, taken ``group`` at a
time, and samples are shuffled within each group. Every batch then reads from at most a few shards
(sequential-ish I/O), and the order is still a pure function of (seed, epoch).

Validation. Samples are split into contiguous per-rank ranges differing by at most one sample; each
sample is evaluated exactly once. Ranks with fewer samples get padding entries (index -1) in their
last batch, so all ranks run the same number of forward passes (ZeRO-3 gathers parameters
collectively in every forward); the evaluator ignores padding and reports the real count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD = -1  # index of a padding entry in a validation batch


def _rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64([seed, epoch]))


def full_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """A uniform permutation of ``range(n)`` depending only on (seed, epoch)."""
    return _rng(seed, epoch).permutation(n)


def shard_group_permutation(shard_sizes: list[int], seed: int, epoch: int, group: int) -> np.ndarray:
    """Shuffle shards, then shuffle samples within each run of ``group`` consecutive shuffled shards.

    Sample ids are global: shard ``k`` holds ids ``starts[k] .. starts[k] + shard_sizes[k] - 1``.
    """
    if group < 1:
        raise ValueError(f"shard group must be >= 1, got {group}")
    rng = _rng(seed, epoch)
    starts = np.concatenate([[0], np.cumsum(shard_sizes)[:-1]]).astype(np.int64)
    shards = rng.permutation(len(shard_sizes))  # the first draw: shard_order repeats it
    parts = []
    for i in range(0, len(shards), group):
        ids = np.concatenate([np.arange(starts[k], starts[k] + shard_sizes[k]) for k in shards[i : i + group]])
        parts.append(rng.permutation(ids))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class ShardOrder:
    """Epoch -> the shard ids of :func:`shard_group_permutation`'s groups, group after group (in the order it
    draws them; within a group the samples, so the first reads, are shuffled): what a remote source
    prefetches, without building the sample order. Picklable, for loader workers."""

    shards: int
    seed: int

    def __call__(self, epoch: int) -> list[int]:
        return _rng(self.seed, epoch).permutation(self.shards).tolist()


def sample_position(step: int, world_size: int, rank: int, batch_size: int) -> int:
    """Where ``rank``'s batch at ``step`` starts in the epoch's global order: micro-step after micro-step, rank
    after rank. The same on every layout of one global batch with the same micro-batch: 2 ranks x 4 at step s
    hand out what 1 rank x 4 with accumulation 2 does at steps 2s and 2s + 1 (the trainer seeds its device
    noise from it)."""
    return (step * world_size + rank) * batch_size


@dataclass(frozen=True)
class TrainPlan:
    """The training batches of one rank in one epoch."""

    order: np.ndarray  # the epoch's global order
    world_size: int
    rank: int
    batch_size: int

    @property
    def steps(self) -> int:
        return len(self.order) // (self.world_size * self.batch_size)

    def batch(self, step: int) -> np.ndarray:
        """Sample ids of this rank's batch at ``step`` (0 <= step < steps)."""
        if not 0 <= step < self.steps:
            raise IndexError(f"step {step} outside 0..{self.steps - 1}")
        start = sample_position(step, self.world_size, self.rank, self.batch_size)
        return self.order[start : start + self.batch_size]

    def batches(self, start_step: int = 0) -> list[np.ndarray]:
        """This rank's batches from ``start_step`` to the end of the epoch (what a resumed job still owes)."""
        return [self.batch(s) for s in range(start_step, self.steps)]


def val_range(n: int, world_size: int, rank: int) -> range:
    """This rank's contiguous share of ``range(n)``; shares differ by at most one sample."""
    return range(rank * n // world_size, (rank + 1) * n // world_size)


def val_steps(n: int, world_size: int, batch_size: int) -> int:
    """Forward passes every rank runs: enough for the largest share."""
    largest = -(-n // world_size)
    return -(-largest // batch_size)


def val_batches(n: int, world_size: int, rank: int, batch_size: int) -> list[np.ndarray]:
    """This rank's validation batches, all ranks the same count; short ranks padded with :data:`PAD`."""
    ids = np.arange(val_range(n, world_size, rank).start, val_range(n, world_size, rank).stop)
    total = val_steps(n, world_size, batch_size) * batch_size
    padded = np.concatenate([ids, np.full(total - len(ids), PAD, dtype=np.int64)])
    # Padding only ever fills the tail; a batch made only of padding still runs (for the collectives).
    return [padded[i : i + batch_size] for i in range(0, total, batch_size)]


@dataclass(frozen=True)
class LayoutReport:
    train_samples: int
    val_samples: int
    world_size: int
    batch_size: int
    workers: int
    train_steps: int
    train_dropped: int
    val_steps: int
    val_per_rank: tuple[int, ...]


def check_layout(train_samples: int, val_samples: int, world_size: int, batch_size: int, workers: int) -> LayoutReport:
    """Steps per rank for a layout, or a one-line ``ValueError`` when the layout cannot work."""
    for name, value in (("world size", world_size), ("batch size", batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    global_batch = world_size * batch_size
    steps = train_samples // global_batch
    if steps == 0:
        raise ValueError(
            f"{train_samples} training samples cannot fill one global batch of {global_batch} "
            f"({world_size} ranks x {batch_size}): every rank would get 0 steps"
        )
    return LayoutReport(
        train_samples=train_samples,
        val_samples=val_samples,
        world_size=world_size,
        batch_size=batch_size,
        workers=workers,
        train_steps=steps,
        train_dropped=train_samples - steps * global_batch,
        val_steps=val_steps(val_samples, world_size, batch_size),
        val_per_rank=tuple(len(val_range(val_samples, world_size, r)) for r in range(world_size)),
    )
