"""The device pipeline's plans are timm's draws: executed with timm's own PIL ops they give timm's train transform
bit for bit on real images; their op and magnitude distributions, erasing boxes and mixup follow timm's rules."""

from __future__ import annotations

import math
import pickle
import random
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from sklearn.datasets import load_digits, load_sample_images
from timm.data.auto_augment import _RAND_INCREASING_TRANSFORMS, LEVEL_TO_ARG, NAME_TO_OP, rand_augment_transform
from timm.data.mixup import cutmix_bbox_and_lam
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from swat_dist.data.loaders.seeds import sample_seed, seed_everything
from swat_dist.data.pixels.device_plan import OpDraw, Planner, Recipe, SamplePlan, resize_groups
from swat_dist.data.pixels.transforms import train_transform

NO_ARG = {"AutoContrast", "Equalize", "Invert"}
INT_ARG = {"Posterize", "PosterizeIncreasing", "Solarize", "SolarizeIncreasing", "SolarizeAdd"}
SIGNED = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"} | {
    n for n in _RAND_INCREASING_TRANSFORMS if n.endswith("Increasing") and not n.startswith(("Solarize", "Poster"))
}


def real_images() -> list[Image.Image]:
    """The two sklearn photos, a tall and a wide strip of them (the centred-fallback crop), an upscaled digit."""
    china, flower = (Image.fromarray(a) for a in load_sample_images().images)
    digit = load_digits().images[7]
    digit_img = Image.fromarray((digit * 255 / 16).astype(np.uint8)).resize((48, 48), Image.NEAREST).convert("RGB")
    return [china, flower, china.crop((100, 0, 220, 427)), flower.crop((0, 200, 640, 260)), digit_img]


IMAGES = real_images()
RECIPES = {
    "swat": Recipe(224, 10, auto_augment="rand-m9-mstd0.5-inc1"),
    "bicubic-n3": Recipe(96, 10, interpolation="bicubic", auto_augment="rand-m7-n3-mstd1", hflip=0.3),
    "bilinear-plain": Recipe(64, 10, interpolation="bilinear", auto_augment="rand-m9-mstd0.5", scale=(0.3, 1.0)),
}


def run_with_pil(plan: SamplePlan, img: Image.Image, size: int, fill: tuple[int, ...]) -> torch.Tensor:
    """Execute a plan with timm's / torchvision's own PIL functions."""
    interp = InterpolationMode.BICUBIC if plan.resize_bicubic else InterpolationMode.BILINEAR
    out = F.resized_crop(img, *plan.crop, [size, size], interp)
    if plan.flip:
        out = F.hflip(out)
    for d in plan.ops:
        args = () if d.name in NO_ARG else ((int(d.arg),) if d.name in INT_ARG else (d.arg,))
        resample = Image.BICUBIC if d.bicubic else Image.BILINEAR
        out = NAME_TO_OP[d.name](out, *args, fillcolor=fill, resample=resample)
    return F.pil_to_tensor(out)


@pytest.mark.parametrize("name", list(RECIPES))
def test_plans_executed_with_timms_pil_ops_are_timms_train_transform_bit_for_bit(name):
    r = RECIPES[name]
    planner = Planner(r)
    timm_tf = train_transform(
        r.img_size, r.scale, r.ratio, r.hflip, r.interpolation, r.auto_augment, color_jitter=0.0, mean=r.mean
    )
    fill = tuple(round(255 * m) for m in r.mean)
    used: set[str] = set()
    for i in range(240):
        s = sample_seed(11, 2, i)
        img = IMAGES[i % len(IMAGES)]
        seed_everything(s)
        plan = planner.sample(*img.size)
        seed_everything(s)
        want = timm_tf(img)
        assert torch.equal(run_with_pil(plan, img, r.img_size, fill), want), (name, i, plan)
        used |= {d.name for d in plan.ops}
    assert used == {op.name for op in rand_augment_transform(r.auto_augment, {}).ops}  # every op was exercised


def plans(r: Recipe, n: int, size: tuple[int, int] = (640, 427)) -> list[SamplePlan]:
    planner = Planner(r)
    out = []
    for i in range(n):
        seed_everything(sample_seed(5, 0, i))
        out.append(planner.sample(*size))
    return out


SWAT_PLANS = plans(Recipe(224, 10, auto_augment="rand-m9-mstd0.5-inc1", reprob=0.25), 10_000)


