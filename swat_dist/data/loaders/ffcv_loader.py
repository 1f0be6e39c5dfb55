"""``data.format: ffcv``: FFCV's compiled, threaded decoding with our plan, seeds and resume.

What FFCV does: reads ``<split>.beton`` through the page cache and decodes, crops and resizes batches in
numba threads (``data.workers`` of them, at most the core count), ahead of the consumer. What we add:

- **Order** - FFCV's ``Loader`` takes a custom traversal order; ours (``ffcv._PlanOrder``) is the rest of
  this rank's planned epoch (:mod:`.plan`), so equal steps per rank, exactly-once and mid-epoch resume
  are the same as with every other backend, whatever the thread count.
- **Crop and flip** - a pure function of (seed, epoch, sample id) (:mod:`..pixels.ffcv_crop`), computed per batch
  in a Python stage and applied by compiled code; FFCV's own crop draws from unseeded per-thread RNGs.
- **RandAugment / colour jitter** - timm's own PIL ops (FFCV has none), applied here per sample with the
  per-sample seed the other backends use, in ``workers`` forked processes (in-process for 0). Not in a
  thread: timm draws from the global ``random`` / numpy / torch RNGs, which a thread would race with the
  trainer's own draws (mixup, erasing). Batches travel to them and back by pickle (~10 MB per 64 images).
- **Device mode** (``data.augment_on: device``, a ``planner``) - FFCV still decodes, crops, resizes and flips;
  the colour stage is not run here but planned: each sample's RandAugment and erasing draws, made from the
  state loader mode's colour stage starts from, and the batch's mixup/cutmix, go with the crops as a
  :class:`~swat_dist.data.pixels.device_pipeline.CroppedBatch` for the device to execute. The planning runs
  in the consumer (global RNGs; ~0.07 ms per image measured), where the colour processes would otherwise run.
- **Val** - resize + centre crop from crop_pct, folded into one crop-and-resize; :func:`.plan.val_batches`
  with :data:`.plan.PAD` entries as in :class:`.loader.ValLoader` (decoded as sample 0, then blanked).

Batches are ``(uint8 (B, 3, H, W), int64 (B,))`` tensors that own their memory (FFCV reuses its buffers).
Interpolation is FFCV's OpenCV INTER_AREA resize for train and eval (``data.train_interpolation`` and
``data.interpolation`` do not apply); scale, ratio and hflip do.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from functools import partial
from multiprocessing.pool import Pool
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch
from PIL import Image

from ..pixels.ffcv_crop import centre_crop, random_resized_crop, sample_keys
from ..pixels.transforms import Colour
from .batches import Batch, TrainBatch
from .encoded import Planning, mix_seed
from .loader import TrainLoader, ValLoader
from .plan import PAD, sample_position, val_batches
from .seeds import sample_seed, seed_everything

if TYPE_CHECKING:  # loader mode never loads the device pipeline
    from ..pixels.device_pipeline import CroppedBatch
    from ..pixels.device_plan import BatchPlan


class BetonSplit:
    """One split of a converted FFCV dataset: its path, sample count, labels and the dataset's classes."""

    def __init__(self, root: str | Path, split: str) -> None:
        from ..sources.ffcv import open_beton
        from ..sources.index import read_index

        index = read_index(root)
        if index.format != "ffcv":
            raise ValueError(f"{root}: a {index.format} dataset, not ffcv (data.format must match)")
        if split not in index.splits:
            raise ValueError(f"{root}: no {split} split in index.json")
        self.path = str(Path(root) / index.splits[split].files[0].path)
        if not Path(self.path).is_file():
            raise FileNotFoundError(f"{self.path}: missing (index.json lists it; run swat-dist data verify)")
        try:
            beton = open_beton(self.path)
        except Exception as err:  # FFCV's reader fails with asserts and index errors on a damaged file
            raise ValueError(f"{self.path}: not a readable .beton ({err.__class__.__name__}: {err})") from None
        if beton.num_samples != index.splits[split].samples:
            raise ValueError(f"{self.path}: {beton.num_samples} samples, index.json says {index.splits[split].samples}")
        self.classes, self.labels = index.classes, beton.labels

    def __len__(self) -> int:
        return len(self.labels)


