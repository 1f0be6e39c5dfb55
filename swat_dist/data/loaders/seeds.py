"""Per-sample seeds: the augmentation randomness of every backend and both augment_on modes.

A sample's transforms draw from the global ``random`` / numpy / torch RNGs right after
``seed_everything(sample_seed(seed, epoch, id))``, so its pixels depend on (seed, epoch, sample id) alone:
not on the worker that loads it, the rank, the number of workers or a resume.
"""

from __future__ import annotations

import random

import numpy as np
import torch


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
