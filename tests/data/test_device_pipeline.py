"""The device pipeline executes a plan as timm's PIL transform would (measured on real photos), its erasing noise is
a pure function of (seed, element), a sample's pixels do not depend on its batch, members decoded on the worker
take the same path, and on CUDA nothing waits for the device."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.mixup import mixup_target

from swat_dist.data.loaders.seeds import sample_seed, seed_everything
from swat_dist.data.pixels.device_pipeline import DevicePipeline, EncodedBatch, hash_normal
from swat_dist.data.pixels.device_plan import Mix, Planner, Recipe, SamplePlan
from swat_dist.data.pixels.transforms import train_transform

from .test_device_plan import IMAGES

SWAT = "rand-m9-mstd0.5-inc1"


def jpeg(img: Image.Image) -> torch.Tensor:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


JPEGS = [jpeg(img) for img in IMAGES]
DECODED = [Image.open(io.BytesIO(j.numpy().tobytes())).convert("RGB") for j in JPEGS]  # what a PIL loader reads


def planned(r: Recipe, n: int, first: int = 0) -> tuple[list[SamplePlan], list[int]]:
    planner, out, which = Planner(r), [], []
    for i in range(first, first + n):
        k = i % len(IMAGES)
        seed_everything(sample_seed(3, 1, i))
        out.append(planner.sample(*DECODED[k].size))
        which.append(k)
    return out, which


def encoded(r: Recipe, plans: list[SamplePlan], which: list[int], mix_seed: int = 0) -> EncodedBatch:
    return EncodedBatch([JPEGS[k] for k in which], Planner(r).batch(plans, mix_seed))


def reference(r: Recipe, n: int) -> torch.Tensor:
    """timm's own PIL train transform on the same images with the same per-sample seeds."""
    tf = train_transform(r.img_size, r.scale, r.ratio, r.hflip, r.interpolation, r.auto_augment, 0.0, r.mean)
    out = []
    for i in range(n):
        seed_everything(sample_seed(3, 1, i))
        out.append(tf(DECODED[i % len(IMAGES)]))
    return torch.stack(out).float()


# Measured here (224 px, the photos, strips and a digit as JPEGs): mean |diff| 0.002 of a level without
# RandAugment (128 samples: 99.8% of values exact, max 1; 2 seen once: PIL's fixed-point weights against our
# float32 ones, rounded twice); with the SWAT policy 0.035 on these 32 (device_ops as of 83f6400; 0.008 over 128
# with its later work): the ops' own differences from PIL - a solarize/posterize threshold crossed by one level
# flips a pixel far, hence no useful max. The bounds leave 5-7x room.
@pytest.mark.parametrize(("aa", "mean_bound", "max_bound"), [(None, 0.01, 2), (SWAT, 0.25, 255)])
def test_pixels_match_timms_pil_transform_on_real_photos(aa, mean_bound, max_bound):
    r = Recipe(224, 10, auto_augment=aa)
    plans, which = planned(r, 32)
    got = DevicePipeline(r).pixels(encoded(r, plans, which), "cpu")
    diff = (got - reference(r, 32)).abs()
    assert got.shape == (32, 3, 224, 224) and torch.equal(got, got.round()) and 0 <= got.min() <= got.max() <= 255
    assert diff.mean() <= mean_bound and diff.max() <= max_bound, (diff.mean(), diff.max())
    if aa is None:
        assert (diff == 0).float().mean() > 0.99  # nearly every pixel is PIL's exactly


def test_hash_noise_is_deterministic_standard_normal_and_per_element():
    seeds = torch.tensor([0, 1, 2**62 + 12345, 2**63 - 1, 7, 8, 9, 10], dtype=torch.int64)
    z = hash_normal(seeds, 3 * 224 * 224)
    assert torch.equal(z, hash_normal(seeds, 3 * 224 * 224))
    assert torch.equal(z[3:5, :1000], hash_normal(seeds[3:5], 1000))  # (seed, index) alone decide a value
    flat = z.flatten().double()  # 1.2M values: se of the mean 0.0009
    assert abs(flat.mean()) < 0.005 and abs(flat.std() - 1) < 0.005
    assert abs((flat.abs() < 1).double().mean() - 0.6827) < 0.003
    assert abs((flat.abs() < 2).double().mean() - 0.9545) < 0.002
    corr = np.corrcoef(z[:, :50_000].numpy())
    assert np.abs(corr - np.eye(len(seeds))).max() < 0.03  # seeds give unrelated noise
    assert torch.isfinite(z).all() and z.abs().max() < 6.5


def test_erasing_writes_the_planned_noise_inside_each_box_only():
    r = Recipe(64, 10, reprob=0.7)
    plans, which = planned(r, 12)
    batch = encoded(r, plans, which)
    pipe = DevicePipeline(r)
    x, _ = pipe(batch, torch.zeros(12, dtype=torch.int64), "cpu")
    clean = (pipe.pixels(batch, "cpu") - pipe._mean) / pipe._std
    erased = [i for i, p in enumerate(plans) if p.erase is not None]
    assert 3 <= len(erased) < 12
    for i, p in enumerate(plans):
        inside = torch.zeros(64, 64, dtype=torch.bool)
        if p.erase is not None:
            top, left, h, w = p.erase
            inside[top : top + h, left : left + w] = True
            noise = hash_normal(torch.tensor([p.noise_seed]), 3 * 64 * 64).view(3, 64, 64)
            torch.testing.assert_close(x[i][:, inside], noise[:, inside], rtol=0, atol=1e-6)
        torch.testing.assert_close(x[i][:, ~inside], clean[i][:, ~inside], rtol=0, atol=1e-6)