class FfcvTrainLoader(TrainLoader):
    """:class:`.loader.TrainLoader`'s contract (plan, ``set_epoch``, ``state_dict``) over FFCV.

    The plan, step counting and state come from :class:`TrainLoader`; only how batches are made differs,
    so ``__init__`` sets the fields those methods read instead of building a torch DataLoader.
    """

    def __init__(
        self,
        split: BetonSplit,
        *,
        world_size: int,
        rank: int,
        batch_size: int,
        size: int,
        workers: int = 0,
        seed: int = 0,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        colour: Colour | None = None,
        planner: Planning | None = None,
    ) -> None:
        """``planner`` (``data.augment_on: device``): hand over FFCV's crops with each sample's plan for the
        rest of the recipe (:class:`~swat_dist.data.pixels.device_pipeline.CroppedBatch`) instead of
        running ``colour`` here."""
        from ..sources.ffcv import BetonStream

        if planner is not None and colour is not None:
            raise ValueError("the colour stage runs on the device with a planner: pass one of colour, planner")

        # the plan only needs len(split); FFCV does the loading, so no DataLoader (TrainLoader.__init__)
        self._init_plan(split, world_size, rank, batch_size, seed, shard_sizes=None, shard_group=1)  # type: ignore[arg-type]
        self._crop_epoch = 0  # the epoch of the batches FFCV is making (its thread reads it)
        self._crop = partial(random_resized_crop, scale=scale, ratio=ratio, hflip=hflip)
        self._colour, self._planner = colour, planner
        self._stream = BetonStream(split.path, size, batch_size, workers, self._ids, self._params)
        # timm's colour ops are PIL code on global RNGs: run them in `workers` processes, as the other
        # backends do. Forked at construction, before this loader's FFCV thread starts; the children run
        # only PIL/numpy code and hold `colour` from the fork.
        self._pool: Pool | None = None
        self._workers = workers
        if colour is not None and workers > 0:
            ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
            self._pool = ctx.Pool(workers, initializer=_set_worker_colour, initargs=(colour,))

    def _ids(self) -> np.ndarray:
        batches = self.plan().batches(self.step)
        return np.concatenate(batches) if batches else np.zeros(0, np.int64)

    def _params(self, ids: np.ndarray, heights: np.ndarray, widths: np.ndarray) -> np.ndarray:
        return self._crop(sample_keys(self.seed, self._crop_epoch, ids), heights, widths)

    def _colour_batch(self, images: np.ndarray, ids: np.ndarray, epoch: int) -> np.ndarray:
        if self._pool is None:
            return _colour_chunk((self._colour, self.seed, epoch, ids, images))
        # contiguous chunks, one per process; each sample seeded by itself, so the split changes nothing
        parts = np.array_split(np.arange(len(ids)), self._workers)
        tasks = [(None, self.seed, epoch, ids[p], images[p]) for p in parts if len(p)]
        from ..sources.ffcv import host_batch

        # the processes send copies back: gather them into a page-locked batch like the crop stage's
        return np.concatenate(self._pool.map(_colour_chunk, tasks), out=host_batch(images.shape))

    def _planned(self, images: torch.Tensor, ids: np.ndarray, epoch: int) -> CroppedBatch:
        """FFCV's crops with the plan of the rest of the recipe: each sample's draws from the state its
        colour stage starts from in loader mode; mixup/cutmix from the micro-batch's global position."""
        from ..pixels.device_pipeline import CroppedBatch

        assert self._planner is not None
        plans = []
        for i in ids.tolist():
            seed_everything(sample_seed(self.seed, epoch, i))
            plans.append(self._planner.cropped())
        position = sample_position(self.step, self.world_size, self.rank, self.batch_size)
        # the images are page-locked already (host_batch); DataLoader's pin thread does this for EncodedBatch
        return CroppedBatch(images, _host(self._planner.batch(plans, mix_seed(self.seed, epoch, position))))

    def __iter__(self) -> Iterator[TrainBatch]:
        epoch, planned = self.epoch, self.plan().batches(self.step)
        if planned:
            self._crop_epoch = epoch
            stream = self._stream.epoch()
            try:
                for ids, (images, labels) in zip(planned, stream, strict=True):
                    if self._colour is not None:
                        images = self._colour_batch(images, ids, epoch)
                    x = torch.from_numpy(images)  # a fresh array (ffcv._CropStage), not a reused buffer
                    out = self._planned(x, ids, epoch) if self._planner is not None else x
                    self.step += 1  # counted when handed over, as in TrainLoader
                    yield out, _labels(labels)
            finally:
                stream.close()  # stops FFCV's thread if we stopped early
        self.epoch, self.step = self.epoch + 1, 0

    def close(self) -> None:
        """Stop the colour processes (FFCV's thread ends with each epoch, numba's pool with the process)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None


class FfcvValLoader(ValLoader):
    """Every sample exactly once across ranks (:func:`.plan.val_batches`); padding has label -1."""

    def __init__(
        self, split: BetonSplit, *, world_size: int, rank: int, batch_size: int, size: int, crop_pct: float,
        workers: int = 0,
    ) -> None:  # fmt: skip
        from ..sources.ffcv import BetonStream

        self.num_samples = len(split)
        self._batches = val_batches(self.num_samples, world_size, rank, batch_size)
        order = np.concatenate(self._batches)
        order = np.where(order == PAD, 0, order)  # FFCV needs a real record; blanked below
        params = partial(_centre_params, size=size, crop_pct=crop_pct)
        self._stream = BetonStream(split.path, size, batch_size, workers, lambda: order, params)

    def __iter__(self) -> Iterator[Batch]:
        stream = self._stream.epoch()
        try:
            for ids, (images, labels) in zip(self._batches, stream, strict=True):
                x = torch.from_numpy(images)
                y = _labels(labels)
                pad = torch.from_numpy(ids == PAD)
                x[pad], y[pad] = 0, -1
                yield x, y
        finally:
            stream.close()

    def close(self) -> None:
        """Nothing to stop (see :meth:`FfcvTrainLoader.close`)."""


_worker_colour: Colour | None = None  # the colour stage of a pool process (set once at its start)


def _set_worker_colour(colour: Colour) -> None:
    global _worker_colour
    _worker_colour = colour


def _colour_chunk(task: tuple[Colour | None, int, int, np.ndarray, np.ndarray]) -> np.ndarray:
    """Apply the colour stage to CHW images in place, each seeded by (seed, epoch, sample id)."""
    colour, seed, epoch, ids, images = task
    colour = colour or _worker_colour
    assert colour is not None
    for k, i in enumerate(ids.tolist()):
        seed_everything(sample_seed(seed, epoch, i))
        images[k] = np.asarray(colour(Image.fromarray(images[k].transpose(1, 2, 0)))).transpose(2, 0, 1)
    return images


def _labels(labels: np.ndarray) -> torch.Tensor:
    """int64 labels in memory of their own (FFCV reuses its buffer), page-locked where a GPU will copy them."""
    return _host(torch.from_numpy(labels.astype(np.int64)))


_Pinnable = TypeVar("_Pinnable", torch.Tensor, "BatchPlan")


def _host(x: _Pinnable) -> _Pinnable:
    """``x`` page-locked where a GPU will copy it: from pageable memory each copy to a GPU waits for the
    stream first (a host sync per tensor)."""
    return x.pin_memory() if torch.cuda.is_available() else x


def _centre_params(ids: np.ndarray, heights: np.ndarray, widths: np.ndarray, size: int, crop_pct: float) -> np.ndarray:
    return centre_crop(heights, widths, size, crop_pct)
