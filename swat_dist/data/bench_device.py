"""``swat-dist bench loader --augment-on device``: what a loader worker costs per image in each mode.

Measured side by side in one run, in-process (``workers=0``), as images per CPU-second of this process
(``time.process_time``: every thread counted, so it is a per-core figure even where FFCV's decoding thread
runs beside the consumer) and of its child processes. FFCV is measured twice: in-process, and with 1
worker, as training runs it with ``data.workers >= 1`` (loader mode's colour stage then runs in a forked
process, the batches pickled to it and back: a cost device mode does not have).

For wds and folder, "loader" = today's worker (read, PIL decode, random-resized-crop + flip, RandAugment),
"device" = the device mode's worker (read the bytes, open the JPEG header, draw the plan). For ffcv,
"loader" = FFCV's decode + crop + flip and timm's RandAugment, "device" = FFCV's decode + crop + flip and
the plan of the rest (FFCV's device mode keeps its decode). Their ratio is the worker-side saving. The
device side - decode, crop, RandAugment, erasing, mixup on whole batches
(:class:`~swat_dist.data.pixels.device_pipeline.DevicePipeline`) - is timed here on this machine's CPU,
which says only that it runs; on a GPU it is a different number. The projection: cores a GPU needs to be
fed N images/s = N / (a worker's images per CPU-second).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from statistics import median
from typing import Any

import torch

from .bench import machine
from .convert.base import ConvertOptions
from .convert.front import convert
from .loaders.batches import Source
from .loaders.ffcv_loader import BetonSplit, FfcvTrainLoader
from .loaders.loader import TrainLoader
from .pixels.device_pipeline import DevicePipeline
from .pixels.device_plan import Planner, Recipe
from .pixels.transforms import colour_transform, eval_transform, train_transform
from .sets.synthetic import write_synthetic
from .sources.folder import FolderSource
from .sources.wds import WdsSource

POLICY = "rand-m9-mstd0.5-inc1"
FEEDS = (1_600, 8_000)  # images/s of one H100 on a ViT-S-sized model: eager, compiled (issue 25)


def _recipe(crop: int) -> Recipe:
    return Recipe(img_size=crop, num_classes=10, auto_augment=POLICY, reprob=0.25, mixup=0.8, cutmix=1.0)


def _cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of its live child processes (FFCV's colour processes;
    read from /proc: their time is not in ours until they are reaped)."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for child in multiprocessing.active_children():
        try:
            stat = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone, or no /proc (not Linux): its time is not counted
            continue
        total += (int(stat[11]) + int(stat[12])) / tick  # utime, stime: fields 14 and 15 of proc(5)
    return total


def _rate(loader: TrainLoader, epochs: int) -> float:
    """Images per CPU-second of this process and its children over ``epochs`` epochs (warm the loader first)."""
    start, images = _cpu_seconds(), 0
    for _ in range(epochs):
        for _, y in loader:
            images += len(y)
    return images / (_cpu_seconds() - start)


def _device_rate(loader: TrainLoader, recipe: Recipe, batches: int) -> float:
    """DevicePipeline's images/s on this CPU over ``batches`` batches the planned loader made (after one)."""
    pipeline, cpu = DevicePipeline(recipe), torch.device("cpu")
    made = []
    for batch, labels in loader:
        assert not isinstance(batch, torch.Tensor), "a planned loader hands over bytes or crops with plans"
        made.append((batch, labels))
        if len(made) == batches + 1:
            break
    pipeline(*made[0], cpu)  # first call: allocations, lazy imports
    start, images = time.perf_counter(), 0
    for enc, y in made[1:]:
        x, _ = pipeline(enc, y, cpu)
        images += len(x)
    return images / (time.perf_counter() - start)


Rows = dict[str, dict[str, float]]  # backend -> {"loader": images/CPU-s, "device": ..., "ratio": ...}
Makers = dict[str, Callable[[], TrainLoader]]  # mode -> a new loader of that mode


