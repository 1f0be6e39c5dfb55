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
import random
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from .encoded import EncodedSource, Planning, mix_seed, pack, read_sample
from .plan import (
    PAD,
    ShardOrder,
    TrainPlan,
    full_permutation,
    sample_position,
    shard_group_permutation,
    val_batches,
)

if TYPE_CHECKING:  # imported where used: loader mode never loads the device pipeline (torchvision.io, timm ops)
    from ..pixels.device_pipeline import CroppedBatch, EncodedBatch

Batch = tuple[Tensor, Tensor]
# what a train loader hands over: uint8 images (loader mode) or bytes + plans (device mode; FFCV's crops +
# plans), and labels
TrainBatch = tuple["Tensor | EncodedBatch | CroppedBatch", Tensor]
Key = tuple[int, list[int], int]  # (epoch, sample ids, the batch's global position in the epoch's order)


class Source(Protocol):
    """Random access to decoded, transformed samples."""

    def __len__(self) -> int: ...

    def load(self, index: int, train: bool) -> tuple[Tensor, Any]:
        """Sample ``index`` as (uint8 CHW image, label or int16 mask), augmented when ``train``."""
        ...


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of one sample in one epoch (independent of worker and rank)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def device_generator(device: torch.device) -> torch.Generator:
    """The default generator ``torch.rand(..., device=device)`` draws from (CPU, or that CUDA device's)."""
    if device.type == "cpu":
        return torch.default_generator
    if device.type != "cuda":
        raise ValueError(f"no default generator known for device {device}")
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.default_generators[index]


def seed_everything(value: int, device: torch.device | None = None) -> None:
    """Seed the three RNGs transforms draw from (timm uses ``random``, torchvision torch, some numpy), and
    ``device``'s generator: drop-path, dropout and erasing noise on a GPU draw from the CUDA generator,
    which starts from the same default seed on every rank."""
    random.seed(value)
    np.random.seed(value % 2**32)
    # Not torch.manual_seed: it would also queue a lazy seeding of every CUDA device that records a
    # formatted stack trace on every call (3 ms per sample here - a third of the loader's time).
    torch.default_generator.manual_seed(value)
    if device is not None and device.type != "cpu":
        device_generator(device).manual_seed(value)  # one device's generator: no lazy call, no trace


class _PlannedDataset(Dataset):
    """Map-style view whose items are whole batches: key = (epoch, sample ids, position), PAD = padding.

    The epoch travels in the key, not in the dataset, so persistent workers need no update between epochs.
    With a ``planner`` (training, ``data.augment_on: device``) items are (EncodedBatch, labels).
    """

    def __init__(self, source: Source, train: bool, seed: int, planner: Planning | None = None) -> None:
        self.source, self.train, self.seed, self.planner = source, train, seed, planner
        # a remote source prefetches from where its reader is (WdsSource over s3://): told once per batch
        self._reading: Callable[[int, int], None] | None = getattr(source, "reading", None)

    def __getitem__(self, key: Key) -> TrainBatch | _Refused:
        try:
            if self.planner is not None:
                return self._encoded(key)
            return self._batch(key)
        except ValueError as err:  # a user error (one line): see _Refused
            if get_worker_info() is None:
                raise
            return _Refused(str(err))

    def _tell_reader(self, epoch: int, ids: list[int]) -> None:
        first = next((i for i in ids if i != PAD), None)
        if self._reading is not None and first is not None:
            self._reading(epoch, first)

    def _encoded(self, key: Key) -> tuple[EncodedBatch, Tensor]:
        """Bytes (or worker-decoded pixels) and the batch's plan; training batches hold no padding."""
        from ..pixels.device_pipeline import EncodedBatch

        epoch, ids, position = key
        assert self.planner is not None
        self._tell_reader(epoch, ids)
        source = cast(EncodedSource, self.source)  # TrainLoader checked it has load_encoded
        jpegs: list[bytes] = []
        decoded: dict[int, Tensor] = {}
        plans: list[Any] = []
        labels: list[int] = []
        for at, i in enumerate(ids):
            jpeg, pixels, (width, height), label = read_sample(source, i)
            seed_everything(sample_seed(self.seed, epoch, i))  # the state timm's transform starts from
            plans.append(self.planner.sample(width, height))
            jpegs.append(jpeg)
            labels.append(label)
            if pixels is not None:
                decoded[at] = pixels
        plan = self.planner.batch(plans, mix_seed(self.seed, epoch, position))
        batch = EncodedBatch(jpegs=pack(jpegs), decoded=decoded, plan=plan)
        return batch, torch.tensor(labels, dtype=torch.int64)

    def _batch(self, key: Key) -> Batch:
        epoch, ids, _ = key
        self._tell_reader(epoch, ids)
        images: list[Tensor | None] = []
        targets: list[Any] = []  # class labels (int), or masks (Tensor) for segmentation
        for i in ids:
            if i == PAD:
                images.append(None)
                targets.append(None)
                continue
            if self.train:
                seed_everything(sample_seed(self.seed, epoch, i))
            img, target = self.source.load(i, self.train)
            images.append(img)
            targets.append(target)
        real = next((k for k, im in enumerate(images) if im is not None), None)
        # an all-padding batch takes its shapes from the source's first sample
        like_image, like_target = self.source.load(0, False) if real is None else (images[real], targets[real])
        assert like_image is not None
        stacked = torch.stack([im if im is not None else torch.zeros_like(like_image) for im in images])
        return stacked, _stack_targets(targets, like_target)

    def __len__(self) -> int:  # never used for sampling: the batch sampler drives it
        return len(self.source)


class _Refused:
    """A one-line ``ValueError`` met in a loader worker (a damaged shard, a deleted object), carried to the
    consumer as a value and raised there as it was: torch would re-raise it with the worker's traceback
    pasted into the message, and the user would see a traceback instead of the line naming the file."""

    def __init__(self, message: str) -> None:
        self.message = message


def _raising(batches: Iterable[Any]) -> Iterator[Any]:
    for batch in batches:
        if isinstance(batch, _Refused):
            raise ValueError(batch.message)
        yield batch


def _stack_targets(targets: list[Any], like: Any) -> Tensor:
    """Labels -> int64 (B,), padding -1; masks -> (B, H, W), a padding sample's mask all -1 (never scored)."""
    if isinstance(like, Tensor):
        return torch.stack([t if t is not None else torch.full_like(like, PAD) for t in targets])
    return torch.tensor([t if t is not None else PAD for t in targets], dtype=torch.int64)


class _BatchList(Sampler[Key]):
    """The keys of the batches still owed: ``batches()`` -> (epoch, sample ids per batch, their positions)."""

    def __init__(self, batches: Callable[[], tuple[int, list[np.ndarray], list[int]]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[Key]:
        epoch, batches, positions = self.batches()
        return iter([(epoch, b.tolist(), p) for b, p in zip(batches, positions, strict=True)])

    def __len__(self) -> int:
        return len(self.batches()[1])


def _data_loader(dataset: _PlannedDataset, sampler: _BatchList, workers: int) -> DataLoader:
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
        self._dataset = _PlannedDataset(source, train=True, seed=seed, planner=planner)
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
        for batch in _raising(self._loader):
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
        self._loader = _data_loader(_PlannedDataset(source, False, 0), keys, workers)

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[Batch]:
        return _raising(self._loader)

    def close(self) -> None:
        """Stop the persistent workers now (otherwise at garbage collection)."""
        self._loader._iterator = None
