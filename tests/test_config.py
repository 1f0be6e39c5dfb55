"""The config tree: overlays, overrides, strictness, the timm mapping, derived values, hash, round trips."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import math
import pickle
from pathlib import Path

import pytest
import yaml

import swat_dist
from swat_dist.config import (
    Config,
    ConfigError,
    apply_overrides,
    check_runtime,
    config_hash,
    derived,
    from_dict,
    load_config,
    save_config,
    to_dict,
)
from swat_dist.config_cli import add_config_parser
from swat_dist.config_timm import DIRECT, IGNORED, KNOWN, NEWER_DEFAULTS, ONLY_DEFAULT, SPECIAL, TIMM_DEFAULTS
from swat_dist.config_types import leaf_paths
from swat_dist.redact import redact_tree

SYN = "data.format=synthetic"


def cfg(*overrides: str) -> Config:
    return load_config([], [SYN, *overrides])


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def error(*overrides: str, files: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(list(files), [SYN, *overrides])
    assert "\n" not in str(info.value)  # one line for the cli
    return str(info.value)


# -- defaults, overlays, overrides ------------------------------------------------------------------


def test_defaults_are_the_deit_swin_recipe():
    c = cfg()
    d = derived(c, world_size=8)  # SWAT_SPEC 6.2: 128 per GPU x 8 GPUs, AdamW lr 1e-3
    assert (d["global_batch"], d["lr"]) == (1024, pytest.approx(1e-3))
    assert (c.optim.opt, c.optim.eps, c.optim.weight_decay, c.optim.clip_grad) == ("adamw", 1e-8, 0.05, 5.0)
    assert (c.sched.epochs, c.sched.cooldown_epochs, c.sched.warmup_epochs) == (300, 10, 20)
    assert (c.sched.warmup_lr, c.sched.min_lr, c.sched.total_epochs) == (1e-6, 1e-5, 310)
    assert (c.model.drop_path_rate, c.data.auto_augment) == (0.1, "rand-m9-mstd0.5-inc1")
    assert (c.data.mixup, c.data.cutmix, c.data.smoothing, c.data.reprob) == (0.8, 1.0, 0.1, 0.25)
    assert (c.data.interpolation, c.ema.enabled, c.engine.precision) == ("bicubic", False, "bf16")


def test_no_data_is_an_error_naming_data_path():
    with pytest.raises(ConfigError, match=r"data\.path is required for data\.format 'folder'"):
        load_config([], [])
    assert load_config([], ["data.path=/imagenet"]).data.path == "/imagenet"


def test_overlays_apply_in_order_with_base_inheritance(tmp_path):
    root = "data: {format: synthetic, batch_size: 32}\nmodel: {kwargs: {a: 1}}\nseed: 1\n"
    write(tmp_path / "shared/root.yaml", root)
    write(tmp_path / "shared/mid.yaml", "base: root.yaml\noptim: {lr: 1e-3}\nmodel: {kwargs: {b: 2}}\nseed: 2\n")
    child = write(tmp_path / "exp/child.yaml", "base: ../shared/mid.yaml\ndata: {batch_size: 64}\n")
    last = write(tmp_path / "last.yaml", "seed: 3\n")
    c = load_config([child], [])
    assert (c.data.format, c.data.batch_size, c.optim.lr, c.seed) == ("synthetic", 64, 1e-3, 2)
    assert dict(c.model.kwargs) == {"a": 1, "b": 2}  # mappings merge through the chain
    assert load_config([child, last], []).seed == 3  # later files win
    assert load_config([last, child], []).seed == 2


def test_base_may_be_a_list_and_loops_are_refused(tmp_path):
    write(tmp_path / "a.yaml", "data: {format: synthetic}\nseed: 5\n")
    write(tmp_path / "b.yaml", "log_every: 7\n")
    assert load_config([write(tmp_path / "c.yaml", "base: [a.yaml, b.yaml]\n")], []).log_every == 7
    write(tmp_path / "x.yaml", "base: y.yaml\n")
    write(tmp_path / "y.yaml", "base: x.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config([str(tmp_path / "x.yaml")], [])
    with pytest.raises(ConfigError, match="no such config file"):
        load_config([write(tmp_path / "z.yaml", "base: missing.yaml\n")], [])


def test_dotted_overrides_reach_every_kind_of_value(tmp_path):
    f = write(tmp_path / "f.yaml", "optim: {lr: 0.1}\ndata: {format: synthetic}\n")
    c = load_config(
        [f],
        [
            "optim.lr=1e-3",
            "data.batch_size=64",
            "data.scale=[0.5,1.0]",
            "model.img_size=null",
            "model.kwargs.swat_tokens=false",
            "engine.deepspeed.zero_optimization.reduce_bucket_size=5e8",
            "engine.deepspeed.zero_optimization.round_robin_gradients=true",
            "checkpoint.every_steps=1e4",
        ],
    )
    assert c.optim.lr == 1e-3 and isinstance(c.optim.lr, float)  # PyYAML alone reads 1e-3 as a string
    assert (c.data.batch_size, c.data.scale, c.model.img_size) == (64, (0.5, 1.0), None)
    assert dict(c.model.kwargs) == {"swat_tokens": False}
    assert dict(c.engine.deepspeed["zero_optimization"]) == {"reduce_bucket_size": 5e8, "round_robin_gradients": True}
    assert c.checkpoint.every_steps == 10000 and isinstance(c.checkpoint.every_steps, int)


def test_yaml_files_read_exponent_floats(tmp_path):
    c = load_config([write(tmp_path / "f.yaml", "data: {format: synthetic}\noptim: {lr: 5e-4, eps: 1.0e-6}\n")], [])
    assert (c.optim.lr, c.optim.eps) == (5e-4, 1e-6)


@pytest.mark.parametrize("text", ["optim.lr", "=3", "optim..lr=1", "x=[1,"])
def test_malformed_overrides_are_one_line_errors(text):
    assert text in error(text)


def test_apply_overrides_returns_a_new_validated_config():
    c = cfg()
    c2 = apply_overrides(c, ["max_steps=5"])
    assert (c.max_steps, c2.max_steps) == (None, 5)
    with pytest.raises(ConfigError, match="max_steps"):
        apply_overrides(c, ["max_steps=0"])


# -- frozen, strict ----------------------------------------------------------------------------------


def test_config_is_frozen_all_the_way_down():
    c = cfg("model.kwargs.nested={a: [1, 2]}")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.optim.lr = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.optim = c.optim  # type: ignore[misc]
    with pytest.raises(TypeError, match="read-only"):
        c.engine.deepspeed["x"] = 1  # type: ignore[index]
    with pytest.raises(TypeError, match="read-only"):
        c.model.kwargs["nested"].update(a=2)
    assert c.model.kwargs["nested"]["a"] == (1, 2)  # lists become tuples
    assert hash(c) == hash(cfg("model.kwargs.nested={a: [1, 2]}"))
    assert pickle.loads(pickle.dumps(c)) == c  # submitit pickles what it sends to a job


@pytest.mark.parametrize(
    "override,suggestion",
    [
        ("optim.lrr=1", "did you mean 'optim.lr'?"),
        ("optm.lr=1", "unknown key 'optm' (did you mean 'optim'?)"),
        ("batch_size=64", "did you mean 'data.batch_size'?"),  # a key put in the wrong place
        ("data.lr=1", "did you mean 'optim.lr'?"),
        ("engine.zero=1", "did you mean 'engine.zero_stage'?"),
        ("data.zzz=1", "valid keys under data: format, path, batch_size"),
    ],
)
def test_unknown_keys_name_the_key_and_the_nearest_valid_one(override, suggestion):
    msg = error(override)
    assert f"unknown key '{override.split('=')[0].replace('optm.lr', 'optm')}'" in msg and suggestion in msg


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    f = write(tmp_path / "typo.yaml", "data: {format: synthetic}\nsched: {warmup_epoch: 5}\n")
    msg = error(files=(f,))
    assert "typo.yaml" in msg and "'sched.warmup_epoch'" in msg and "did you mean 'sched.warmup_epochs'?" in msg


@pytest.mark.parametrize(
    "override,message",
    [
        ("engine.precision=fp8", "engine.precision: 'fp8' is not one of bf16, fp16, fp32"),
        ("engine.zero_stage=4", "engine.zero_stage: 4 is not one of 0, 1, 2, 3"),
        ("engine.zero_stage=true", "engine.zero_stage: True is not one of 0, 1, 2, 3"),
        ("data.format=lmdb", "data.format: 'lmdb' is not one of folder, wds, ffcv, synthetic"),
        ("data.batch_size=abc", "data.batch_size: expected an integer, got 'abc'"),
        ("data.batch_size=1.5", "data.batch_size: expected an integer, got 1.5"),
        ("optim.clip_grad=big", "optim.clip_grad: expected a number or null, got 'big'"),
        ("optim.lr=null", "optim.lr: expected a number, got None"),
        ("optim.lr=.nan", "optim.lr: expected a number, got nan"),
        ("ema.enabled=1", "ema.enabled: expected true or false, got 1"),
        ("data.scale=[0.5]", "data.scale: expected a list of 2 numbers, got [0.5]"),
        ("data.mean=[0.5, x, 0.5]", "data.mean[1]: expected a number, got 'x'"),
        ("model.kwargs=3", "model.kwargs: expected a mapping, got 3"),
        ("optim=3", "optim: expected a mapping of optim.* settings, got 3"),
        ("name=007", "name: expected a string or null, got 7 (YAML read it as a number or boolean: quote it)"),
        ("data.interpolation=cubic", "data.interpolation: 'cubic' is not one of bicubic, bilinear"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(override, message):
    assert message in error(override)


# Each rule: an override that breaks it (with the message), and the nearest setting that is fine.
RULES = [
    (["data.batch_size=0"], "data.batch_size must be >= 1 (got 0)", ["data.batch_size=2"]),
    (["data.val_batch_size=0"], "data.val_batch_size must be >= 1", ["data.val_batch_size=1"]),
    (["data.workers=-1"], "data.workers must be >= 0", ["data.workers=0"]),
    (["data.batch_size=7"], "data.batch_size must be even when data.mixup or data.cutmix is on (got 7)",
     ["data.batch_size=7", "data.mixup=0", "data.cutmix=0"]),
    (["data.format=wds"], "data.path is required for data.format 'wds'", ["data.format=wds", "data.path=/x"]),
    (["data.hflip=1.5"], "data.hflip must be in [0, 1] (got 1.5)", ["data.hflip=1"]),
    (["data.smoothing=1"], "data.smoothing must be in [0, 1)", ["data.smoothing=0.9"]),
    (["data.crop_pct=0"], "data.crop_pct must be in (0, 1]", ["data.crop_pct=1"]),
    (["data.scale=[0.9, 0.1]"], "data.scale must be [low, high]", ["data.scale=[0.1, 0.9]"]),
    (["data.std=[0.2, 0, 0.2]"], "data.std must be > 0", ["data.std=[0.2, 0.1, 0.2]"]),
    (["data.auto_augment=''"], "data.auto_augment must be a timm policy string or null", ["data.auto_augment=null"]),
    (["data.synthetic_classes=1001"], "data.synthetic_classes (1001) must be <= model.num_classes (1000)",
     ["data.synthetic_classes=1000"]),
    (["data.augment_on=device"], "data.augment_on 'device' executes a recipe on stored images: data.format must be "
     "folder, wds or ffcv, not 'synthetic'", ["data.augment_on=device", "data.format=ffcv", "data.path=/x"]),
    (["data.augment_on=device", "data.format=wds", "data.path=/x", "task=segment"],
     "data.augment_on 'device' runs the classification recipe: task segment needs 'loader'",
     ["data.format=wds", "data.path=/x", "task=segment"]),
    (["data.augment_on=device", "data.format=folder", "data.path=/x", "data.auto_augment=null"],
     "data.color_jitter has no device version", ["data.augment_on=device", "data.format=folder", "data.path=/x",
     "data.auto_augment=null", "data.color_jitter=0"]),
    (["data.augment_on=gpu"], "data.augment_on", ["data.augment_on=loader"]),
    (["data.augment_on=device", "data.format=wds", "data.path=/x", "data.train_interpolation=nearest"],
     "data.train_interpolation must be random, bilinear or bicubic with data.augment_on 'device'",
     ["data.augment_on=device", "data.format=wds", "data.path=/x", "data.train_interpolation=bicubic"]),
    (["data.augment_on=device", "data.format=wds", "data.path=/x", "data.auto_augment=original"],
     "data.auto_augment must be a RandAugment policy",
     ["data.format=wds", "data.path=/x", "data.auto_augment=original"]),
    (["optim.lr=0"], "optim.lr must be > 0 (got 0.0)", ["optim.lr=1e-9"]),
    (["optim.betas=[0.9, 1.0]"], "optim.betas must each be in [0, 1)", ["optim.betas=[0.9, 0.95]"]),
    (["optim.layer_decay=1.5"], "optim.layer_decay must be in (0, 1]", ["optim.layer_decay=1.0"]),
    (["optim.layer_decay=0"], "optim.layer_decay must be in (0, 1]", ["optim.layer_decay=0.65"]),
    (["sched.warmup_epochs=300"], "sched.warmup_epochs must be < sched.epochs (300)", ["sched.warmup_epochs=299"]),
    (["sched.epochs=0"], "sched.epochs must be >= 1", ["sched.epochs=1", "sched.warmup_epochs=0"]),
    (["ema.decay=1"], "ema.decay must be in (0, 1)", ["ema.decay=0.9999"]),
    (["engine.grad_accum=0"], "engine.grad_accum must be >= 1", ["engine.grad_accum=1"]),
    (["engine.offload_optimizer=true", "engine.zero_stage=0", "engine.precision=fp32"],
     "engine.offload_optimizer needs engine.zero_stage >= 1", ["engine.offload_optimizer=true", "engine.zero_stage=1"]),
    (["engine.zero_stage=0"], "engine.zero_stage must be >= 1 with engine.precision bf16",
     ["engine.zero_stage=0", "engine.precision=fp32"]),
    (["engine.offload_params=true", "engine.zero_stage=2"], "engine.offload_params needs engine.zero_stage 3",
     ["engine.offload_params=true", "engine.zero_stage=3"]),
    (["engine.deepspeed.optimizer={type: Adam}"], "engine.deepspeed.optimizer is not allowed: it comes from optim.*",
     ["engine.deepspeed.optimizer_x=1"]),
    (["engine.deepspeed.scheduler={}"], "engine.deepspeed.scheduler is not allowed", ["engine.deepspeed.s=1"]),
    (["checkpoint.keep_last=0"], "checkpoint.keep_last must be >= 1", ["checkpoint.keep_last=1"]),
    (["checkpoint.every_minutes=0"], "checkpoint.every_minutes must be > 0", ["checkpoint.every_minutes=0.5"]),
    (["output_dir=out/{nme}"], "output_dir may only use the placeholder {name}", ["output_dir=out/{name}/x"]),
    (["output_dir=out/{"], "output_dir: 'out/{' is not a valid template", ["output_dir=out"]),
    (["max_steps=0"], "max_steps must be >= 1", ["max_steps=1"]),
    (["model.drop_path_rate=1"], "model.drop_path_rate must be in [0, 1)", ["model.drop_path_rate=0.5"]),
]  # fmt: skip


@pytest.mark.parametrize("bad,message,good", RULES, ids=[r[1][:40] for r in RULES])
def test_validation_rules(bad, message, good):
    assert message in error(*bad)
    cfg(*good)  # the nearest valid setting builds


# -- timm train.py files -----------------------------------------------------------------------------

# The official SWAT release's ViT recipe (SWAT_SPEC 6.1, vit_i1k_scratch), in timm train.py keys.
SWAT_VIT = """\
model: vit_tiny_patch16_224
num_classes: 1000
batch_size: 256
opt: adamw
opt_eps: 1e-6
lr: 7.5e-4
weight_decay: 0.3
clip_grad: 1.0
sched: cosine
epochs: 300
cooldown_epochs: 10
warmup_epochs: 8
warmup_lr: 1e-6
min_lr: 1e-5
aa: rand-m15-n2-mstd1.0-inc1
color_jitter: 0.4
mixup: 0.5
cutmix: 1.0
mixup_prob: 1.0
mixup_switch_prob: 0.5
mixup_mode: batch
smoothing: 0.1
reprob: 0.0
drop: 0.0
drop_path: 0.0
scale: [0.08, 1.0]
ratio: [0.67, 1.5]
hflip: 0.5
train_interpolation: random
model_ema: true
model_ema_decay: 0.99992
mean: [0.485, 0.456, 0.406]
std: [0.229, 0.224, 0.225]
crop_pct: 0.9
seed: 42
workers: 32
amp: true
sync_bn: true
use_multi_epochs_loader: true
pin_mem: true
"""


def test_swat_released_vit_recipe_maps_value_by_value(tmp_path):
    notes: list[str] = []
    f = write(tmp_path / "vit_i1k_scratch.yaml", SWAT_VIT)
    c = load_config([f], ["data.path=/imagenet"], notes)
    got = {
        "model.name": c.model.name, "model.num_classes": c.model.num_classes, "data.batch_size": c.data.batch_size,
        "optim.opt": c.optim.opt, "optim.eps": c.optim.eps, "optim.lr": c.optim.lr, "optim.lr_scale": c.optim.lr_scale,
        "optim.weight_decay": c.optim.weight_decay, "optim.clip_grad": c.optim.clip_grad,
        "optim.betas": c.optim.betas, "sched.epochs": c.sched.epochs, "sched.cooldown_epochs": c.sched.cooldown_epochs,
        "sched.warmup_epochs": c.sched.warmup_epochs, "sched.warmup_lr": c.sched.warmup_lr,
        "sched.min_lr": c.sched.min_lr, "data.auto_augment": c.data.auto_augment,
        "data.color_jitter": c.data.color_jitter, "data.mixup": c.data.mixup, "data.cutmix": c.data.cutmix,
        "data.mixup_prob": c.data.mixup_prob, "data.mixup_switch_prob": c.data.mixup_switch_prob,
        "data.smoothing": c.data.smoothing, "data.reprob": c.data.reprob, "model.drop_rate": c.model.drop_rate,
        "model.drop_path_rate": c.model.drop_path_rate, "data.scale": c.data.scale, "data.ratio": c.data.ratio,
        "data.hflip": c.data.hflip, "data.train_interpolation": c.data.train_interpolation,
        "ema.enabled": c.ema.enabled, "ema.decay": c.ema.decay, "data.mean": c.data.mean, "data.std": c.data.std,
        "data.crop_pct": c.data.crop_pct, "data.interpolation": c.data.interpolation, "seed": c.seed,
        "data.workers": c.data.workers, "engine.precision": c.engine.precision, "data.path": c.data.path,
    }  # fmt: skip
    assert got == {
        "model.name": "vit_tiny_patch16_224", "model.num_classes": 1000, "data.batch_size": 256,
        "optim.opt": "adamw", "optim.eps": 1e-6, "optim.lr": 7.5e-4, "optim.lr_scale": "none",
        "optim.weight_decay": 0.3, "optim.clip_grad": 1.0, "optim.betas": (0.9, 0.999), "sched.epochs": 300,
        "sched.cooldown_epochs": 10, "sched.warmup_epochs": 8, "sched.warmup_lr": 1e-6, "sched.min_lr": 1e-5,
        "data.auto_augment": "rand-m15-n2-mstd1.0-inc1", "data.color_jitter": 0.4, "data.mixup": 0.5,
        "data.cutmix": 1.0, "data.mixup_prob": 1.0, "data.mixup_switch_prob": 0.5, "data.smoothing": 0.1,
        "data.reprob": 0.0, "model.drop_rate": 0.0, "model.drop_path_rate": 0.0, "data.scale": (0.08, 1.0),
        "data.ratio": (0.67, 1.5), "data.hflip": 0.5, "data.train_interpolation": "random", "ema.enabled": True,
        "ema.decay": 0.99992, "data.mean": (0.485, 0.456, 0.406), "data.std": (0.229, 0.224, 0.225),
        "data.crop_pct": 0.9, "data.interpolation": None, "seed": 42, "data.workers": 32,
        "engine.precision": "bf16", "data.path": "/imagenet",
    }  # fmt: skip
    d = derived(c, world_size=8)  # the recipe's 8 GPUs: global 2048, lr as written (no scaling)
    assert (d["global_batch"], d["lr"], d["total_epochs"]) == (2048, 7.5e-4, 310)
    assert derived(c, world_size=2)["lr"] == 7.5e-4  # absolute whatever the world size
    text = "\n".join(notes)
    assert "ignored timm keys (no effect here): pin_mem, sync_bn, use_multi_epochs_loader" in text
    assert "optim.lr_scale none" in text and "engine.precision bf16" in text
    assert "model.name=swat_deit_tiny_patch16_224" in text  # the release's vit_* names meant SWAT


def test_timm_keys_a_file_lacks_take_timm_defaults_not_ours(tmp_path):
    f = write(tmp_path / "t.yaml", "model: swat_deit_tiny_patch16_224\nopt: adamw\nsched: cosine\nlr: 1e-3\n")
    c = load_config([f], [SYN])
    assert (c.sched.warmup_epochs, c.sched.epochs, c.sched.warmup_lr) == (3, 200, 1e-4)  # timm 0.4.13 defaults
    assert (c.data.reprob, c.data.mixup, c.data.cutmix, c.data.auto_augment) == (0.0, 0.0, 0.0, None)
    assert (c.optim.weight_decay, c.optim.clip_grad, c.data.batch_size) == (1e-4, None, 32)
    assert (c.model.drop_path_rate, c.engine.precision) == (0.0, "fp32")  # no amp: timm trains in fp32


@pytest.mark.parametrize(
    "text,message",
    [
        ("model: x\nsched: cosine\n", "timm key 'opt': 'sgd' is not supported (only 'adamw')"),
        ("model: x\nopt: adamw\n", "timm key 'sched': 'step' is not supported (only 'cosine')"),
        ("model: x\nopt: adamw\nsched: cosine\nmixup_prb: 0.1\n", "unknown timm key 'mixup_prb' (did you mean"),
        ("model: x\nopt: adamw\nsched: cosine\nvflip: 0.5\n", "timm key 'vflip': 0.5 is not supported (only 0.0)"),
        ("model: x\nopt: adamw\nsched: cosine\nreprob: 0.25\n", "timm key 'remode': 'const' is not supported"),
        ("model: x\nopt: adamw\nsched: cosine\nmixup: 0.8\nmixup_mode: elem\n", "timm key 'mixup_mode': 'elem'"),
        ("model: x\nopt: adamw\nsched: cosine\ninput_size: [3, 224, 192]\n", "timm key 'input_size'"),
        ("lr: 1e-3\n", "(read as a flat timm train.py file)"),
    ],
)  # fmt: skip
def test_timm_settings_we_cannot_honour_are_refused(tmp_path, text, message):
    assert message in error(files=(write(tmp_path / "t.yaml", text),))


def test_timm_random_erasing_and_newer_keys(tmp_path):
    base = "model: x\nopt: AdamW\nsched: cosine\n"
    erasing = base + "reprob: 0.25\nremode: pixel\ninput_size: [3, 192, 192]\n"
    c = load_config([write(tmp_path / "a.yaml", erasing)], [SYN])
    assert (c.data.reprob, c.model.img_size) == (0.25, 192)
    newer = base + "lr: null\nlr_base: 5e-4\nlr_base_size: 512\ngrad_accum_steps: 2\nvalidation_batch_size: 50\n"
    c = load_config([write(tmp_path / "b.yaml", newer)], [SYN])
    assert (c.optim.lr, c.optim.lr_base_batch, c.optim.lr_scale) == (5e-4, 512, "sqrt")  # timm: sqrt for adam*
    assert (c.engine.grad_accum, c.data.val_batch_size) == (2, 50)
    c = load_config([write(tmp_path / "c.yaml", newer + "lr_base_scale: linear\n")], [SYN])
    assert derived(c, 4)["lr"] == pytest.approx(5e-4 * 32 * 2 * 4 / 512)


def test_a_timm_file_can_be_the_base_of_an_overlay(tmp_path):
    write(tmp_path / "vit.yaml", SWAT_VIT)
    overlay = "base: vit.yaml\ndata: {path: /in1k, batch_size: 128}\nmodel: {name: swat_deit_tiny_patch16_224}\n"
    f = write(tmp_path / "mine.yaml", overlay)
    c = load_config([f], [])
    assert (c.model.name, c.data.batch_size, c.optim.lr, c.optim.lr_scale) == (
        "swat_deit_tiny_patch16_224", 128, 7.5e-4, "none")  # fmt: skip


def test_every_timm_key_is_handled_exactly_once():
    groups = [set(DIRECT), set(ONLY_DEFAULT), SPECIAL, set(IGNORED)]
    from swat_dist.config_timm import _EMPTY_IS_NONE

    groups.append(set(_EMPTY_IS_NONE))
    assert sum(len(g) for g in groups) == len(set().union(*groups))  # disjoint
    assert set().union(*groups) == KNOWN == set(TIMM_DEFAULTS) | set(NEWER_DEFAULTS) | IGNORED
    assert set(DIRECT.values()) <= set(leaf_paths(Config))


def test_a_nested_file_is_not_mistaken_for_timm(tmp_path):
    f = write(tmp_path / "n.yaml", "data: {format: synthetic}\nseed: 3\n")
    assert load_config([f], []).seed == 3


# -- derived values, hash, round trips ---------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,world,batch,lr",
    [
        ([], 1, 128, 5e-4 * 128 / 512),
        ([], 8, 1024, 1e-3),
        (["engine.grad_accum=4"], 2, 1024, 1e-3),
        (["optim.lr_scale=sqrt"], 8, 1024, 5e-4 * math.sqrt(2)),
        (["optim.lr_scale=sqrt", "optim.lr_base_batch=256"], 1, 128, 5e-4 * math.sqrt(0.5)),
        (["optim.lr_scale=none"], 16, 2048, 5e-4),
    ],
)
def test_derived_batch_and_lr(overrides, world, batch, lr):
    d = derived(cfg(*overrides), world)
    assert (d["world_size"], d["global_batch"]) == (world, batch)
    assert d["lr"] == pytest.approx(lr, rel=1e-12)
    assert (d["warmup_lr"], d["min_lr"]) == (1e-6, 1e-5)  # absolute, never scaled


def test_derived_names_and_world_size_check():
    assert derived(cfg(), 1)["output_dir"] == "runs/swat_deit_tiny_patch16_224"
    assert derived(cfg("name=abl1", "output_dir=/scratch/{name}/out"), 1)["output_dir"] == "/scratch/abl1/out"
    assert derived(cfg(), 2)["lr_rule"] == "linear: 0.0005 x 256 / 512"
    with pytest.raises(ConfigError, match="world size"):
        derived(cfg(), 0)


def test_hash_is_stable_across_spellings_and_sensitive_to_every_change(tmp_path):
    h = config_hash(cfg())
    assert len(h) == 12 and int(h, 16) >= 0
    f = write(tmp_path / "f.yaml", "optim: {lr: 5e-4, weight_decay: 0.05}\ndata: {format: synthetic}\n")
    assert config_hash(load_config([f], [])) == h  # defaults spelled out: same tree, same hash
    assert config_hash(cfg("optim.lr=0.0005")) == h and config_hash(cfg("data.hflip=0.5")) == h
    changed = ["optim.lr=6e-4", "data.scale=[0.1, 1.0]", "model.kwargs.x=1", "engine.deepspeed.x=1", "name=a"]
    changed += ["tracking.uri=http://x", "data.batch_size=64", "sched.cooldown_epochs=0", "ema.enabled=true"]
    hashes = {config_hash(cfg(o)) for o in changed}
    assert h not in hashes and len(hashes) == len(changed)


def test_hash_leaves_out_credentials_so_a_saved_config_resumes_with_the_same_hash(tmp_path):
    given = cfg("tracking.uri=http://alice:s3cret@mlflow:5000")
    saved = save_config(given, tmp_path, redact=redact_tree)
    assert "s3cret" not in saved.read_text() and f"config_hash: {config_hash(given)}" in saved.read_text()
    reloaded = load_config([saved], [])
    assert reloaded.tracking.uri == "http://alice:***@mlflow:5000" and config_hash(reloaded) == config_hash(given)
    assert config_hash(cfg("tracking.uri=http://alice:rotated@mlflow:5000")) == config_hash(given)
    assert config_hash(cfg("tracking.uri=http://alice:s3cret@other:5000")) != config_hash(given)  # the server counts


def test_round_trips(tmp_path):
    c = cfg("model.kwargs={a: [1, {b: null}], c: x}", "data.ratio=[0.3333333333333333, 3.0]", "optim.lr=1e-7",
            "engine.deepspeed.zero_optimization.reduce_bucket_size=5e8", "name=rt")  # fmt: skip
    assert from_dict(to_dict(c)) == c
    assert json.loads(json.dumps(to_dict(c))) == to_dict(c)
    path = save_config(c, tmp_path / "run")
    assert path == tmp_path / "run" / "config.yaml"
    assert path.read_text().splitlines()[0].endswith(f"config_hash: {config_hash(c)}")
    back = load_config([str(path)], [])
    assert back == c and config_hash(back) == config_hash(c)


def test_a_saved_timm_mapped_config_loads_back_equal(tmp_path):
    c = load_config([write(tmp_path / "vit.yaml", SWAT_VIT)], ["data.path=/d"])
    assert load_config([str(save_config(c, tmp_path / "run"))], []) == c


# -- runtime checks ----------------------------------------------------------------------------------


def test_check_runtime_refuses_fp16_and_offload_on_cpu():
    check_runtime(cfg("engine.precision=fp16"), 1, "cuda")
    check_runtime(cfg("engine.precision=bf16"), 1, "cpu")
    with pytest.raises(ConfigError, match="fp16 is not supported on cpu"):
        check_runtime(cfg("engine.precision=fp16"), 1, "cpu")
    with pytest.raises(ConfigError, match="offload"):
        check_runtime(cfg("engine.zero_stage=1", "engine.offload_optimizer=true"), 1, "cpu")


def test_check_runtime_needs_one_optimizer_step_of_samples(tmp_path):
    check_runtime(cfg("data.synthetic_samples=512", "data.batch_size=64"), 8, "cpu")  # exactly one step
    with pytest.raises(ConfigError, match=r"512 training samples cannot fill one optimizer step of 1024"):
        check_runtime(cfg("data.synthetic_samples=512", "data.batch_size=64", "engine.grad_accum=2"), 8, "cpu")
    from swat_dist.data.sources.index import DatasetIndex, ShardInfo, SplitInfo, write_index

    split = SplitInfo(100, [50, 50], [ShardInfo("train-000000.tar", 100, 1)])
    write_index(tmp_path, DatasetIndex("wds", ["a", "b"], {"train": split, "val": split}))
    check_runtime(cfg("data.format=wds", f"data.path={tmp_path}", "data.batch_size=50"), 2, "cpu")
    with pytest.raises(ConfigError, match="100 training samples"):
        check_runtime(cfg("data.format=wds", f"data.path={tmp_path}", "data.batch_size=50"), 4, "cpu")


def test_config_modules_import_no_heavy_library_at_module_level():
    root = Path(swat_dist.__file__).parent
    for name in ("config.py", "config_types.py", "config_timm.py", "config_cli.py", "train/ds_config.py"):
        tree = ast.parse((root / name).read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        mods = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
        mods |= {n.module or "" for n in top if isinstance(n, ast.ImportFrom) and n.level == 0}
        assert not {m.split(".")[0] for m in mods} & {"torch", "timm", "deepspeed", "numpy"}, (name, mods)
        assert mods, name  # the scan sees the module's imports


# -- swat-dist config ---------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="swat-dist")
    add_config_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_config_command_prints_the_tree_derived_values_and_deepspeed(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    f = write(tmp_path / "vit.yaml", SWAT_VIT)
    overrides = ["data.format=synthetic", "data.synthetic_samples=5000"]
    assert run_cli(["config", "-c", f, *overrides, "--world-size", "8"]) == 0
    out = capsys.readouterr().out
    config_text = out.split("# config\n", 1)[1].split("\n# derived\n")[0]
    c = from_dict(yaml.safe_load(config_text))
    assert c == load_config([f], overrides)
    derived_text = out.split("# derived\n", 1)[1].split("\n# deepspeed\n")[0]
    values = yaml.safe_load(derived_text)
    assert (values["world_size"], values["global_batch"], values["lr"]) == (8, 2048, 7.5e-4)
    assert values["steps_per_epoch"] == 2 and values["config_hash"] == config_hash(c)
    assert "none: optim.lr as given" in derived_text and "# note: " in out
    ds = json.loads(out.split("# deepspeed\n", 1)[1])
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_clipping"]) == (2048, 256, 1.0)


def test_config_command_world_size_from_env_and_errors(capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert run_cli(["config", SYN]) == 0
    assert "global_batch: 512  # 128 per rank x 1 accum x 4 ranks" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"did you mean 'optim\.lr'"):
        run_cli(["config", SYN, "optim.lrr=1"])
    monkeypatch.setenv("WORLD_SIZE", "four")
    with pytest.raises(ConfigError, match="WORLD_SIZE"):
        run_cli(["config", SYN])
