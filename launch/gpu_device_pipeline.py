"""The device pipeline on one GPU (launch/gpu_check.sh; issue 25 item 4): decode + the whole recipe, images/s.

    python launch/gpu_device_pipeline.py --out DIR            # there: CUDA, batch 256, ImageNet-sized JPEGs
    .venv/bin/python launch/gpu_device_pipeline.py --dry --out DIR   # here: the same steps on the CPU, small

ImageNet-sized JPEGs (400 px, the synthetic set's photo-like noise) are written here, read by the planned
loader in device mode (``data.augment_on: device``: worker = read + header + plan, one process, so its
images/s is per core), and the batches it made are run through
:class:`~swat_dist.data.pixels.device_pipeline.DevicePipeline` on the GPU: nvJPEG decode, crop + resize +
flip, RandAugment ``rand-m9-mstd0.5-inc1``, normalisation, erasing 0.25, mixup 0.8 / cutmix 1.0 - timed
with a synchronize at both ends only. The issue's target: >= 10,000 images/s at batch 256 on one H100, so
that one core feeds one GPU. Then FFCV's device mode's share of the device: the same batches as uint8
crops, RandAugment + erasing + mixup only. Prints a markdown table and writes it to OUT/device_pipeline.md.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from swat_dist.data.loaders.loader import TrainLoader
from swat_dist.data.loaders.seeds import sample_seed, seed_everything
from swat_dist.data.pixels.device_pipeline import CroppedBatch, DevicePipeline
from swat_dist.data.pixels.device_plan import Planner, Recipe
from swat_dist.data.pixels.transforms import eval_transform, train_transform
from swat_dist.data.sets.synthetic import write_synthetic
from swat_dist.data.sources.folder import FolderSource

POLICY = "rand-m9-mstd0.5-inc1"


def measure(out: Path, dry: bool) -> str:
    device = torch.device("cpu" if dry else "cuda")
    batch, images, size, crop = (16, 64, 96, 64) if dry else (256, 256 * 6, 400, 224)
    folder = out / "jpegs"
    write_synthetic(folder, classes=10, images=images, size=size, val_images=10, seed=0)
    recipe = Recipe(img_size=crop, num_classes=1000, auto_augment=POLICY, reprob=0.25, mixup=0.8, cutmix=1.0)
    tf = train_transform(crop, auto_augment=POLICY, color_jitter=0.0)
    source = FolderSource(folder, "train", tf, eval_transform(crop, 1.0))
    loader = TrainLoader(source, world_size=1, rank=0, batch_size=batch, workers=0, planner=Planner(recipe))
    start = time.perf_counter()
    made = list(loader)  # the worker's side, in this process: images/s per core
    worker = len(made) * batch / (time.perf_counter() - start)
    pipeline = DevicePipeline(recipe)
    pipeline(*made[0], device)  # first call: nvJPEG handles, kernels, allocator
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for encoded, labels in made[1:]:
        pipeline(encoded, labels, device)
    sync()
    rate = (len(made) - 1) * batch / (time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (dry run)"
    # the same batch's pixels on the device and on the CPU: nvJPEG's IDCT and the device's float order
    # may differ from libjpeg's and the CPU's by a level here and there (tests/data pins the CPU to timm's PIL)
    diff = (pipeline.pixels(made[1][0], device).cpu() - pipeline.pixels(made[1][0], "cpu")).abs()
    cropped = _cropped_rate(pipeline, made, device, sync)
    return "\n".join([
        f"Device pipeline on {name}: {images} synthetic {size} px JPEGs, crop {crop}, batch {batch}, {POLICY} + "
        "erasing 0.25 + mixup/cutmix, timed over the batches after the first.",
        "",
        "| worker (read + header + plan), images/s per core | device (decode + recipe), images/s | peak GiB | "
        "cores per GPU at the device's rate | pixels vs CPU, mean / max abs (levels) |",
        "|---|---|---|---|---|",
        f"| {worker:,.0f} | {rate:,.0f} | {peak:.2f} | {rate / worker:.2f} | {diff.mean():.3f} / {diff.max():.0f} |",
        "",
        f"FFCV's device mode (its crops arrive decoded; RandAugment + erasing + mixup on the device): {cropped:,.0f} "
        "images/s.",
    ]) + "\n"  # fmt: skip


def _cropped_rate(pipeline: DevicePipeline, made: list, device: torch.device, sync: Callable[[], None]) -> float:
    """The device side of FFCV's device mode: the same batches as uint8 crops in host memory (cropped on the
    device, untimed, then copied back, as FFCV's threads would hand them over) with plans drawn by
    ``Planner.cropped``; images/s on ``device``."""
    planner = Planner(pipeline.recipe)
    batches = []
    for k, (encoded, labels) in enumerate(made):
        plan = encoded.plan.to(device)
        crops = pipeline.resized_crops(pipeline.decode(encoded, device), plan).to(torch.uint8).cpu()
        plans = []
        for i in range(len(labels)):
            seed_everything(sample_seed(0, 0, k * len(labels) + i))
            plans.append(planner.cropped())
        batches.append((CroppedBatch(crops, planner.batch(plans, k)), labels))
    pipeline(*batches[0], device)
    sync()
    start = time.perf_counter()
    for batch, labels in batches[1:]:
        pipeline(batch, labels, device)
    sync()
    return (len(batches) - 1) * len(batches[0][1]) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry", action="store_true", help="the CPU, small: that the steps run")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = measure(args.out, args.dry)
    (args.out / "device_pipeline.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