def test_op_choice_per_layer_is_uniform_and_each_runs_half_the_time():
    ops = _RAND_INCREASING_TRANSFORMS
    for layer in (0, 1):
        drawn = [d.name for p in SWAT_PLANS for d in p.ops if d.layer == layer]
        n = len(SWAT_PLANS)
        assert abs(len(drawn) - n / 2) < 5 * math.sqrt(n / 4)  # prob 0.5 per layer
        p = 0.5 / len(ops)
        sd = math.sqrt(n * p * (1 - p))
        counts = {o: drawn.count(o) for o in ops}
        assert all(abs(c - n * p) < 5 * sd for c in counts.values()), counts


def test_magnitudes_are_gauss_9_0_5_clipped_and_args_follow_timms_level_rules():
    draws: list[OpDraw] = [d for p in SWAT_PLANS for d in p.ops]
    m = np.array([d.magnitude for d in draws])
    assert m.min() >= 0 and m.max() <= 10
    # N(9, 0.5) clipped at 10: mean 8.9958, std 0.4887 (2.3% clipped); 6.7k draws: se 0.006
    assert abs(m.mean() - 8.9958) < 0.03 and abs(m.std() - 0.4887) < 0.02
    assert (m == 10).mean() == pytest.approx(0.0228, abs=0.006)
    hparams = dict(translate_const=int(224 * 0.45), img_mean=(124, 116, 104))
    negated = []
    for d in draws:
        if d.name in NO_ARG:
            assert d.arg == 0.0
            continue
        with mock.patch.object(random, "random", return_value=0.0):  # timm's _randomly_negate keeps the sign
            keep = LEVEL_TO_ARG[d.name](d.magnitude, hparams)[0]
        with mock.patch.object(random, "random", return_value=1.0):  # ... negates
            neg = LEVEL_TO_ARG[d.name](d.magnitude, hparams)[0]
        assert d.arg in (keep, neg), d
        if d.name in SIGNED:
            negated.append(d.arg == neg)
    assert abs(np.mean(negated) - 0.5) < 5 * 0.5 / math.sqrt(len(negated))


def test_geometric_ops_draw_bilinear_or_bicubic_evenly_and_the_others_never():
    geo = [d.bicubic for p in SWAT_PLANS for d in p.ops if d.name in {"Rotate", "ShearX", "ShearY"}]
    assert abs(np.mean(geo) - 0.5) < 5 * 0.5 / math.sqrt(len(geo))
    assert not any(d.bicubic for p in SWAT_PLANS for d in p.ops if d.name in NO_ARG | INT_ARG)
    assert abs(np.mean([p.resize_bicubic for p in SWAT_PLANS]) - 0.5) < 0.03
    assert abs(np.mean([p.flip for p in SWAT_PLANS]) - 0.5) < 0.03


def test_erasing_boxes_follow_timms_random_erasing_rules():
    boxes = [p.erase for p in SWAT_PLANS if p.erase is not None]
    assert abs(len(boxes) / len(SWAT_PLANS) - 0.25) < 0.015  # reprob (a box rarely fails all 10 tries)
    area = np.array([h * w for _, _, h, w in boxes]) / 224**2
    aspect = np.array([h / w for _, _, h, w in boxes])
    # rounding h and w to integers moves the area and aspect bounds by under 1%
    assert area.min() >= 0.02 * 0.98 and area.max() <= (1 / 3) * 1.02
    assert aspect.min() >= 0.3 * 0.97 and aspect.max() <= (1 / 0.3) * 1.03
    assert all(t >= 0 and t + h <= 224 and left >= 0 and left + w <= 224 for t, left, h, w in boxes)
    assert len({p.noise_seed for p in SWAT_PLANS}) == len(SWAT_PLANS)


def mixes(r: Recipe, n: int) -> list:
    planner = Planner(r)
    return [planner.batch([], seed).mix for seed in range(n)]


