"""The augmentation plan of the device pipeline: every random decision, drawn on the CPU, exactly timm's.

A loader worker seeds a sample with ``seed_everything(sample_seed(seed, epoch, id))`` and calls
:meth:`Planner.sample`; what it returns are the decisions timm's PIL train transform
(:func:`.transforms.train_transform`) draws from the same global RNG state, bit for bit (tested by
executing the plan with timm's PIL ops on real photos): the crop box (timm's own
``RandomResizedCropAndInterpolation.get_params``) and its interpolation (``random.choice``), the flip
(torchvision's ``torch.rand(1) < p``), then timm's own ``RandAugment.__call__`` over stand-ins of its
``AugmentOp`` objects whose ``__call__`` is timm's (prob, magnitude with ``mstd``, clipping) but whose
level and op functions record instead of drawing pixels; a geometric op also makes timm's resample draw
(``_check_args_tf``), so the RNG stream is consumed as the PIL op would. After timm's draws (so they
cannot shift them): the erasing box by timm's ``RandomErasing`` rules (pixel mode, one box) and a seed
for its noise. :meth:`Planner.batch` groups a batch's plans into per-op steps and draws the batch's
mixup/cutmix from ``np.random.Generator(mix_seed)`` by timm's ``Mixup`` batch-mode rules. (The recording
RandAugment, the erasing box and the mixup draws live in :mod:`.timm_draws`.) :meth:`Planner.cropped` plans an
image FFCV has already cropped and flipped: the same draws from RandAugment on.

Only RandAugment policies ("rand-...") or none run on the device; colour jitter (which timm applies only
without a policy) is refused there rather than approximated: set ``data.color_jitter`` to 0 or use a policy.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from timm.data.transforms import RandomResizedCropAndInterpolation
from torch import Tensor
from torchvision.transforms import InterpolationMode

from .recipe import Recipe
from .timm_draws import erase_box, mix_params, recording_rand_augment


@dataclass(frozen=True)
class OpDraw:
    """One RandAugment layer that runs: the ``arg`` timm's op function receives (0 for AutoContrast,
    Equalize, Invert), the resample of a geometric op, and the magnitude drawn (after clipping)."""

    layer: int
    name: str
    arg: float
    bicubic: bool
    magnitude: float


@dataclass(frozen=True)
class SamplePlan:
    """One sample's decisions: crop (top, left, height, width) of a width x height image, its resize filter,
    flip, RandAugment layers that run, erasing box (top, left, height, width on the output) or None."""

    width: int
    height: int
    crop: tuple[int, int, int, int]
    resize_bicubic: bool
    flip: bool
    ops: tuple[OpDraw, ...]
    erase: tuple[int, int, int, int] | None
    noise_seed: int


@dataclass(frozen=True)
class Step:
    """One batched op call: the batch positions that run ``name`` in one layer with one resample mode."""

    name: str
    bicubic: bool
    index: Tensor  # int64 (k,)
    args: Tensor  # float32 (k,)


@dataclass(frozen=True)
class Mix:
    """A batch's mixup/cutmix: partner = the mirror position (timm's ``flip(0)``); ``box`` = (yl, yh, xl, xh)."""

    lam: float = 1.0
    box: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class BatchPlan:
    """A batch's plans as tensors (CPU until :meth:`to`); python values are host decisions, never synced."""

    sizes: list[tuple[int, int]]  # (width, height) the plans were drawn for: checked against the decoded images
    crops: list[tuple[int, int, int, int]]  # python ints: the device slices decoded images by them
    groups: list[list[int]]  # batch positions resized together (see resize_groups)
    group_index: list[Tensor]  # the same as int64 tensors, for index_copy on the device
    crop_hw: Tensor  # float32 (B, 2): crop height, width
    bicubic: Tensor  # bool (B,): resize filter
    flip: Tensor  # bool (B,)
    steps: list[Step]  # layer-major, in execution order
    erase_index: Tensor  # int64 (k,): the batch positions with an erasing box
    erase: Tensor  # int64 (k, 4): their boxes (top, left, height, width)
    noise_seed: Tensor  # int64 (k,): their noise seeds
    mix: Mix = field(default_factory=Mix)

    def _map(self, fn: Any) -> BatchPlan:
        steps = [replace(s, index=fn(s.index), args=fn(s.args)) for s in self.steps]
        group_index = [fn(t) for t in self.group_index]
        tensors = {
            k: fn(getattr(self, k)) for k in ("crop_hw", "bicubic", "flip", "erase_index", "erase", "noise_seed")
        }
        return replace(self, steps=steps, group_index=group_index, **tensors)

    def to(self, device: torch.device | str) -> BatchPlan:
        return self._map(lambda t: t.to(device, non_blocking=True))

    def pin_memory(self) -> BatchPlan:
        return self._map(lambda t: t.pin_memory())


