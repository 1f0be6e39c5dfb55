"""The mmseg ADE20K pipeline (SEG_SPEC 2) for one (image, mask) pair, on uint8 tensors.

Train: reduce_zero_label, random rescale of ``scale`` by a ratio from ``ratio_range`` (aspect kept),
a ``crop`` x ``crop`` random crop re-drawn up to 10 times while one class covers more than
``cat_max_ratio`` of its labelled pixels, a horizontal flip, mmseg's photometric distortion, padding to
the crop (image 0, mask 255). Normalisation runs on the device (:mod:`swat_dist.tasks.segment`).
Val: the image resized to fit ``scale`` (short side 512 for ADE), the mask at its ORIGINAL size.

Every random draw comes from ``random`` and torch's default generator, which the planned loaders seed
per (seed, epoch, sample) (:func:`..loaders.loader.sample_seed`): the crops do not depend on the worker or rank
count, and a resumed run redraws the same ones. Images resize bilinearly with antialiasing (mmseg uses
OpenCV's bilinear without it), masks with nearest neighbour. Masks come out int16 (255 = ignore).
"""

from __future__ import annotations

import random

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torchvision.transforms import InterpolationMode

IGNORE = 255
CROP_TRIES = 10


def reduce_zero_label(mask: Tensor) -> Tensor:
    """ADE's convention: raw 0 (unlabelled) -> 255, raw l -> l - 1 (255 stays ignored); int16."""
    m = mask.to(torch.int16) - 1
    m[(mask == 0) | (mask == IGNORE)] = IGNORE
    return m


def _labels(mask: Tensor, reduce: bool) -> Tensor:
    return reduce_zero_label(mask) if reduce else mask.to(torch.int16)


def _resize(image: Tensor, mask: Tensor | None, factor: float) -> tuple[Tensor, Tensor | None]:
    h, w = image.shape[-2:]
    size = [max(int(h * factor + 0.5), 1), max(int(w * factor + 0.5), 1)]
    image = TF.resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
    if mask is not None:  # uint8 before the label mapping: nearest keeps every value a raw label
        mask = TF.resize(mask[None], size, interpolation=InterpolationMode.NEAREST)[0]
    return image, mask


def fit_factor(h: int, w: int, scale: tuple[float, float]) -> float:
    """mmseg's keep-ratio rescale: the largest factor with long side <= scale[0] and short side <= scale[1]."""
    long_side, short_side = max(scale), min(scale)
    return min(long_side / max(h, w), short_side / min(h, w))


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


class SegTrain:
    """(uint8 (3, H, W) image, uint8 (H, W) raw mask) -> (uint8 (3, crop, crop), int16 (crop, crop))."""

    def __init__(
        self, crop: int = 512, scale: tuple[int, int] = (2048, 512), ratio_range: tuple[float, float] = (0.5, 2.0),
        cat_max_ratio: float = 0.75, hflip: float = 0.5, photometric: bool = True, reduce: bool = True,
    ) -> None:  # fmt: skip
        self.crop, self.scale, self.ratio_range, self.cat_max_ratio = crop, scale, ratio_range, cat_max_ratio
        self.hflip, self.photometric, self.reduce = hflip, photometric, reduce

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        ratio = _uniform(*self.ratio_range)
        h, w = image.shape[-2:]
        image, raw = _resize(image, mask, fit_factor(h, w, (self.scale[0] * ratio, self.scale[1] * ratio)))
        assert raw is not None
        labels = _labels(raw, self.reduce)
        top, left = self._crop_box(labels)
        image = image[:, top : top + self.crop, left : left + self.crop]
        labels = labels[top : top + self.crop, left : left + self.crop]
        if float(torch.rand(())) < self.hflip:
            image, labels = image.flip(-1), labels.flip(-1)
        if self.photometric:
            image = photometric_distortion(image)
        return _pad(image, labels, self.crop)

    def _crop_box(self, labels: Tensor) -> tuple[int, int]:
        """mmseg's RandomCrop with cat_max_ratio: redraw while one class dominates the crop's labels."""
        h, w = labels.shape
        box = (0, 0)
        for _ in range(CROP_TRIES):
            box = (random.randint(0, max(h - self.crop, 0)), random.randint(0, max(w - self.crop, 0)))
            if self.cat_max_ratio >= 1:
                break
            crop = labels[box[0] : box[0] + self.crop, box[1] : box[1] + self.crop]
            _, counts = torch.unique(crop[crop != IGNORE], return_counts=True)
            if len(counts) > 1 and float(counts.max()) / float(counts.sum()) < self.cat_max_ratio:
                break
        return box


