"""``swat-dist bench loader --augment-on device``: what a loader worker costs per image in each mode.

Measured side by side in one run, in-process (``workers=0``: one process, so images/s is per core):
"loader" = today's worker (read, PIL decode, random-resized-crop + flip, RandAugment), "device" = the
device mode's worker (read the bytes, open the JPEG header, draw the plan). Their ratio is the worker-side
saving. The device side - decode, crop, RandAugment, erasing, mixup on whole batches
(:class:`~swat_dist.data.pixels.device_pipeline.DevicePipeline`) - is timed here on this machine's CPU,
which says only that it runs; on a GPU it is a different number. The projection: cores a GPU needs to be
fed N images/s = N / (a worker's images/s per core).
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from statistics import median
from typing import Any

import torch

from .bench import machine
from .convert.base import ConvertOptions
from .convert.front import convert
from .loaders.loader import Source, TrainLoader
from .pixels.device_pipeline import DevicePipeline, EncodedBatch
from .pixels.device_plan import Planner, Recipe
from .pixels.transforms import eval_transform, train_transform
from .sets.synthetic import write_synthetic
from .sources.folder import FolderSource
from .sources.wds import WdsSource

POLICY = "rand-m9-mstd0.5-inc1"
FEEDS = (1_600, 8_000)  # images/s of one H100 on a ViT-S-sized model: eager, compiled (issue 25)


def _recipe(crop: int) -> Recipe:
    return Recipe(img_size=crop, num_classes=10, auto_augment=POLICY, reprob=0.25, mixup=0.8, cutmix=1.0)


def _rate(loader: TrainLoader, epochs: int) -> float:
    """Images/s over ``epochs`` epochs after an untimed one (page cache, first-call costs)."""
    for _ in loader:
        pass
    start, images = time.perf_counter(), 0
    for _ in range(epochs):
        for _, y in loader:
            images += len(y)
    return images / (time.perf_counter() - start)


def _device_rate(loader: TrainLoader, recipe: Recipe, batches: int) -> float:
    """DevicePipeline's images/s on this CPU over ``batches`` batches the planned loader made (after one)."""
    pipeline, cpu = DevicePipeline(recipe), torch.device("cpu")
    made = []
    for batch in loader:
        made.append(batch)
        if len(made) == batches + 1:
            break
    loader.close()
    encoded = [(enc, y) for enc, y in made if isinstance(enc, EncodedBatch)]
    pipeline(*encoded[0], cpu)  # first call: allocations, lazy imports
    start, images = time.perf_counter(), 0
    for enc, y in encoded[1:]:
        x, _ = pipeline(enc, y, cpu)
        images += len(x)
    return images / (time.perf_counter() - start)


Rows = dict[str, dict[str, float]]  # backend -> {"loader": images/s/core, "device": ..., "ratio": ...}


def run_device(
    root: Path, images: int, batch: int, rounds: int = 3, timed_epochs: int = 1, size: int = 256, crop: int = 224,
    device_batches: int = 3,
) -> tuple[Rows, float]:  # fmt: skip
    """Per backend (wds, folder): the two workers' images/s per core (medians of ``rounds`` alternating
    rounds) and their ratio (paired per round); and the device side's images/s on this CPU."""
    folder, wds = root / f"folder-{size}", root / f"wds-{size}"  # bench.prepare's, without FFCV's conversion
    write_synthetic(folder, classes=10, images=images, size=size, val_images=10, seed=0)
    convert(folder, wds, ConvertOptions(fmt="wds", max_resolution=size, shard_bytes=16 * 2**20))
    recipe, eval_tf = _recipe(crop), eval_transform(crop, 1.0)
    tf = train_transform(crop, auto_augment=POLICY, color_jitter=0.0)
    sources: dict[str, Any] = {
        "wds": lambda: WdsSource(wds, "train", tf, eval_tf),
        "folder": lambda: FolderSource(folder, "train", tf, eval_tf),
    }
    rows: Rows = {}
    device = 0.0
    for name, make in sources.items():
        src: Source = make()
        kw: dict[str, Any] = dict(world_size=1, rank=0, batch_size=batch, workers=0)
        kw["shard_sizes"] = getattr(src, "shard_sizes", None)
        rates: dict[str, list[float]] = {"loader": [], "device": []}
        for _ in range(rounds):
            rates["loader"].append(_rate(TrainLoader(src, **kw), timed_epochs))
            rates["device"].append(_rate(TrainLoader(src, planner=Planner(recipe), **kw), timed_epochs))
        ratio = median(d / w for d, w in zip(rates["device"], rates["loader"]))
        rows[name] = dict(loader=median(rates["loader"]), device=median(rates["device"]), ratio=ratio)
        if name == "wds":
            device = _device_rate(TrainLoader(src, planner=Planner(recipe), **kw), recipe, device_batches)
    return rows, device


def render_device(rows: Rows, device: float, images: int, batch: int, rounds: int, size: int = 256) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    names = list(rows)
    lines = [
        f"### Loader worker cost, augment_on loader vs device, {stamp}",
        "",
        f"Machine: {machine()}. {images} synthetic {size} px JPEGs, crop 224, batch {batch}, the recipe "
        f"{POLICY} + erasing 0.25 + mixup/cutmix; one process (workers=0: images/s per core); median of "
        f"{rounds} alternating rounds, ratio paired per round; load average {os.getloadavg()[0]:.1f} (1 min) "
        "at the end.",
        "",
        "| per core | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        "| loader worker: read + decode + crop + flip + RandAugment (images/s) | "
        + " | ".join(f"{rows[n]['loader']:,.0f}" for n in names)
        + " |",
        "| device-mode worker: read + header + plan (images/s) | "
        + " | ".join(f"{rows[n]['device']:,.0f}" for n in names)
        + " |",
        "| worker cost per image, loader / device | " + " | ".join(f"{rows[n]['ratio']:.1f}x" for n in names) + " |",
    ]
    for feed in FEEDS:
        for mode in ("loader", "device"):
            cells = " | ".join(f"{feed / rows[n][mode]:.2f}" for n in names)
            lines.append(f"| cores per GPU for {feed:,} images/s, {mode} worker | {cells} |")
    threads = torch.get_num_threads()
    lines += [
        "",
        f"Device side on this CPU ({threads} torch threads; decode + crop + RandAugment + erasing + mixup, "
        f"batch {batch} at 224 px, wds): {device:,.0f} images/s.",
    ]
    return "\n".join(lines) + "\n"