def resize_groups(crops: list[tuple[int, int, int, int]], waste: float = 1.5) -> list[list[int]]:
    """Batch positions in groups whose zero canvas (members x largest height x largest width) holds at most
    ``waste`` x their crops' pixels: one canvas for a whole batch is as large as its largest crop per member
    (9.6x the crops' pixels for a batch of ImageNet-like sizes up to 2000 px; 1.5x in 10 groups this way)."""
    order = sorted(range(len(crops)), key=lambda i: crops[i][2] * crops[i][3], reverse=True)
    groups: list[list[int]] = []
    members: list[int] = []
    hc = wc = area = 0
    for i in order:
        h, w = crops[i][2:]
        if members and (len(members) + 1) * max(hc, h) * max(wc, w) > waste * (area + h * w):
            groups.append(members)
            members, hc, wc, area = [], 0, 0, 0
        members.append(i)
        hc, wc, area = max(hc, h), max(wc, w), area + h * w
    return [*groups, members] if members else groups


class Planner:
    """Draws sample plans from the global ``random`` / ``np.random`` / torch state (seed it per sample first)."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self._rrc = RandomResizedCropAndInterpolation(recipe.img_size, recipe.scale, recipe.ratio, recipe.interpolation)
        ra = recording_rand_augment(recipe)
        self._ra: Any = ra[0] if ra else None  # timm's RandAugment over recorders
        self._op_names: list[str] = ra[1] if ra else []

    def sample(self, width: int, height: int) -> SamplePlan:
        r = self.recipe
        # timm reads only the size: a zero-storage tensor of that shape stands in for the image
        top, left, h, w = self._rrc.get_params(torch.empty(()).expand(height, width), r.scale, r.ratio)
        interp = self._rrc.interpolation
        interp = random.choice(interp) if isinstance(interp, (tuple, list)) else interp
        flip = bool(torch.rand(1) < r.hflip) if r.hflip > 0 else False  # torchvision's RandomHorizontalFlip
        return self._colour(width, height, (top, left, h, w), interp == InterpolationMode.BICUBIC, flip)

    def cropped(self) -> SamplePlan:
        """The plan of an image already cropped, resized and flipped to ``img_size`` (FFCV does that in its
        threads, from its own seeds): the draws of timm's colour stage (what ``colour_transform`` draws
        from the same state in loader mode), then erasing. Its crop is the whole image, unflipped."""
        size = self.recipe.img_size
        return self._colour(size, size, (0, 0, size, size), False, False)

    def _colour(
        self, width: int, height: int, crop: tuple[int, int, int, int], bicubic: bool, flip: bool
    ) -> SamplePlan:
        """The draws after crop and flip: RandAugment, the erasing box, the noise seed."""
        ops: list[OpDraw] = []
        if self._ra is not None:
            drawn = self._ra([])  # timm's RandAugment.__call__: np.random.choice of ops, then each op
            ops = [OpDraw(i, d[0], d[1], d[2], d[3]) for i, d in enumerate(drawn) if d is not None]
        erase = erase_box(self.recipe) if self.recipe.reprob > 0 else None
        return SamplePlan(width, height, crop, bicubic, flip, tuple(ops), erase, random.getrandbits(63))

    def batch(self, plans: list[SamplePlan], mix_seed: int) -> BatchPlan:
        erased = [(i, p) for i, p in enumerate(plans) if p.erase is not None]
        groups = resize_groups([p.crop for p in plans])
        return BatchPlan(
            sizes=[(p.width, p.height) for p in plans],
            crops=[p.crop for p in plans],
            groups=groups,
            group_index=[torch.tensor(g, dtype=torch.int64) for g in groups],
            crop_hw=torch.tensor([p.crop[2:] for p in plans], dtype=torch.float32).view(len(plans), 2),
            bicubic=torch.tensor([p.resize_bicubic for p in plans], dtype=torch.bool),
            flip=torch.tensor([p.flip for p in plans], dtype=torch.bool),
            steps=self._steps(plans),
            erase_index=torch.tensor([i for i, _ in erased], dtype=torch.int64),
            erase=torch.tensor([p.erase for _, p in erased], dtype=torch.int64).view(len(erased), 4),
            noise_seed=torch.tensor([p.noise_seed for _, p in erased], dtype=torch.int64),
            mix=Mix(*mix_params(self.recipe, np.random.default_rng(mix_seed))),
        )

    def _steps(self, plans: list[SamplePlan]) -> list[Step]:
        groups: dict[tuple[int, int, bool], list[tuple[int, float]]] = {}
        for pos, p in enumerate(plans):
            for d in p.ops:
                groups.setdefault((d.layer, self._op_names.index(d.name), d.bicubic), []).append((pos, d.arg))
        return [
            Step(self._op_names[op], bicubic, torch.tensor([m[0] for m in members], dtype=torch.int64),
                 torch.tensor([m[1] for m in members], dtype=torch.float32))
            for (_, op, bicubic), members in sorted(groups.items())
        ]  # fmt: skip