def test_a_samples_output_does_not_depend_on_its_batch():
    r = Recipe(96, 10, auto_augment=SWAT, reprob=0.5)
    plans, which = planned(r, 10)
    pipe = DevicePipeline(r)
    batch = encoded(r, plans, which)
    assert len(batch.plan.groups) > 1  # resized in several canvases, put back in place
    together, _ = pipe(batch, torch.zeros(10, dtype=torch.int64), "cpu")
    for i in range(10):
        alone, _ = pipe(encoded(r, plans[i : i + 1], which[i : i + 1]), torch.zeros(1, dtype=torch.int64), "cpu")
        # the canvas is the batch's largest crop: zero weights on the padding keep every sum the same
        torch.testing.assert_close(alone[0], together[i], rtol=0, atol=1e-5)


@pytest.mark.parametrize("mix", [Mix(0.7), Mix(0.61, (10, 50, 20, 60))])
def test_mixup_and_cutmix_pair_mirror_positions_as_timm_with_its_targets(mix):
    r = Recipe(64, 10, mixup=0.8, cutmix=1.0, smoothing=0.1)
    plans, which = planned(r, 6)
    batch = encoded(r, plans, which)
    labels = torch.tensor([0, 3, 3, 9, 1, 2])
    pipe = DevicePipeline(r)
    plain, _ = pipe(replace(batch, plan=replace(batch.plan, mix=Mix())), labels, "cpu")
    x, y = pipe(replace(batch, plan=replace(batch.plan, mix=mix)), labels, "cpu")
    if mix.box is None:
        want = plain * mix.lam + plain.flip(0) * (1 - mix.lam)
    else:
        yl, yh, xl, xh = mix.box
        want = plain.clone()
        want[:, :, yl:yh, xl:xh] = plain.flip(0)[:, :, yl:yh, xl:xh]
    torch.testing.assert_close(x, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(y, mixup_target(labels, 10, mix.lam, 0.1))
    assert torch.allclose(y.sum(1), torch.ones(6))


def test_members_decoded_on_the_worker_take_the_same_path():
    r = Recipe(224, 10)
    plans, which = planned(r, 10)
    batch = encoded(r, plans, which)
    as_png = {1, 4, 7}  # batch positions a worker decoded (PNG, CMYK, ...): their pixels join as they are
    decoded = {i: torch.from_numpy(np.array(DECODED[which[i]])).permute(2, 0, 1).contiguous() for i in as_png}
    jpegs = [torch.empty(0, dtype=torch.uint8) if i in decoded else j for i, j in enumerate(batch.jpegs)]
    mixed = DevicePipeline(r).pixels(replace(batch, jpegs=jpegs, decoded=decoded), "cpu")
    want = reference(r, 10)
    assert (mixed - want).abs().mean() <= 0.01
    torch.testing.assert_close(mixed, DevicePipeline(r).pixels(batch, "cpu"), rtol=0, atol=0)  # same decode bits


def test_a_decoded_size_other_than_the_planned_one_is_a_one_line_error():
    r = Recipe(64, 10)
    plans, which = planned(r, 2)
    batch = encoded(r, plans, which)
    wrong = replace(batch, jpegs=[batch.jpegs[0], jpeg(IMAGES[0].resize((50, 40)))])
    with pytest.raises(ValueError, match=r"batch position 1: decoded .* planned for") as e:
        DevicePipeline(r).pixels(wrong, "cpu")
    assert "\n" not in str(e.value)


@pytest.mark.gpu
def test_on_cuda_nothing_waits_for_the_device_and_pixels_match_the_cpu():
    r = Recipe(224, 10, auto_augment=SWAT, reprob=0.25, mixup=0.8, cutmix=1.0)
    plans, which = planned(r, 32)
    batch = encoded(r, plans, which, mix_seed=4).pin_memory()
    labels = torch.arange(32).remainder(10).pin_memory()
    pipe = DevicePipeline(r)
    pipe(batch, labels, "cuda")  # warm-up: first-call allocations and nvJPEG handles
    torch.cuda.set_sync_debug_mode("error")
    try:
        x, y = pipe(batch, labels, "cuda")
        px = pipe.pixels(batch, "cuda")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert x.is_cuda and y.is_cuda and x.shape == (32, 3, 224, 224) and y.shape == (32, 10)
    # nvJPEG's IDCT and upsampling differ from libjpeg-turbo's by a level here and there
    assert (px.cpu() - pipe.pixels(batch, "cpu")).abs().mean() < 1.0
    seeds = torch.tensor([1, 2**62 + 5, 2**63 - 1], dtype=torch.int64)  # the integer hash wraps nowhere
    torch.testing.assert_close(hash_normal(seeds.cuda(), 50_000).cpu(), hash_normal(seeds, 50_000), rtol=0, atol=1e-5)
