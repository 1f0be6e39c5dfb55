"""device_ops.apply_op against timm's own PIL ops (NAME_TO_OP), on real photos and a digit.

Every op in OPS runs at timm magnitudes 1, 5 and 9 with both signs where timm draws one, all of them in
one batch per image size (so the per-sample arguments differ within a call), and each result is compared
with timm's PIL op on that image alone. Bounds: colour and point ops are exact (measured 0 everywhere);
geometric ops are within one level, the mean bounded by what was measured here plus a margin (the
module's table).
"""

from __future__ import annotations

import random
from functools import cache

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.auto_augment import LEVEL_TO_ARG, NAME_TO_OP

from swat_dist.data.pixels.device_ops import OPS, apply_op

FILL = tuple(round(255 * m) for m in (0.485, 0.456, 0.406))  # timm's img_mean for ImageNet: (124, 116, 104)
HPARAMS = dict(translate_const=100, img_mean=FILL)
MAGNITUDES = (1, 5, 9)
GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}
# Mean |diff| allowed for geometric ops, in 0..255 units; the max is 1.
# Measured on these images (device_ops' table): mean <= 0.052, max 1, bilinear and bicubic (PIL filters in
# double, we in float32: a value PIL computes as k - 1e-13 it truncates to k - 1, we to k). torch's own
# bicubic (a = -0.75, PIL's transform a = -1) would be mean 0.56, max 12, 12% of pixels > 1 off.
MEAN_BOUND = 0.1


def _rgb(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).float()


@cache
def _images() -> tuple[tuple[torch.Tensor, ...], ...]:
    """(photos at 160x120, the digit at 64x64): one tuple per size, since a batch holds one size."""
    from sklearn.datasets import load_digits, load_sample_images  # here: GPU machines have no sklearn

    photos = tuple(_rgb(Image.fromarray(a).resize((160, 120), Image.BILINEAR)) for a in load_sample_images().images)
    digit = load_digits().images[0] * (255 / 16)
    digit_img = Image.fromarray(digit.astype(np.uint8)).resize((64, 64), Image.BILINEAR)
    return photos, (_rgb(digit_img),)


def _pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray(x.permute(1, 2, 0).to(torch.uint8).numpy())


def _level_args(name: str, magnitude: int) -> list[float]:
    """timm's argument(s) for op at magnitude: both signs where its level function draws one."""
    level = LEVEL_TO_ARG[name]
    if level is None:
        return [0.0]
    state = random.getstate()
    try:  # random.seed(0) makes _randomly_negate negate (0.84 > 0.5), random.seed(1) not (0.13)
        args = []
        for seed in (0, 1):
            random.seed(seed)
            args.append(level(magnitude, HPARAMS)[0])  # as timm passes it: int bits / thresholds stay int
    finally:
        random.setstate(state)
    return sorted(set(args))


def _cases(name: str) -> list[float]:
    return [a for m in MAGNITUDES for a in _level_args(name, m)]


def _run_pil(name: str, img: torch.Tensor, arg: float, bicubic: bool) -> torch.Tensor:
    resample = Image.BICUBIC if bicubic else Image.BILINEAR
    args = [] if LEVEL_TO_ARG[name] is None else [arg]
    return _rgb(NAME_TO_OP[name](_pil(img), *args, fillcolor=FILL, resample=resample))


def compare(name: str, bicubic: bool) -> list[tuple[float, float]]:
    """(mean |diff|, max |diff|) per (image, argument), device op vs PIL op."""
    stats = []
    for group in _images():
        pairs = [(img, a) for img in group for a in _cases(name)]
        x = torch.stack([img for img, _ in pairs])
        args = torch.tensor([a for _, a in pairs], dtype=torch.float32)
        out = apply_op(name, x, args, bicubic, FILL)
        assert out.dtype == torch.float32 and out.shape == x.shape
        assert torch.equal(out, out.round()) and out.min() >= 0 and out.max() <= 255
        for i, (img, a) in enumerate(pairs):
            diff = (out[i] - _run_pil(name, img, a, bicubic)).abs()
            stats.append((diff.mean().item(), diff.max().item()))
    return stats


def _modes(name: str) -> list[bool]:
    return [False, True] if name in GEOMETRIC else [False]


@pytest.mark.parametrize("name", sorted(OPS - GEOMETRIC))
def test_colour_and_point_ops_equal_pil(name: str) -> None:
    # Exact by construction (PIL's tables, integer arithmetic, float32 blend as ImagingBlend does it).
    for mean, worst in compare(name, bicubic=False):
        assert worst == 0, f"{name}: mean {mean:.4f}, max {worst}"


@pytest.mark.parametrize("bicubic", [False, True], ids=["bilinear", "bicubic"])
@pytest.mark.parametrize("name", sorted(GEOMETRIC))
def test_geometric_ops_within_measured_bounds(name: str, bicubic: bool) -> None:
    stats = compare(name, bicubic)
    mean, worst = max(s[0] for s in stats), max(s[1] for s in stats)
    assert mean <= MEAN_BOUND and worst <= 1, (name, bicubic, mean, worst)


