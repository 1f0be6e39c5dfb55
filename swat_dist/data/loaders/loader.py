"""Loaders over indexed sources: a :mod:`plan` turned into batches, with exact mid-epoch resume.

A *source* is anything that can load sample ``i`` (folder images, WebDataset members by offset,
synthetic tensors). The loaders run a torch ``DataLoader`` whose batch sampler replays the plan, so
workers only decide who decodes a batch, never which samples it holds; augmentation randomness is
seeded per sample from (seed, epoch, sample id), so it is the same for any worker count and after a
resume. FFCV keeps its own compiled pipeline and uses the same plan through a traversal order.

Batches are ``(images uint8 (B, 3, H, W), labels int64 (B,))``, or masks int16 (B, H, W) for
segmentation; normalisation, random erasing and mixup happen on the device
(:mod:`swat_dist.data.pixels.transforms`, :mod:`swat_dist.tasks`), where they cost nothing next to the model.
With a planner (``data.augment_on: device``), training batches are ``(EncodedBatch, labels)`` instead:
bytes and each sample's augmentation plan, for the device to decode and execute (:mod:`.encoded`).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from .batches import Batch, Key, PlannedDataset, Source, TrainBatch, raising
from .encoded import Planning
from .plan import ShardOrder, TrainPlan, full_permutation, sample_position, shard_group_permutation, val_batches


class _BatchList(Sampler[Key]):
    """The keys of the batches still owed: ``batches()`` -> (epoch, sample ids per batch, their positions)."""

    def __init__(self, batches: Callable[[], tuple[int, list[np.ndarray], list[int]]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[Key]:
        epoch, batches, positions = self.batches()
        return iter([(epoch, b.tolist(), p) for b, p in zip(batches, positions, strict=True)])

    def __len__(self) -> int:
        return len(self.batches()[1])


def _data_loader(dataset: PlannedDataset, sampler: _BatchList, workers: int) -> DataLoader:
    # batch_size=None: each dataset item is already a batch; workers > 0 keep the plan's order.
    # Fork explicitly where it exists (PyTorch's own default on Linux): a launcher may have made "spawn"
    # the process default (torch.multiprocessing.spawn does in its children), and spawned workers
    # re-import torch and the models - seconds per worker. Persistent: started once, not every epoch.
    fork = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    return DataLoader(
        dataset,
        sampler=sampler,
        batch_size=None,
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
        multiprocessing_context=fork if workers > 0 else None,
        # page-locked batches on a GPU machine: the trainer's .to(device, non_blocking=True) is then a real
        # asynchronous copy (from pageable memory it waits); costs one host copy per batch in the pin thread
        # (an EncodedBatch pins itself: the pin thread calls its pin_memory())
        pin_memory=torch.cuda.is_available(),
    )


class TrainLoader:
    """One rank's training batches: ``set_epoch(e)`` then iterate; ``state_dict`` resumes mid-epoch."""

    def __init__(
        self,
        source: Source,
        *,
        world_size: int,
        rank: int,
        batch_size: int,
        workers: int = 0,
        seed: int = 0,
        shard_sizes: list[int] | None = None,
        shard_group: int = 8,
        planner: Planning | None = None,
    ) -> None:
        """``planner``: hand over bytes and plans instead of augmented images (``data.augment_on: device``;
        the source must have ``load_encoded``)."""
        if planner is not None and not hasattr(source, "load_encoded"):
            raise ValueError(
                f"{type(source).__name__} cannot hand over encoded images (augment_on device: folder, wds)"
            )
        self._init_plan(source, world_size, rank, batch_size, seed, shard_sizes, shard_group)
        follow = getattr(source, "follow", None)
        if follow is not None and shard_sizes is not None:  # before the workers fork: they inherit it
            follow(ShardOrder(len(shard_sizes), seed))
        self._dataset = PlannedDataset(source, train=True, seed=seed, planner=planner)
        self._loader = _data_loader(self._dataset, _BatchList(self._remaining), workers)

    def _init_plan(
        self, source: Source, world_size: int, rank: int, batch_size: int, seed: int,
        shard_sizes: list[int] | None, shard_group: int,
    ) -> None:  # fmt: skip
        """The fields the plan, the step count and the state read (all a loader making its own batches needs)."""
        self.source, self.world_size, self.rank, self.batch_size = source, world_size, rank, batch_size
        self.seed, self.shard_sizes, self.shard_group = seed, shard_sizes, shard_group
        self.epoch, self.step = 0, 0

    def plan(self, epoch: int | None = None) -> TrainPlan:
        epoch = self.epoch if epoch is None else epoch
        if self.shard_sizes is None:
            order = full_permutation(len(self.source), self.seed, epoch)
        else:  # sharded formats read a few shards at a time (see plan.shard_group_permutation)
            order = shard_group_permutation(self.shard_sizes, self.seed, epoch, self.shard_group)
        return TrainPlan(order, self.world_size, self.rank, self.batch_size)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.source) // (self.world_size * self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first step (a resumed loader keeps its step for its own epoch)."""
        if epoch != self.epoch:
            self.epoch, self.step = epoch, 0

    def _remaining(self) -> tuple[int, list[np.ndarray], list[int]]:
        plan = self.plan()
        steps = range(self.step, plan.steps)
        positions = [sample_position(s, self.world_size, self.rank, self.batch_size) for s in steps]
        return self.epoch, plan.batches(self.step), positions

    def __iter__(self) -> Iterator[TrainBatch]:
        for batch in raising(self._loader):
            self.step += 1  # counted when handed over, so a checkpoint after this batch skips it
            yield batch
        self.epoch, self.step = self.epoch + 1, 0

    def __len__(self) -> int:
        return self.steps_per_epoch - self.step

    def close(self) -> None:
        """Stop the persistent workers now (otherwise at garbage collection)."""
        self._loader._iterator = None  # DataLoader shuts its worker pool down when the iterator goes

    def state_dict(self) -> dict[str, Any]:
        return dict(epoch=self.epoch, step=self.step, seed=self.seed, global_batch=self.world_size * self.batch_size)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` stopped; the world size may differ if the global batch is the same."""
        if state["seed"] != self.seed:
            raise ValueError(f"loader state has seed {state['seed']}, this loader {self.seed}: the order would change")
        if state["global_batch"] != self.world_size * self.batch_size:
            raise ValueError(
                f"loader state was saved with global batch {state['global_batch']}, now "
                f"{self.world_size * self.batch_size}: resume mid-epoch needs the same global batch "
                "(change batch size per rank so ranks x batch stays equal, or resume at an epoch boundary)"
            )
        self.epoch, self.step = int(state["epoch"]), int(state["step"])


class ValLoader:
    """One rank's validation batches: every sample exactly once across ranks; padding has label -1."""

    def __init__(self, source: Source, *, world_size: int, rank: int, batch_size: int, workers: int = 0) -> None:
        self.num_samples = len(source)
        self._batches = val_batches(self.num_samples, world_size, rank, batch_size)
        keys = _BatchList(lambda: (0, self._batches, [0] * len(self._batches)))
        self._loader = _data_loader(PlannedDataset(source, False, 0), keys, workers)

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[Batch]:
        return raising(self._loader)

    def close(self) -> None:
        """Stop the persistent workers now (otherwise at garbage collection)."""
        self._loader._iterator = None