def test_mixup_and_cutmix_follow_timms_batch_mode_rules():
    r = Recipe(224, 10, mixup=0.8, cutmix=1.0, switch_prob=0.5)
    got = mixes(r, 4000)
    cut = [m for m in got if m.box is not None]
    mix = [m.lam for m in got if m.box is None]
    assert abs(len(cut) / len(got) - 0.5) < 0.04
    assert stats.kstest(mix, stats.beta(0.8, 0.8).cdf).pvalue > 1e-3  # timm: Beta(mixup, mixup)
    for m in cut:  # timm's cutmix_bbox_and_lam with correct_lam: lam = 1 - box area
        yl, yh, xl, xh = m.box
        assert 0 <= yl <= yh <= 224 and 0 <= xl <= xh <= 224
        assert m.lam == pytest.approx(1 - (yh - yl) * (xh - xl) / 224**2)
    # the corrected lambdas are distributed as timm's own cutmix_bbox_and_lam makes them from Beta(1, 1)
    np.random.seed(0)
    timm_lam = [cutmix_bbox_and_lam((224, 224), np.random.beta(1.0, 1.0))[1] for _ in range(4000)]
    assert stats.ks_2samp([m.lam for m in cut], timm_lam).pvalue > 1e-3
    assert mixes(r, 50) == got[:50]  # a pure function of the mix seed
    rare = mixes(Recipe(224, 10, mixup=0.8, mixup_prob=0.3), 4000)
    assert abs(np.mean([m.lam == 1.0 for m in rare]) - 0.7) < 0.04
    assert all(m.lam == 1.0 and m.box is None for m in mixes(Recipe(224, 10), 20))


def test_batch_groups_each_planned_op_into_one_step_in_layer_order():
    r = Recipe(64, 10, auto_augment="rand-m9-n3-mstd0.5", interpolation="random", reprob=0.5)
    batch = plans(r, 48, (100, 80))
    bp = Planner(r).batch(batch, 0)
    executed: list[list[tuple]] = [[] for _ in batch]  # what each sample runs, replaying the steps in order
    for step in bp.steps:
        assert step.index.dtype == torch.int64 and step.args.dtype == torch.float32 and len(step.index) > 0
        for pos, arg in zip(step.index.tolist(), step.args.tolist()):
            executed[pos].append((step.name, step.bicubic, arg))
    want = [[(d.name, d.bicubic, float(np.float32(d.arg))) for d in p.ops] for p in batch]
    assert executed == want and sum(map(len, want)) > 48  # n=3 layers: each sample's ops, in its order
    assert bp.erase_index.tolist() == [i for i, p in enumerate(batch) if p.erase is not None]
    assert bp.crops == [p.crop for p in batch] and bp.flip.tolist() == [p.flip for p in batch]


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        (dict(auto_augment="original"), "only RandAugment"),
        (dict(auto_augment="augmix-m5-w4"), "only RandAugment"),
        (dict(auto_augment="rand-m9-t3a"), "do not run on the device"),
        (dict(auto_augment="rand-q9"), "timm does not read it"),
        (dict(color_jitter=0.4), "data.color_jitter=0"),
        (dict(interpolation="nearest"), "data.interpolation"),
    ],
)
def test_settings_the_device_cannot_run_are_one_line_errors(kw, says):
    with pytest.raises(ValueError, match=says) as e:
        Planner(Recipe(64, 10, **kw))
    assert "\n" not in str(e.value)


def test_a_pickled_planner_draws_the_same_plans():
    r = Recipe(128, 10, auto_augment="rand-m9-mstd0.5-inc1", reprob=0.25)  # e.g. a spawned worker's copy
    restored = pickle.loads(pickle.dumps(Planner(r)))
    replayed = []
    for i in range(100):
        seed_everything(sample_seed(5, 0, i))
        replayed.append(restored.sample(640, 427))
    assert replayed == plans(r, 100) and any(p.ops for p in replayed)


def test_resize_groups_partition_the_batch_and_bound_each_canvas():
    rng = random.Random(0)
    sizes = [(rng.choice([48, 333, 500, 640, 2000]), rng.choice([60, 375, 427, 1500])) for _ in range(256)]
    planner = Planner(Recipe(224, 10))
    crops = [planner.sample(w, h).crop for w, h in sizes]
    groups = resize_groups(crops)
    assert sorted(i for g in groups for i in g) == list(range(256))
    canvas = [len(g) * max(crops[i][2] for i in g) * max(crops[i][3] for i in g) for g in groups]
    pixels = [sum(crops[i][2] * crops[i][3] for i in g) for g in groups]
    assert all(c <= 1.5 * p for c, p in zip(canvas, pixels))
    one_canvas = 256 * max(c[2] for c in crops) * max(c[3] for c in crops)
    assert sum(canvas) < one_canvas / 4 and len(groups) < 32  # what grouping saves, in few bmm calls
