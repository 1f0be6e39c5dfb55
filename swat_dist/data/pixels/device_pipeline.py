"""The device half of ``data.augment_on: device``: encoded bytes + a :class:`.device_plan.BatchPlan` -> a
normalised, augmented batch with soft targets, on whole batches, with no host sync. FFCV's device mode
hands over its uint8 crops instead (:class:`CroppedBatch`): decode and resize are skipped, the rest runs.

Stages: decode (``torchvision.io.decode_jpeg`` on the list: nvJPEG on CUDA, libjpeg-turbo on CPU; members
decoded on the worker join as they are) -> crop + resize + flip as two batched matmuls -> RandAugment, one
:func:`.device_ops.apply_op` call per plan step on the samples that run it (``index_select`` /
``index_copy`` by the plan's index tensors) -> normalise -> random erasing -> mixup/cutmix and smoothing.

**Resize.** PIL's own separable resampling, rebuilt as per-sample weight matrices: for each output pixel,
PIL's filter (triangle for bilinear, Keys a=-0.5 cubic for bicubic) stretched by the downscale factor
(PIL's antialiasing) over the crop's pixels, normalised; horizontal pass, rounding to 8 bits (as PIL
stores its intermediate), vertical pass, rounding. The flip reverses the horizontal matrix. Crops sit in
zero canvases, one per group of like-sized crops (``device_plan.resize_groups``: at most 1.5x the crops'
pixels); weights are zero outside each crop, so a sample's pixels do not depend on its neighbours. Cost:
2 x 3 x S x (Hc x Wc + S x Hc) multiply-adds per image in an Hc x Wc canvas (~0.2 GFLOP for a 300 x 300
crop to 224). Measured against timm's PIL transform (tests/data/test_device_pipeline.py: the shipped
photos, strips of them and a digit as JPEGs, 224 px, CPU, decode included): mean |diff| 0.002 of a level
without RandAugment, 99.8% of values exact, max 1-2 levels (PIL's 22-bit fixed-point weights against our
float32 ones, each pass rounded); 0.008-0.035 with the SWAT RandAugment (device_ops' own differences).
TF32 matmuls on a GPU would round the weights to 10 bits: up to ~0.1 level before rounding.

**Erasing noise** (timm's pixel mode: N(0, 1) per element in normalised space, one box) is a pure function of
(the sample's noise seed, the element's index in the sample): murmur3's fmix32 on int64 holding 32-bit
values, with products split so that no int64 multiply overflows (the same result on CPU and CUDA), two
24-bit uniforms, Box-Muller. Computed for the erased samples only: k x 3 x S x S elements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from timm.data.mixup import mixup_target
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg

from .device_ops import apply_op
from .device_plan import BatchPlan, Recipe

_M32 = 0xFFFFFFFF


@dataclass
class EncodedBatch:
    """What a loader worker hands over: encoded JPEGs (an empty tensor where ``decoded`` holds the sample),
    images decoded on the worker (non-JPEG, CMYK) by batch position, and the batch's plan."""

    jpegs: list[Tensor]
    plan: BatchPlan
    decoded: dict[int, Tensor] = field(default_factory=dict)

    def pin_memory(self) -> EncodedBatch:
        # JPEG bytes are read by the decoder from host memory wherever it runs: not worth pinning
        decoded = {i: t.pin_memory() for i, t in self.decoded.items()}
        return replace(self, decoded=decoded, plan=self.plan.pin_memory())


@dataclass
class CroppedBatch:
    """What FFCV's device mode hands over: uint8 (B, 3, S, S) crops FFCV decoded, cropped, resized and flipped
    in its threads, and the batch's plan for the rest (:meth:`.device_plan.Planner.cropped`)."""

    images: Tensor  # page-locked where a GPU will copy it (FFCV's host_batch), as the loader pins the plan
    plan: BatchPlan


