"""The SWAT/DeiT augmentation recipe, split where it is cheapest to run.

On the loader workers (per image, PIL): random-resized-crop, horizontal flip, RandAugment (timm
strings such as ``rand-m9-mstd0.5-inc1``), conversion to a uint8 tensor. Eval: resize to
``img_size / crop_pct`` and centre-crop. On the device (per batch): float conversion, normalisation,
random erasing, mixup/cutmix with label smoothing - keeping floats off the loader saves 4x the
host-to-device bytes and most of the loader's CPU (PLATFORM.md: normalising on CPU halves throughput).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from timm.data import Mixup, create_transform
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import MaybePILToTensor, str_to_interp_mode
from torch import Tensor
from torchvision import transforms as T

ImageTransform = Callable[[Image.Image], Tensor]


def _timm_stages(img_size: int, **kwargs: Any) -> tuple[T.Compose, T.Compose]:
    """timm's train transform split into (crop + flip, colour: RandAugment / AutoAugment / jitter).

    timm adds ``ColorJitter(0, 0, 0)`` for ``color_jitter=0``: it changes no pixel, yet it would send every
    FFCV batch through the colour processes (pickled there and back: half of FFCV's throughput here), so
    it is dropped from the colour stage.
    """
    primary, secondary, _ = create_transform(img_size, is_training=True, separate=True, **kwargs)
    secondary.transforms = [t for t in secondary.transforms if not _no_op_jitter(t)]
    return primary, secondary


def _no_op_jitter(t: Any) -> bool:
    jitter = ("brightness", "contrast", "saturation", "hue")
    return isinstance(t, T.ColorJitter) and all(getattr(t, k) is None for k in jitter)


def train_transform(
    img_size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    interpolation: str = "random",
    auto_augment: str | None = None,
    color_jitter: float = 0.4,
    mean: tuple[float, ...] = (0.485, 0.456, 0.406),
) -> ImageTransform:
    """PIL image -> augmented uint8 (3, img_size, img_size) tensor (timm's ImageNet train transform).

    ``color_jitter`` applies only without ``auto_augment`` (timm's rule, as in the SWAT recipe).
    """
    primary, secondary = _timm_stages(
        img_size, scale=scale, ratio=ratio, hflip=hflip, interpolation=interpolation, auto_augment=auto_augment,
        color_jitter=color_jitter, mean=mean,
    )  # fmt: skip
    return T.Compose([primary, secondary, MaybePILToTensor()])


Colour = Callable[[Image.Image], Image.Image]


def colour_transform(
    img_size: int,
    auto_augment: str | None,
    color_jitter: float,
    interpolation: str = "random",
    mean: tuple[float, ...] = (0.485, 0.456, 0.406),
) -> Colour | None:
    """Only the colour stage of :func:`train_transform` (for FFCV, which crops and flips itself); None if
    it has nothing to do."""
    _, secondary = _timm_stages(
        img_size, auto_augment=auto_augment, color_jitter=color_jitter, interpolation=interpolation, mean=mean
    )
    return secondary if secondary.transforms else None


def eval_transform(img_size: int, crop_pct: float = 0.875, interpolation: str = "bicubic") -> ImageTransform:
    """PIL image -> uint8 tensor: resize the short side to floor(img_size / crop_pct), centre-crop."""
    resize = math.floor(img_size / crop_pct)
    return T.Compose(
        [T.Resize(resize, interpolation=str_to_interp_mode(interpolation)), T.CenterCrop(img_size), T.PILToTensor()]
    )


class DeviceAugment:
    """uint8 batch on the device -> normalised float batch (+ erasing, mixup/cutmix soft targets).

    ``train=False`` only normalises and returns the integer labels (padding -1 included). ``pipeline``
    (``data.augment_on: device``) takes the training batches instead: (EncodedBatch, labels, device) ->
    (x, soft targets), decode and the whole recipe on the device
    (:class:`~swat_dist.data.pixels.device_pipeline.DevicePipeline`); evaluation batches still come here.
    """

    def __init__(
        self,
        num_classes: int,
        mean: tuple[float, ...] = (0.485, 0.456, 0.406),
        std: tuple[float, ...] = (0.229, 0.224, 0.225),
        reprob: float = 0.0,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        mixup_prob: float = 1.0,
        switch_prob: float = 0.5,
        smoothing: float = 0.1,
        pipeline: Callable[[Any, Tensor, torch.device], tuple[Tensor, Tensor]] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.mean = torch.tensor(mean).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std).view(1, -1, 1, 1) * 255
        self.erase = RandomErasing(reprob, mode="pixel", device="cpu") if reprob > 0 else None
        mix_args = dict(prob=mixup_prob, switch_prob=switch_prob, label_smoothing=smoothing, num_classes=num_classes)
        self.mix = Mixup(mixup, cutmix, **mix_args) if mixup > 0 or cutmix > 0 else None
        self.num_classes, self.smoothing = num_classes, smoothing

    def normalize(self, images: Tensor) -> Tensor:
        # kept on the device after the first batch (.to of a tensor already there is free): no copy per batch
        self.mean, self.std = self.mean.to(images.device), self.std.to(images.device)
        return (images.float() - self.mean) / self.std

    def __call__(self, images: Tensor, labels: Tensor, train: bool = True) -> tuple[Tensor, Tensor]:
        x = self.normalize(images)
        if not train:
            return x, labels
        if self.erase is not None:
            self.erase.device = x.device
            x = self.erase(x)
        if self.mix is not None:
            return self.mix(x, labels)
        off = self.smoothing / self.num_classes
        soft = torch.full((len(labels), self.num_classes), off, device=x.device)
        return x, soft.scatter_(1, labels.unsqueeze(1), 1.0 - self.smoothing + off)
