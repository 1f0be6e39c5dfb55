"""The draws of timm's augmentations that the device plan makes without timm's pixels (:mod:`.device_plan`).

- :func:`recording_rand_augment`: timm's own ``RandAugment`` (``rand_augment_transform`` with the hparams
  ``create_transform`` gives it) whose ``AugmentOp`` objects are :class:`Recorder` stand-ins: timm's
  ``AugmentOp.__call__`` draws prob, magnitude (``mstd``, clipping) and sign as usual, but the level and op
  functions record instead of drawing pixels; a geometric op also makes the resample draw the PIL op makes
  (``_check_args_tf``), so the global RNG streams are consumed exactly as timm's PIL transform consumes them.
- :func:`erase_box`: timm's ``RandomErasing`` rules for one box (pixel mode), from the global ``random``.
- :func:`mix_params`: timm's ``Mixup`` batch-mode draws, from a seeded ``np.random.Generator``.
"""

from __future__ import annotations

import copy
import math
import random
from typing import Any

import numpy as np
from timm.data.auto_augment import _RANDOM_INTERPOLATION, _check_args_tf, rand_augment_transform
from timm.data.transforms import str_to_pil_interp

from .device_ops import OPS
from .recipe import Recipe

GEOMETRIC = frozenset({"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"})  # timm's that resample
_SKIPPED = object()


class Recorder:
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


def recording_rand_augment(recipe: Recipe) -> tuple[Any, list[str]] | None:
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
    ra.ops = [Recorder(op) for op in ra.ops]
    return ra, names


def erase_box(recipe: Recipe) -> tuple[int, int, int, int] | None:
    """timm's ``RandomErasing._erase`` rules for one box (count 1, area 0.02-1/3, aspect 0.3-1/0.3), drawn
    from the global ``random`` after timm's own draws: (top, left, height, width) on the output, or None."""
    if random.random() > recipe.reprob:
        return None
    size = recipe.img_size
    log_aspect = (math.log(0.3), math.log(1 / 0.3))
    for _ in range(10):
        target_area = random.uniform(0.02, 1 / 3) * size * size
        aspect = math.exp(random.uniform(*log_aspect))
        h, w = round(math.sqrt(target_area * aspect)), round(math.sqrt(target_area / aspect))
        if w < size and h < size:
            return random.randint(0, size - h), random.randint(0, size - w), h, w
    return None


def mix_params(recipe: Recipe, gen: np.random.Generator) -> tuple[float, tuple[int, int, int, int] | None]:
    """timm's ``Mixup._params_per_batch`` then ``cutmix_bbox_and_lam`` (``rand_bbox``, correct_lam=True),
    with ``gen`` in place of the global ``np.random``: (lambda, the cutmix box (yl, yh, xl, xh) or None)."""
    r = recipe
    if not (r.mixup > 0 or r.cutmix > 0) or not gen.random() < r.mixup_prob:
        return 1.0, None
    if r.mixup > 0 and r.cutmix > 0:
        cut = bool(gen.random() < r.switch_prob)
        lam = float(gen.beta(r.cutmix, r.cutmix) if cut else gen.beta(r.mixup, r.mixup))
    else:
        cut = r.cutmix > 0
        alpha = r.cutmix if cut else r.mixup
        lam = float(gen.beta(alpha, alpha))
    if lam == 1.0 or not cut:
        return lam, None
    size = r.img_size
    cut_size = int(size * math.sqrt(1 - lam))
    cy, cx = (int(v) for v in gen.integers(0, size, 2))
    yl, yh = max(cy - cut_size // 2, 0), min(cy + (cut_size + 1) // 2, size)
    xl, xh = max(cx - cut_size // 2, 0), min(cx + (cut_size + 1) // 2, size)
    return 1.0 - (yh - yl) * (xh - xl) / float(size * size), (yl, yh, xl, xh)
