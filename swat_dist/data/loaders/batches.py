"""What a loader worker makes of a batch key: the planned batch itself, from any :class:`Source`.

:class:`PlannedDataset` is the map-style dataset the loaders' torch ``DataLoader`` runs: its items are whole
batches, keyed by (epoch, sample ids, global position), so workers only decide who makes a batch. A
one-line ``ValueError`` met in a worker travels to the consumer as a value (:class:`Refused`) and is raised
there as it was (:func:`raising`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, cast

import torch
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from .encoded import EncodedSource, Planning, mix_seed, pack, read_sample
from .plan import PAD
from .seeds import sample_seed, seed_everything

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


class PlannedDataset(Dataset):
    """Map-style view whose items are whole batches: key = (epoch, sample ids, position), PAD = padding.

    The epoch travels in the key, not in the dataset, so persistent workers need no update between epochs.
    With a ``planner`` (training, ``data.augment_on: device``) items are (EncodedBatch, labels).
    """

    def __init__(self, source: Source, train: bool, seed: int, planner: Planning | None = None) -> None:
        self.source, self.train, self.seed, self.planner = source, train, seed, planner
        # a remote source prefetches from where its reader is (WdsSource over s3://): told once per batch
        self._reading: Callable[[int, int], None] | None = getattr(source, "reading", None)

    def __getitem__(self, key: Key) -> TrainBatch | Refused:
        try:
            if self.planner is not None:
                return self._encoded(key)
            return self._batch(key)
        except ValueError as err:  # a user error (one line): see Refused
            if get_worker_info() is None:
                raise
            return Refused(str(err))

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
        return stacked, stack_targets(targets, like_target)

    def __len__(self) -> int:  # never used for sampling: the batch sampler drives it
        return len(self.source)


class Refused:
    """A one-line ``ValueError`` met in a loader worker (a damaged shard, a deleted object), carried to the
    consumer as a value and raised there as it was: torch would re-raise it with the worker's traceback
    pasted into the message, and the user would see a traceback instead of the line naming the file."""

    def __init__(self, message: str) -> None:
        self.message = message


def raising(batches: Iterable[Any]) -> Iterator[Any]:
    for batch in batches:
        if isinstance(batch, Refused):
            raise ValueError(batch.message)
        yield batch


def stack_targets(targets: list[Any], like: Any) -> Tensor:
    """Labels -> int64 (B,), padding -1; masks -> (B, H, W), a padding sample's mask all -1 (never scored)."""
    if isinstance(like, Tensor):
        return torch.stack([t if t is not None else torch.full_like(like, PAD) for t in targets])
    return torch.tensor([t if t is not None else PAD for t in targets], dtype=torch.int64)