def _pad(image: Tensor, labels: Tensor, crop: int) -> tuple[Tensor, Tensor]:
    h, w = labels.shape
    if h == crop and w == crop:
        return image.contiguous(), labels.contiguous()
    out_image = torch.zeros((3, crop, crop), dtype=image.dtype)
    out_labels = torch.full((crop, crop), IGNORE, dtype=labels.dtype)
    out_image[:, :h, :w], out_labels[:h, :w] = image, labels
    return out_image, out_labels


class SegVal:
    """(image, raw mask) -> (the image resized to fit ``scale``, the mask's labels at the ORIGINAL size)."""

    def __init__(self, scale: tuple[int, int] = (2048, 512), reduce: bool = True) -> None:
        self.scale, self.reduce = scale, reduce

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        h, w = image.shape[-2:]
        resized, _ = _resize(image, None, fit_factor(h, w, (float(self.scale[0]), float(self.scale[1]))))
        return resized.contiguous(), _labels(mask, self.reduce)


def photometric_distortion(image: Tensor) -> Tensor:
    """mmseg's PhotoMetricDistortion on a uint8 RGB (3, H, W) image; each step with p = 0.5, clipped to uint8.

    Brightness +-32 (added), contrast x[0.5, 1.5] before or after (one of the two, at random), saturation
    x[0.5, 1.5] and hue +-18 (of 180, OpenCV's 8-bit hue scale) in HSV.
    """
    x = image.float()
    if random.randint(0, 1):
        x = (x + _uniform(-32, 32)).clamp(0, 255).round()
    contrast_first = random.randint(0, 1) == 1
    if contrast_first and random.randint(0, 1):
        x = (x * _uniform(0.5, 1.5)).clamp(0, 255).round()
    if random.randint(0, 1):  # saturation
        hsv = rgb_to_hsv(x)
        hsv[1] = (hsv[1] * _uniform(0.5, 1.5)).clamp(0, 255).round()
        x = hsv_to_rgb(hsv).clamp(0, 255).round()
    if random.randint(0, 1):  # hue
        hsv = rgb_to_hsv(x)
        hsv[0] = (hsv[0] + random.randint(-18, 18)) % 180
        x = hsv_to_rgb(hsv).clamp(0, 255).round()
    if not contrast_first and random.randint(0, 1):
        x = (x * _uniform(0.5, 1.5)).clamp(0, 255).round()
    return x.to(torch.uint8)


def rgb_to_hsv(x: Tensor) -> Tensor:
    """float RGB in [0, 255] -> HSV with H in [0, 180), S and V in [0, 255] (OpenCV's 8-bit scales)."""
    r, g, b = x
    v, _ = x.max(0)
    c = v - x.min(0).values
    s = torch.where(v > 0, 255 * c / v.clamp(min=1e-6), torch.zeros_like(v))
    safe = c.clamp(min=1e-6)
    h = torch.where(v == r, (g - b) / safe, torch.where(v == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    h = torch.where(c > 0, (h * 30) % 180, torch.zeros_like(h))  # 60 degrees per sextant, halved
    return torch.stack([h, s, v])


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    h, s, v = hsv[0] / 30, hsv[1] / 255, hsv[2]  # h in sextants [0, 6)
    k = torch.stack([(5 + h) % 6, (3 + h) % 6, (1 + h) % 6])  # one phase per channel: R, G, B
    return v - v * s * torch.clamp(torch.minimum(k, 4 - k), 0, 1)
