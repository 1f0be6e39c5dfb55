"""``swat-dist bench loader``: images/s of each loader backend on the same data, beside a decode ceiling.

All figures come from one run on the same cores, so their ratios are meaningful even on a noisy machine.
The data: synthetic 256 px JPEGs (``data synthetic``), converted to WebDataset and FFCV (all JPEG), read
by each backend with ``workers`` loader processes (FFCV: threads) at batch 64: "crop" = random-resized-
crop 224 + flip (what FFCV's pipeline does), "recipe" = crop + RandAugment m9 (the SWAT/DeiT recipe;
erasing and mixup run on the device). The ceiling is plain JPEG decoding of the same files by the same
number of processes. FFCV's numba compilation (10-30 s per pipeline) falls in the untimed warm-up epoch.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import platform
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from statistics import median

from PIL import Image

from .convert.base import ConvertOptions
from .convert.front import convert
from .loaders.batches import Source
from .loaders.loader import TrainLoader
from .pixels.transforms import colour_transform, eval_transform, train_transform
from .sets.synthetic import write_synthetic
from .sources.folder import FolderSource
from .sources.wds import WdsSource

RECIPES = {"crop": None, "recipe": "rand-m9-mstd0.5-inc1"}


def _decode(path: str) -> int:
    with Image.open(io.BytesIO(Path(path).read_bytes())) as img:
        img.draft(None, None)  # full-size decode (no reduced-scale shortcut)
        return img.convert("RGB").size[0]


def decode_ceiling(paths: list[str], workers: int) -> float:
    """Images/s of read + full JPEG decode with ``workers`` processes (no resize, no batching)."""
    start = time.perf_counter()
    if workers <= 1:
        for p in paths:
            _decode(p)
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for _ in pool.imap_unordered(_decode, paths, chunksize=16):
                pass
    return len(paths) / (time.perf_counter() - start)


def loader_rate(
    source: Source | TrainLoader, workers: int, batch: int, epochs: int = 2, shard_sizes: list[int] | None = None
) -> float:
    """Steady images/s: the first epoch warms workers, the page cache (and FFCV's JIT); the rest are timed.

    ``source`` may be a ready loader (FFCV's, built once: a new one would compile its pipeline again).
    """
    if isinstance(source, TrainLoader):
        loader = source
    else:
        loader = TrainLoader(source, world_size=1, rank=0, batch_size=batch, workers=workers, shard_sizes=shard_sizes)
    for _ in loader:  # warm-up epoch
        pass
    start, images = time.perf_counter(), 0
    for _ in range(epochs - 1):
        for _, y in loader:
            images += len(y)
    rate = images / (time.perf_counter() - start)
    loader.close()
    return rate


def prepare(root: Path, images: int, size: int) -> tuple[Path, Path, Path]:
    """Synthetic folder and its WebDataset and FFCV conversions under ``root`` (reused when already there)."""
    folder, wds, ffcv = root / "folder", root / "wds", root / "ffcv"
    write_synthetic(folder, classes=10, images=images, size=size, val_images=10, seed=0)
    convert(folder, wds, ConvertOptions(fmt="wds", max_resolution=size, shard_bytes=16 * 2**20))
    convert(folder, ffcv, ConvertOptions(fmt="ffcv", max_resolution=size, compress_probability=1.0))
    return folder, wds, ffcv


Row = tuple[str, float, float]  # name, median images/s, median per-round ratio to the folder loader


def run(
    root: Path, images: int, workers: int, batch: int, rounds: int = 3, timed_epochs: int = 2, size: int = 256,
    crop: int = 224,
) -> list[Row]:  # fmt: skip
    """Every backend, ``rounds`` alternating rounds of ``timed_epochs`` timed epochs each.

    Each row's ratio is paired: a backend's rate divided by the folder loader's (same work: crop rows by
    folder crop, recipe rows by folder recipe; the ceiling by folder crop) *in the same round*, then the
    median over rounds. On a shared machine a burst of other work slows one round of both backends
    alike, so the paired median is far steadier than a ratio of bests (which a quiet second decides).
    """
    from .loaders.ffcv_loader import BetonSplit, FfcvTrainLoader

    folder, wds, ffcv = prepare(root, images, size)
    paths = sorted(str(p) for p in (folder / "train").rglob("*.jpg"))
    eval_tf = eval_transform(crop, 1.0)
    rows: list[Row] = []
    for label, aa in RECIPES.items():
        tf = train_transform(crop, auto_augment=aa, color_jitter=0.0)
        ffcv_loader = FfcvTrainLoader(
            BetonSplit(ffcv, "train"), world_size=1, rank=0, batch_size=batch, size=crop, workers=workers,
            colour=colour_transform(crop, aa, 0.0),
        )  # fmt: skip
        sources: list[tuple[str, Source | TrainLoader]] = [
            ("folder", FolderSource(folder, "train", tf, eval_tf)),
            ("wds", WdsSource(wds, "train", tf, eval_tf)),
            ("ffcv", ffcv_loader),
        ]
        rates: dict[str, list[float]] = {name: [] for name, _ in sources}
        ceiling: list[float] = []
        for _ in range(rounds):
            if label == "crop":
                ceiling.append(decode_ceiling(paths, workers))
            for name, src in sources:
                rates[name].append(loader_rate(src, workers, batch, epochs=timed_epochs + 1))
        named = {f"{name} {label}": r for name, r in rates.items()}
        if ceiling:
            named = {"decode-only ceiling (PIL, full size)": ceiling, **named}
        base = rates["folder"]
        rows += [(name, median(r), median([a / b for a, b in zip(r, base)])) for name, r in named.items()]
    return rows


def _first_and_rate(make: Callable[[], TrainLoader], epochs: int) -> tuple[float, float, float]:
    """(seconds from ``make()`` to the first batch, images/s of that first epoch, images/s of ``epochs`` more)."""
    start = time.perf_counter()
    loader = make()
    images, first = 0, 0.0
    for _, y in loader:
        first = first or time.perf_counter() - start
        images += len(y)
    cold = images / (time.perf_counter() - start)
    start, images = time.perf_counter(), 0
    for _ in range(epochs):
        for _, y in loader:
            images += len(y)
    loader.close()
    return first, cold, images / (time.perf_counter() - start)


S3Row = tuple[str, float, float, float, float]  # name; medians: first batch s, first-epoch and later images/s,
# later images/s over local disk's in the same round


def run_s3(
    root: Path, url: str, images: int, workers: int, batch: int, rounds: int = 3, timed_epochs: int = 2
) -> list[S3Row]:
    """wds shards on local disk against the same shards at ``url`` (uploaded first, index last), read through
    an empty cache each round: time to the first batch (from building the source: index, listing, first
    shards), the first epoch's images/s (downloading as it goes) and later epochs' (from the cache)."""
    from .convert.upload import publish
    from .sources.location import CacheSettings, S3Location, parse_location
    from .sources.object_store import ObjectStore

    where = parse_location(url, "--s3")
    if not isinstance(where, S3Location):
        raise ValueError(f"--s3 {url}: give s3://bucket/prefix")
    # 2 MB shards (not prepare()'s 16 MB): a few thousand images then span several groups of 8, so the
    # first epoch downloads group after group while reading, as a real dataset does
    folder, wds = root / "folder", root / "wds-2mb"
    write_synthetic(folder, classes=10, images=images, size=256, val_images=10, seed=0)
    convert(folder, wds, ConvertOptions(fmt="wds", max_resolution=256, shard_bytes=2 * 2**20))
    publish(wds, ObjectStore(where))
    tf, eval_tf = train_transform(224, color_jitter=0.0), eval_transform(224, 1.0)
    times: dict[str, list[tuple[float, float, float]]] = {"wds local disk": [], "wds s3 (empty cache)": []}
    for n in range(rounds):
        cache = CacheSettings(str(root / f"cache-{n}"), 10**12, prefetch=2, group=8)
        for name, path in (("wds local disk", str(wds)), ("wds s3 (empty cache)", url)):

            def make(path: str = path, cache: CacheSettings = cache) -> TrainLoader:
                src = WdsSource(path, "train", tf, eval_tf, cache)
                return TrainLoader(
                    src, world_size=1, rank=0, batch_size=batch, workers=workers, shard_sizes=src.shard_sizes
                )

            times[name].append(_first_and_rate(make, timed_epochs))
    local, rows = times["wds local disk"], []
    for name, ts in times.items():
        first, cold, warm = (median(t[i] for t in ts) for i in range(3))
        # paired per round (as run()'s ratios): a burst of other work slows both loaders of a round alike
        rows.append((name, first, cold, warm, median(t[2] / b[2] for t, b in zip(ts, local))))
    return rows


def render_s3(rows: list[S3Row], url: str, images: int, workers: int, batch: int, rounds: int) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"### Loader over an object store, {stamp}",
        "",
        f"Machine: {machine()}. {images} synthetic 256 px JPEGs as wds shards (2 MB), crop 224, batch {batch}, "
        f"{workers} workers, data.shard_group 8, data.prefetch 2; store {url} at "
        f"{os.environ.get('AWS_ENDPOINT_URL', 'AWS')}; median of {rounds} rounds, each from an empty cache; "
        f"load average {os.getloadavg()[0]:.1f} (1 min) at the end.",
        "",
        "| loader | first batch (s) | first epoch images/s | later epochs images/s | later vs local (paired) |",
        "|---|---|---|---|---|",
    ]
    for name, first, cold, warm, ratio in rows:
        lines.append(f"| {name} | {first:.2f} | {cold:,.0f} | {warm:,.0f} | {ratio:.2f}x |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def render(rows: list[Row], images: int, workers: int, batch: int, rounds: int) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"### Loader throughput, {stamp}",
        "",
        f"Machine: {machine()}. {images} synthetic 256 px JPEGs, crop 224, batch {batch}, {workers} workers "
        f"(FFCV: threads); median of {rounds} alternating rounds; load average {os.getloadavg()[0]:.1f} (1 min) "
        "at the end.",
        "",
        "| loader | images/s | vs folder (same work, paired per round) |",
        "|---|---|---|",
    ]
    for name, rate, ratio in rows:
        lines.append(f"| {name} | {rate:,.0f} | {ratio:.2f}x |")
    return "\n".join(lines) + "\n"
