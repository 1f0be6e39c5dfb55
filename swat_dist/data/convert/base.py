"""What the converter front (:mod:`.front`) and its writers (:mod:`.classify`, :mod:`.segment`) share: the
options a conversion is asked for, the record a writer fills, and the steps every writer takes through a
split - the seeded sample order, the progress bar and the ordered map over the decode workers (which
:mod:`.verify` checks files through as well).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ...progress import Progress, progress
from ..pixels.images import PIL_BOMB_PIXELS, ImageOptions
from ..sources.index import SplitInfo
from .scan import SPLITS

FORMATS = ("wds", "ffcv")
TASKS = ("classify", "segment")
FFCV_NO_MASKS = (
    "--format ffcv --task segment: not supported - FFCV has no field type that stores a mask losslessly "
    "and paired with its variable-sized image; use --format wds"
)
T = TypeVar("T")


@dataclass(frozen=True)
class ConvertOptions:
    fmt: str
    workers: int = 0  # decode processes; 0 = every core this process may use
    shard_bytes: int = 256 * 2**20  # wds: upper bound of a shard's size
    max_resolution: int = 512
    jpeg_quality: int = 90
    compress_probability: float = 1.0  # ffcv: share of images stored as JPEG (the rest raw pixels)
    strict: bool = False
    overwrite: bool = False
    seed: int = 0  # sample order in shards / .beton files
    max_pixels: int = PIL_BOMB_PIXELS  # larger source images are skipped (decompression-bomb guard)
    task: str = "classify"  # segment: an ADEChallengeData2016 layout -> image + mask samples
    num_classes: int = 150  # segment: classes the model predicts (ADE20K: 150)
    reduce_zero_label: bool = True  # segment: raw 0 = unlabelled -> ignore, raw l -> class l - 1
    # wds: called with each shard's path once it is closed (upload.py uploads it while the rest converts)
    on_shard: Callable[[Path], None] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        top = 254 if self.reduce_zero_label else 255  # raw labels must stay below 255, the ignore value
        checks = [
            (self.task in TASKS, f"task must be one of {', '.join(TASKS)}, got {self.task!r}"),
            (not (self.task == "segment" and self.fmt == "ffcv"), FFCV_NO_MASKS),
            (1 <= self.num_classes <= top, f"--num-classes must be in [1, {top}], got {self.num_classes}"),
            (self.fmt in FORMATS, f"format must be one of {', '.join(FORMATS)}, got {self.fmt!r}"),
            (self.workers >= 0, f"--workers must be >= 0 (0 = all cores), got {self.workers}"),
            (self.shard_bytes >= 2**14, f"--shard-size-mb must be >= 1/64 (16 KiB), got {self.shard_bytes} bytes"),
            (16 <= self.max_resolution <= 16384, f"--max-resolution must be in [16, 16384], got {self.max_resolution}"),
            (1 <= self.jpeg_quality <= 100, f"--jpeg-quality must be in [1, 100], got {self.jpeg_quality}"),
            (
                0 <= self.compress_probability <= 1,
                f"--compress-probability must be in [0, 1], got {self.compress_probability}",
            ),
            (self.max_pixels > 0, f"max_pixels must be positive, got {self.max_pixels}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def recorded(self) -> dict[str, Any]:
        """What shapes the output, saved in the index (not how the run was driven)."""
        if self.task == "segment":  # images keep their size: max_resolution plays no part
            keep = ["jpeg_quality", "seed", "max_pixels", "shard_bytes", "task", "num_classes", "reduce_zero_label"]
            return self._fields(keep)
        keep = ["max_resolution", "jpeg_quality", "seed", "max_pixels"]
        keep.append("shard_bytes" if self.fmt == "wds" else "compress_probability")
        return self._fields(keep)

    def _fields(self, keep: list[str]) -> dict[str, Any]:
        # in field order, as asdict gave them; not asdict itself: it deep-copies every field, on_shard's
        # uploader (its locks and thread) included
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in keep}

    def processes(self) -> int:
        return self.workers or cores()

    def image(self) -> ImageOptions:
        return ImageOptions(self.max_resolution, self.jpeg_quality, self.max_pixels)


@dataclass
class Written:
    splits: dict[str, SplitInfo] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: list[dict[str, str]] = field(default_factory=list)  # converted, but changed: {"path", "note"}


Mapper = Callable[[Callable[[Any], Any], list[Any]], Iterator[Any]]
# A writer: (scanned source, staging folder, options, ordered map, record to fill) -> None.
Writer = Callable[[Any, Path, ConvertOptions, Mapper, Written], None]


def cores() -> int:
    """The cores this process may use (a Slurm/cgroup allocation), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _batches(items: list[Any], size: int) -> Iterable[list[Any]]:
    return (items[i : i + size] for i in range(0, len(items), size))


@contextmanager
def ordered_map(workers: int) -> Iterator[Mapper]:
    """An ordered, lazy ``map`` over ``workers`` processes (in-process for one worker).

    ``Pool.imap`` alone reads its whole input at once and buffers results the consumer has not taken:
    for ImageNet that is every JPEG in memory whenever writing is slower than decoding. Two windows of
    ``4 x workers`` chunks in flight bound it (16 workers: <= 4,096 results, ~450 MB of 512 px JPEGs) and
    keep the workers busy: the next window is queued while the main process drains the older one.
    """
    if workers == 1:
        yield lambda fn, items: map(fn, items)
        return
    # fork: workers inherit the imported modules; spawn would re-import torch + timm in each (seconds)
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    pool = ctx.Pool(workers, initializer=_default_stop_signals)
    try:

        def imap(fn: Callable[[Any], Any], items: list[Any]) -> Iterator[Any]:
            chunk = max(1, min(32, len(items) // (workers * 8)))
            pending: deque[Iterator[Any]] = deque()
            for batch in _batches(items, workers * chunk * 4):
                pending.append(pool.imap(fn, batch, chunk))
                if len(pending) == 2:
                    yield from pending.popleft()
            while pending:
                yield from pending.popleft()

        yield imap
    except BaseException:
        pool.terminate()  # SIGTERM to each worker: what _default_stop_signals keeps deadly
        raise
    else:
        # close + join: workers leave on their sentinel. Pool's own __exit__ terminates them instead; under
        # load that once left a worker blocked on the task queue's lock and the parent joining it forever
        # (a CI run stuck 20 min in tests/data/test_bench.py).
        pool.close()
        pool.join()


def _default_stop_signals() -> None:
    """In a forked worker: SIGTERM ends it, as in a fresh process; SIGINT is ignored. A worker inherits its
    parent's Python handlers (a trainer's stop flag, submitit's SIGTERM bypass, a sweep's exit), with which
    ``Pool.terminate`` may not end it; Ctrl-C reaches the whole process group and is the parent's to handle
    (it then terminates the pool)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def shuffled(files: list[T], seed: int, split: str) -> list[tuple[int, T]]:
    """(position in the sorted list, file) in a seeded order; the position makes stable sample keys."""
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    return [(int(n), files[n]) for n in rng.permutation(len(files))]


def progress_bar(total: int, desc: str) -> Progress:
    """A bar on a terminal; off one (a Slurm log), a plain line at the start, every minute and at the end."""
    return progress(total, desc, unit="img", interval_s=60.0)