@pytest.mark.parametrize("name", sorted(GEOMETRIC))
def test_geometric_ops_at_zero_are_the_identity(name: str) -> None:
    # timm's magnitude 0 (reachable with mstd): PIL copies (Rotate) or samples at exact pixel centres.
    for group in _images():
        x = torch.stack(group)
        for bicubic in (False, True):
            assert torch.equal(apply_op(name, x, torch.zeros(len(x)), bicubic, FILL), x), (name, bicubic)


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (1, 7), (5, 2)])
def test_tiny_images_match_pil(size: tuple[int, int]) -> None:
    # Edges everywhere: SMOOTH has no interior, every geometric tap is clamped, one-pixel histograms.
    x = torch.randint(0, 256, (1, 3, *size), generator=torch.Generator().manual_seed(1)).float()
    for name in sorted(OPS):
        for bicubic, arg in ((b, a) for b in _modes(name) for a in _cases(name)):
            out = apply_op(name, x, torch.tensor([arg], dtype=torch.float32), bicubic, FILL)[0]
            worst = (out - _run_pil(name, x[0], arg, bicubic)).abs().max()
            assert worst <= (1 if name in GEOMETRIC else 0), (name, bicubic, arg, worst)


def test_timm_ops_are_all_covered() -> None:
    from timm.data.auto_augment import _RAND_INCREASING_TRANSFORMS, _RAND_TRANSFORMS

    assert set(_RAND_TRANSFORMS) | set(_RAND_INCREASING_TRANSFORMS) == OPS


@pytest.mark.parametrize("name", sorted(OPS))
def test_a_sample_does_not_depend_on_its_batch(name: str) -> None:
    photos = _images()[0]
    x = torch.stack([photos[0], photos[1], photos[0].flip(2)])
    args = torch.tensor(_cases(name)[-3:], dtype=torch.float32)  # magnitude 9 (or 5 and 9): differing args
    for bicubic in _modes(name):
        batch = apply_op(name, x, args, bicubic, FILL)
        for i in range(3):
            alone = apply_op(name, x[i : i + 1], args[i : i + 1], bicubic, FILL)
            assert torch.equal(alone[0], batch[i]), (name, bicubic, i)


@pytest.mark.parametrize("name", sorted(OPS))
def test_empty_batch(name: str) -> None:
    for bicubic in _modes(name):
        out = apply_op(name, torch.zeros(0, 3, 8, 8), torch.zeros(0), bicubic, FILL)
        assert out.shape == (0, 3, 8, 8) and out.dtype == torch.float32


@pytest.mark.parametrize("name", sorted(OPS))
def test_no_host_sync(name: str) -> None:
    # Meta tensors hold no values: .item(), bool(tensor), .nonzero(), mask indexing and .tolist() raise on
    # them, and so does mixing in a non-scalar tensor made on another device.
    for bicubic in _modes(name):
        out = apply_op(name, torch.zeros(4, 3, 16, 12, device="meta"), torch.zeros(4, device="meta"), bicubic, FILL)
        assert out.device.type == "meta" and out.shape == (4, 3, 16, 12)


def test_bad_input_is_one_line() -> None:
    with pytest.raises(ValueError, match="unknown RandAugment op 'Blur'") as err:
        apply_op("Blur", torch.zeros(1, 3, 8, 8), torch.zeros(1), False, FILL)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"x must be \(n, 3, H, W\) and arg \(n,\)"):
        apply_op("Invert", torch.zeros(2, 3, 8, 8), torch.zeros(3), False, FILL)
    with pytest.raises(ValueError, match="x must be float32 and arg on x's device"):
        apply_op("Invert", torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.zeros(1), False, FILL)
    with pytest.raises(ValueError, match="x must be float32 and arg on x's device"):
        apply_op("Invert", torch.zeros(1, 3, 8, 8), torch.zeros(1, device="meta"), False, FILL)
    with pytest.raises(ValueError, match="fill must be 3 RGB ints"):
        apply_op("Rotate", torch.zeros(1, 3, 8, 8), torch.zeros(1), False, (1, 2))


@pytest.mark.gpu
def test_cuda_equals_cpu_without_host_sync() -> None:
    # Any image serves to compare devices: a smooth gradient with noise, made without sklearn.
    gen = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 255, 96).view(1, 1, 1, 96).expand(6, 3, 72, 96)
    x = (ramp + torch.randint(-40, 40, (6, 3, 72, 96), generator=gen)).clamp(0, 255).round()
    x_cuda = x.cuda()
    for name in sorted(OPS):
        args = torch.tensor((_cases(name) * 6)[:6], dtype=torch.float32)
        args_cuda = args.cuda()
        for bicubic in _modes(name):
            torch.cuda.set_sync_debug_mode("error")  # a synchronising call raises
            try:
                out = apply_op(name, x_cuda, args_cuda, bicubic, FILL)
            finally:
                torch.cuda.set_sync_debug_mode("default")
            diff = (out.cpu() - apply_op(name, x, args, bicubic, FILL)).abs()
            # colour ops: integer tables and IEEE float32 steps, equal; geometric: cos/sin and sampling
            # round differently per device, a level here and there.
            bound = (1, 0.01) if name in GEOMETRIC else (0, 0)
            assert diff.max() <= bound[0] and diff.mean() <= bound[1], (name, bicubic, diff.max(), diff.mean())
