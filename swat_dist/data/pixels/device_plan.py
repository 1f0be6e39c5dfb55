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
mixup/cutmix from ``np.random.Generator(mix_seed)`` by timm's ``Mixup`` batch-mode rules.

Only RandAugment policies ("rand-...") or none run on the device; colour jitter (which timm applies only
without a policy) is refused there rather than approximated: set ``data.color_jitter`` to 0 or use a policy.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from timm.data.auto_augment import _RANDOM_INTERPOLATION, _check_args_tf, rand_augment_transform
from timm.data.transforms import RandomResizedCropAndInterpolation, str_to_pil_interp
from torch import Tensor
from torchvision.transforms import InterpolationMode

from .device_ops import OPS

GEOMETRIC = frozenset({"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"})  # timm's that resample
_INTERPOLATIONS = ("random", "bilinear", "bicubic")  # what the device resize and ops implement
_SKIPPED = object()


@dataclass(frozen=True)
class Recipe:
    """The train recipe the device executes (the ``data.*`` settings of the loader path)."""

    img_size: int
    num_classes: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    interpolation: str = "random"
    auto_augment: str | None = None
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    reprob: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    switch_prob: float = 0.5
    smoothing: float = 0.1
    color_jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"data.interpolation={self.interpolation!r}: the device pipeline has {_INTERPOLATIONS}")
        aa = self.auto_augment
        if aa and not aa.startswith("rand"):
            raise ValueError(f"data.auto_augment={aa!r}: only RandAugment policies ('rand-...') run on the device")
        if not aa and self.color_jitter > 0:
            raise ValueError("data.augment_on=device needs data.color_jitter=0 or a RandAugment data.auto_augment")


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


class _Recorder:
    """Stands in for one timm ``AugmentOp`` inside timm's own ``RandAugment``: timm's ``AugmentOp.__call__``
    draws prob, magnitude and sign; its level function and op function are replaced by ones that record."""

    def __init__(self, op: Any) -> None:
        self.op, self._level_fn = copy.copy(op), op.level_fn
        self.op.level_fn, self.op.aug_fn = self._level, self._record
        self.magnitude = math.nan

    def _level(self, magnitude: float, hparams: dict) -> tuple:
        self.magnitude = magnitude
        return self._level_fn(magnitude, hparams) if self._level_fn is not None else ()

    def _record(self, _img: Any, *level_args: float, **kwargs: Any) -> tuple[float, bool]:
        bicubic = False
        if self.op.name in GEOMETRIC:
            _check_args_tf(kwargs)  # the resample draw the PIL op makes
            bicubic = kwargs["resample"] == _RANDOM_INTERPOLATION[1]
        return (float(level_args[0]) if level_args else 0.0), bicubic

    def __call__(self, drawn: list) -> list:
        out = self.op(_SKIPPED)
        drawn.append(None if out is _SKIPPED else (self.op.name, *out, self.magnitude))
        return drawn


def _rand_augment(recipe: Recipe) -> tuple[Any, list[str]] | None:
    """timm's RandAugment with create_transform's hparams, its ops replaced by recorders; None without one."""
    if not recipe.auto_augment:
        return None
    hparams: dict[str, Any] = dict(
        translate_const=int(recipe.img_size * 0.45), img_mean=tuple(min(255, round(255 * m)) for m in recipe.mean)
    )
    if recipe.interpolation != "random":
        hparams["interpolation"] = str_to_pil_interp(recipe.interpolation)
    try:
        ra = rand_augment_transform(recipe.auto_augment, hparams)
    except (AssertionError, ValueError, KeyError) as e:
        raise ValueError(
            f"data.auto_augment={recipe.auto_augment!r}: timm does not read it ({e or 'bad section'})"
        ) from None
    names = [op.name for op in ra.ops]
    if missing := sorted(set(names) - OPS):
        raise ValueError(f"data.auto_augment={recipe.auto_augment!r}: ops {missing} do not run on the device")
    ra.ops = [_Recorder(op) for op in ra.ops]
    return ra, names


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
        ra = _rand_augment(recipe)
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
        erase = self._erase_box() if self.recipe.reprob > 0 else None
        return SamplePlan(width, height, crop, bicubic, flip, tuple(ops), erase, random.getrandbits(63))

    def _erase_box(self) -> tuple[int, int, int, int] | None:
        """timm's ``RandomErasing._erase`` rules for one box (count 1, area 0.02-1/3, aspect 0.3-1/0.3)."""
        if random.random() > self.recipe.reprob:
            return None
        size = self.recipe.img_size
        log_aspect = (math.log(0.3), math.log(1 / 0.3))
        for _ in range(10):
            target_area = random.uniform(0.02, 1 / 3) * size * size
            aspect = math.exp(random.uniform(*log_aspect))
            h, w = round(math.sqrt(target_area * aspect)), round(math.sqrt(target_area / aspect))
            if w < size and h < size:
                return random.randint(0, size - h), random.randint(0, size - w), h, w
        return None

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
            mix=self._mix(np.random.default_rng(mix_seed)),
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

    def _mix(self, gen: np.random.Generator) -> Mix:
        """timm's ``Mixup._params_per_batch`` then ``cutmix_bbox_and_lam`` (``rand_bbox``, correct_lam=True),
        with ``gen`` in place of the global ``np.random``."""
        r = self.recipe
        if not (r.mixup > 0 or r.cutmix > 0) or not gen.random() < r.mixup_prob:
            return Mix()
        if r.mixup > 0 and r.cutmix > 0:
            cut = bool(gen.random() < r.switch_prob)
            lam = float(gen.beta(r.cutmix, r.cutmix) if cut else gen.beta(r.mixup, r.mixup))
        else:
            cut = r.cutmix > 0
            alpha = r.cutmix if cut else r.mixup
            lam = float(gen.beta(alpha, alpha))
        if lam == 1.0 or not cut:
            return Mix(lam)
        size = r.img_size
        cut_size = int(size * math.sqrt(1 - lam))
        cy, cx = (int(v) for v in gen.integers(0, size, 2))
        yl, yh = max(cy - cut_size // 2, 0), min(cy + (cut_size + 1) // 2, size)
        xl, xh = max(cx - cut_size // 2, 0), min(cx + (cut_size + 1) // 2, size)
        return Mix(1.0 - (yh - yl) * (xh - xl) / float(size * size), (yl, yh, xl, xh))