def _mul32(h: Tensor, c: int) -> Tensor:
    """(h * c) mod 2^32 for 0 <= h < 2^32 in int64, the product split in 16-bit halves: never overflows."""
    return (h * (c & 0xFFFF) + (((h * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _fmix32(h: Tensor) -> Tensor:
    """murmur3's finaliser: a bijection of 32-bit values with full avalanche."""
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def hash_normal(seeds: Tensor, numel: int) -> Tensor:
    """(k,) int64 seeds -> (k, numel) float32 N(0, 1): element j of row i depends on (seeds[i], j) alone."""
    idx = torch.arange(numel, device=seeds.device, dtype=torch.int64).unsqueeze(0)
    k1, k2 = (seeds & _M32).unsqueeze(1), ((seeds >> 32) & _M32).unsqueeze(1)
    u1, u2 = (((_fmix32(_fmix32((2 * idx + c) ^ k1) ^ k2) >> 8).float() + 0.5) / 2**24 for c in (0, 1))
    return torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * math.pi * u2)


def _pil_filter(t: Tensor, bicubic: Tensor) -> Tensor:
    """PIL's bilinear (triangle, support 1) or bicubic (a = -0.5, support 2) filter at distances ``t``."""
    t = t.abs()
    a = -0.5
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = (((t - 5) * t + 8) * t - 4) * a
    cubic = torch.where(t < 1, near, torch.where(t < 2, far, torch.zeros_like(t)))
    return torch.where(bicubic, cubic, (1 - t).clamp(min=0))


def resize_weights(in_size: Tensor, out: int, length: int, bicubic: Tensor) -> Tensor:
    """(B, out, length) weights of PIL's resampling of ``in_size[b]`` pixels (the rest of ``length``: zero).

    Evaluated only at the taps a filter reaches (4 x the downscale factor + 2 per output pixel, not ``length``)
    and scattered into the dense matrix the matmul takes: the filter work is ~30x smaller at 640 -> 224.
    """
    device = in_size.device
    scale = (in_size / out).view(-1, 1, 1)
    stretch = scale.clamp(min=1.0)  # downscaling widens the filter: PIL's antialiasing
    taps = math.ceil(4 * max(1.0, length / out)) + 2  # bicubic's support 2 each side (the widest), stretched
    centre = (torch.arange(out, device=device).view(1, -1, 1) + 0.5) * scale
    x = torch.floor(centre - 0.5 - 2 * stretch) + torch.arange(taps, device=device).view(1, 1, -1)
    inside = (x >= 0) & (x < in_size.view(-1, 1, 1))
    w = _pil_filter((x - centre + 0.5) / stretch, bicubic.view(-1, 1, 1)) * inside
    w = w / w.sum(-1, keepdim=True)
    # taps outside the crop carry weight 0 to a clamped column: adding 0.0 changes no sum, in any order
    dense = torch.zeros(len(in_size), out, length, device=device)
    return dense.scatter_add_(2, x.clamp(0, length - 1).long(), w)


def _round8(x: Tensor) -> Tensor:
    return torch.floor(x + 0.5).clamp_(0, 255)  # PIL's clip8 of a rounded fixed-point sum


class DevicePipeline:
    """Executes plans: :meth:`pixels` (uint8-valued floats after RandAugment), ``__call__`` (the batch the
    model takes: normalised, erased, mixed, with soft targets)."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.fill = tuple(min(255, round(255 * m)) for m in recipe.mean)  # timm's img_mean for the ops
        self._mean = torch.tensor(recipe.mean).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(recipe.std).view(1, 3, 1, 1) * 255

    def decode(self, batch: EncodedBatch, device: torch.device) -> list[Tensor]:
        jpeg_at = [i for i in range(len(batch.jpegs)) if i not in batch.decoded]
        jpegs = [batch.jpegs[i] for i in jpeg_at]
        images = dict(zip(jpeg_at, decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device) if jpegs else []))
        images.update({i: t.to(device, non_blocking=True) for i, t in batch.decoded.items()})
        out = [images[i] for i in range(len(batch.jpegs))]
        for i, (img, (w, h)) in enumerate(zip(out, batch.plan.sizes)):
            if tuple(img.shape) != (3, h, w):  # shapes are host metadata: no sync
                raise ValueError(f"batch position {i}: decoded {tuple(img.shape)}, planned for (3, {h}, {w})")
        return out

    def resized_crops(self, images: list[Tensor], plan: BatchPlan) -> Tensor:
        """Crop, resize to S x S (PIL's filters) and flip every image: float (B, 3, S, S), integer-valued."""
        out = torch.empty(len(images), 3, self.recipe.img_size, self.recipe.img_size, device=plan.crop_hw.device)
        for members, index in zip(plan.groups, plan.group_index):
            crops = [plan.crops[i] for i in members]
            done = self._resize_group([images[i] for i in members], crops, plan, index)
            out.index_copy_(0, index, done)
        return out

    def _resize_group(
        self, images: list[Tensor], crops: list[tuple[int, int, int, int]], plan: BatchPlan, index: Tensor
    ) -> Tensor:
        size, n = self.recipe.img_size, len(images)
        hc, wc = max(c[2] for c in crops), max(c[3] for c in crops)
        canvas = torch.zeros(n, 3, hc, wc, device=index.device)
        for b, (img, (top, left, h, w)) in enumerate(zip(images, crops)):
            canvas[b, :, :h, :w] = img[:, top : top + h, left : left + w]
        crop_hw, bicubic = plan.crop_hw.index_select(0, index), plan.bicubic.index_select(0, index)
        wx = resize_weights(crop_hw[:, 1], size, wc, bicubic)
        wx = torch.where(plan.flip.index_select(0, index).view(-1, 1, 1), wx.flip(1), wx)
        wy = resize_weights(crop_hw[:, 0], size, hc, bicubic)
        rows = _round8(torch.bmm(canvas.view(n, 3 * hc, wc), wx.transpose(1, 2)))  # (n, 3*Hc, S)
        rows = rows.view(n, 3, hc, size).permute(0, 2, 1, 3).reshape(n, hc, 3 * size)
        out = _round8(torch.bmm(wy, rows))  # (n, S, 3*S)
        return out.view(n, size, 3, size).permute(0, 2, 1, 3)

    def pixels(self, batch: EncodedBatch | CroppedBatch, device: torch.device | str) -> Tensor:
        """Decode, crop, resize, flip (FFCV's batches arrive cropped), RandAugment: float (B, 3, S, S) holding
        uint8 values."""
        device = torch.device(device)
        plan = batch.plan.to(device)
        if isinstance(batch, CroppedBatch):
            x = batch.images.to(device, non_blocking=True).float()
        else:
            x = self.resized_crops(self.decode(batch, device), plan)
        for step in plan.steps:
            done = apply_op(step.name, x.index_select(0, step.index), step.args, step.bicubic, self.fill)
            x = x.index_copy(0, step.index, done)
        return x

    def erase(self, x: Tensor, plan: BatchPlan) -> Tensor:
        """timm's pixel-mode erasing: N(0, 1) in normalised space inside each planned box, nowhere else."""
        k, size = len(plan.erase), self.recipe.img_size
        if k == 0:  # a host fact: the plan's length
            return x
        noise = hash_normal(plan.noise_seed, 3 * size * size).view(k, 3, size, size)
        ys, xs = torch.arange(size, device=x.device).view(1, 1, -1, 1), torch.arange(size, device=x.device)
        top, left, h, w = (plan.erase[:, i].view(k, 1, 1, 1) for i in range(4))
        inside = (ys >= top) & (ys < top + h) & (xs >= left) & (xs < left + w)
        sub = x.index_select(0, plan.erase_index)
        return x.index_copy(0, plan.erase_index, torch.where(inside, noise, sub))

    def __call__(
        self, batch: EncodedBatch | CroppedBatch, labels: Tensor, device: torch.device | str
    ) -> tuple[Tensor, Tensor]:
        """-> (normalised float (B, 3, S, S), soft targets (B, num_classes)), both on ``device``."""
        device = torch.device(device)
        plan = batch.plan.to(device)
        x = self.pixels(replace(batch, plan=plan), device)
        self._mean, self._std = self._mean.to(device), self._std.to(device)
        x = self.erase((x - self._mean) / self._std, plan)
        mix = plan.mix
        if mix.box is not None:  # cutmix: the partner's box, timm's x.flip(0) pairing
            yl, yh, xl, xh = mix.box
            x = x.clone()
            x[:, :, yl:yh, xl:xh] = x.flip(0)[:, :, yl:yh, xl:xh]
        elif mix.lam != 1.0:
            x = x * mix.lam + x.flip(0) * (1.0 - mix.lam)
        r = self.recipe
        return x, mixup_target(labels.to(device, non_blocking=True), r.num_classes, mix.lam, r.smoothing)