def _makers(root: Path, images: int, batch: int, size: int, crop: int) -> dict[str, Makers]:
    """Both modes' loaders for each backend over the same synthetic JPEGs (bench.prepare's, at ``size``)."""
    folder, wds, ffcv = root / f"folder-{size}", root / f"wds-{size}", root / f"ffcv-{size}"
    write_synthetic(folder, classes=10, images=images, size=size, val_images=10, seed=0)
    convert(folder, wds, ConvertOptions(fmt="wds", max_resolution=size, shard_bytes=16 * 2**20))
    convert(folder, ffcv, ConvertOptions(fmt="ffcv", max_resolution=size, compress_probability=1.0))
    recipe, eval_tf = _recipe(crop), eval_transform(crop, 1.0)
    tf = train_transform(crop, auto_augment=POLICY, color_jitter=0.0)
    kw: dict[str, Any] = dict(world_size=1, rank=0, batch_size=batch, workers=0)

    def planned(src: Source, planner: Planner | None) -> Callable[[], TrainLoader]:
        return lambda: TrainLoader(src, shard_sizes=getattr(src, "shard_sizes", None), planner=planner, **kw)

    split, colour = BetonSplit(ffcv, "train"), colour_transform(crop, POLICY, 0.0)
    sources: dict[str, Source] = {
        "wds": WdsSource(wds, "train", tf, eval_tf), "folder": FolderSource(folder, "train", tf, eval_tf),
    }  # fmt: skip
    makers = {
        name: {"loader": planned(src, None), "device": planned(src, Planner(recipe))} for name, src in sources.items()
    }

    def beton(workers: int, device: bool) -> Callable[[], TrainLoader]:
        stages: dict[str, Any] = dict(planner=Planner(recipe)) if device else dict(colour=colour)
        return lambda: FfcvTrainLoader(split, size=crop, **(kw | dict(workers=workers) | stages))

    for name, workers in (("ffcv", 0), ("ffcv, 1 worker", 1)):  # 1: loader mode's colour stage in a process
        makers[name] = {"loader": beton(workers, False), "device": beton(workers, True)}
    return makers


def run_device(
    root: Path, images: int, batch: int, rounds: int = 3, timed_epochs: int = 1, size: int = 256, crop: int = 224,
    device_batches: int = 3,
) -> tuple[Rows, dict[str, float]]:  # fmt: skip
    """Per backend: the two workers' images per CPU-second (medians of ``rounds`` alternating rounds, after
    an untimed epoch of each loader: page cache, FFCV's compilation) and their ratio (paired per round);
    and the device side's images/s on this CPU (from wds's encoded batches and from FFCV's crops)."""
    rows: Rows = {}
    device: dict[str, float] = {}
    for name, make in _makers(root, images, batch, size, crop).items():
        loaders = {mode: m() for mode, m in make.items()}
        for loader in loaders.values():
            for _ in loader:  # untimed: page cache, first-call costs, numba's compilation
                pass
        rates: dict[str, list[float]] = {"loader": [], "device": []}
        for _ in range(rounds):
            for mode, loader in loaders.items():
                rates[mode].append(_rate(loader, timed_epochs))
        ratio = median(d / w for d, w in zip(rates["device"], rates["loader"]))
        rows[name] = dict(loader=median(rates["loader"]), device=median(rates["device"]), ratio=ratio)
        if name in ("wds", "ffcv"):  # from the warm loader: a new FFCV one would compile its pipeline again
            device[name] = _device_rate(loaders["device"], _recipe(crop), device_batches)
        for loader in loaders.values():
            loader.close()
    return rows, device


def render_device(rows: Rows, device: dict[str, float], images: int, batch: int, rounds: int, size: int = 256) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    names = list(rows)

    def row(label: str, key: str, fmt: str = "{:,.0f}", scale: float | None = None) -> str:
        values = [rows[n][key] if scale is None else scale / rows[n][key] for n in names]
        return f"| {label} | " + " | ".join(fmt.format(v) for v in values) + " |"

    lines = [
        f"### Loader worker cost, augment_on loader vs device, {stamp}",
        "",
        f"Machine: {machine()}. {images} synthetic {size} px JPEGs, crop 224, batch {batch}, the recipe "
        f"{POLICY} + erasing 0.25 + mixup/cutmix; one process (workers=0; ffcv, 1 worker: FFCV's 1 thread "
        "and loader mode's colour stage in 1 process, as training runs it with data.workers >= 1), images "
        "per CPU-second of the process and its children (FFCV's decoding thread included); median of "
        f"{rounds} alternating rounds after an untimed epoch, ratio paired per round; load average "
        f"{os.getloadavg()[0]:.1f} (1 min) at the end.",
        "",
        "| per core | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        row("loader worker: read + decode + crop + flip + RandAugment (images/CPU-s)", "loader"),
        row("device-mode worker: read + plan; ffcv: + decode + crop + flip (images/CPU-s)", "device"),
        row("worker cost per image, loader / device", "ratio", "{:.1f}x"),
    ]
    for feed in FEEDS:
        for mode in ("loader", "device"):
            lines.append(row(f"cores per GPU for {feed:,} images/s, {mode} worker", mode, "{:.2f}", float(feed)))
    threads = torch.get_num_threads()
    sides = ", ".join(f"{name} {rate:,.0f} images/s" for name, rate in device.items())
    lines += [
        "",
        f"Device side on this CPU ({threads} torch threads; batch {batch} at 224 px; from wds: decode + crop + "
        f"RandAugment + erasing + mixup, from FFCV's crops: RandAugment + erasing + mixup): {sides}.",
    ]
    return "\n".join(lines) + "\n"
