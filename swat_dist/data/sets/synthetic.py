"""``swat-dist data synthetic``: random JPEGs as an ImageNet-style folder, for throughput work.

Loader and converter speed depend on how many bytes a JPEG has and how long it takes to decode, not on
what it shows, so these images only have to compress like photos. Each is a colour pyramid: random
4x4 colours upscaled bicubically to 16, 64 and finally S px, blending fresh random pixels in at every
level (per-pixel noise at S). That is 1/f-like, like natural images, cheap (one full-size resize and
blend per image), and at quality 90 and 256 px gives ~20-35 KB (ImageNet photos at 256 px: ~20-40 KB).
The noise strength is drawn per image so sizes spread a little; bytes scale with S*S.

Layout: ``DST/{train,val}/class_<k>/<i>.jpg``, ``k`` zero-padded (sorted order == label), ``i`` the
image's index within its split. Image ``i`` depends only on ``(seed, split, i)``, so the output is the
same byte for byte whatever the worker count. Labels are arbitrary: nothing here is learnable.
"""

from __future__ import annotations

import io
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...progress import progress
from ..convert.staging import write_once
from ..sources.synthetic import class_names

QUALITY = 90
SPLITS = ("train", "val")  # position = the split's code in each image's seed
CHUNK = 64  # images per pool task: large enough to hide the task overhead, small enough to balance


def image(seed: int, split: int, index: int, size: int) -> Image.Image:
    """The synthetic RGB image ``index`` of split ``split`` (see the module doc)."""
    rng = np.random.default_rng((seed, split, index))
    alphas = (0.35, 0.25, rng.uniform(0.05, 0.25))  # weight of the fresh pixels at 16, 64, size px
    img = Image.frombytes("RGB", (4, 4), rng.bytes(4 * 4 * 3))
    for side, alpha in zip((16, 64, size), alphas):
        img = img.resize((side, side), Image.Resampling.BICUBIC)
        img = Image.blend(img, Image.frombytes("RGB", (side, side), rng.bytes(side * side * 3)), alpha)
    return img


def jpeg(seed: int, split: int, index: int, size: int) -> bytes:
    out = io.BytesIO()
    image(seed, split, index, size).save(out, format="JPEG", quality=QUALITY)
    return out.getvalue()


def per_class(total: int, classes: int) -> list[int]:
    """``total`` spread evenly: the first ``total % classes`` classes get one more."""
    return [total // classes + (k < total % classes) for k in range(classes)]


def _write_chunk(task: tuple[Path, int, int, int, list[tuple[str, int]]]) -> tuple[int, int]:
    root, seed, split, size, items = task
    nbytes = 0
    for rel, index in items:
        data = jpeg(seed, split, index, size)
        (root / rel).write_bytes(data)
        nbytes += len(data)
    return len(items), nbytes


def _run(tasks: list[Any], workers: int) -> Iterator[tuple[int, int]]:
    if workers <= 1:
        yield from map(_write_chunk, tasks)
        return
    # fork: workers start at once (spawn would re-import torch and timm, seconds each) and only run
    # numpy and PIL, none of the thread pools that make forking a threaded process unsafe
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from pool.imap_unordered(_write_chunk, tasks)


def _fill(root: Path, classes: int, counts: tuple[int, int], size: int, seed: int, workers: int) -> dict[str, Any]:
    names = class_names(classes)
    tasks = []
    for split, (split_name, total) in enumerate(zip(SPLITS, counts)):
        items: list[tuple[str, int]] = []
        for name, n in zip(names, per_class(total, classes)):
            (root / split_name / name).mkdir(parents=True)
            items += [(f"{split_name}/{name}/{len(items) + j:08d}.jpg", len(items) + j) for j in range(n)]
        tasks += [(root, seed, split, size, items[i : i + CHUNK]) for i in range(0, len(items), CHUNK)]
    nbytes = 0
    with progress(sum(counts), "synthetic", unit="img", interval_s=60.0) as bar:  # plain lines in a log
        for n, b in _run(tasks, workers):
            bar.update(n)
            nbytes += b
    return {"train": counts[0], "val": counts[1], "classes": classes, "bytes": nbytes}


def write_synthetic(
    dst: str | Path,
    *,
    classes: int,
    images: int,
    size: int,
    val_images: int | None = None,
    seed: int = 0,
    workers: int | None = None,
) -> int:
    """Write ``images`` train and ``val_images`` (default ``images // 5``, at least one per class) val JPEGs.

    ``workers``: processes (None: one per core for 1,000 images or more, else none). The bytes do not
    depend on it, so it is not part of the dataset's identity.
    """
    val = max(images // 5, classes) if val_images is None else val_images
    if classes < 1:
        raise ValueError(f"--classes {classes}: must be at least 1")
    if images < classes:
        raise ValueError(f"--images {images}: must be at least --classes ({classes}), one per class")
    if val < classes:
        raise ValueError(f"--val-images {val}: must be at least --classes ({classes}), one per class")
    if size < 8:
        raise ValueError(f"--size {size}: must be at least 8")
    if seed < 0:
        raise ValueError(f"--seed {seed}: must be >= 0")
    if workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        workers = cores if images + val >= 1000 else 0  # below that, starting a pool costs more than it saves
    options = {"classes": classes, "images": images, "val_images": val, "size": size, "seed": seed}
    summary, written = write_once(
        dst, "synthetic", options, lambda root: _fill(root, classes, (images, val), size, seed, workers)
    )
    what = "wrote" if written else "already complete:"
    mean_kb = summary["bytes"] / (summary["train"] + summary["val"]) / 1024
    print(
        f"synthetic: {what} {summary['train']} train + {summary['val']} val JPEGs "
        f"({size} px, {classes} classes, mean {mean_kb:.1f} KB) in {dst}"
    )
    return 0
