"""Parameter groups (which parameters skip weight decay, layer decay) and the lr schedule at key steps."""

from __future__ import annotations

import itertools
import math

import pytest
import timm
from torch import nn

from swat_dist.config import derived, load_config
from swat_dist.train.optim import lr_at, no_weight_decay_names, param_groups


def micro() -> nn.Module:
    return timm.create_model("swat_deit_micro_patch4_32", num_classes=10, depth=2)


def test_no_weight_decay_on_1d_biases_and_listed_names():
    model = micro()
    cfg = load_config([], ["data.format=synthetic"])
    decay, no_decay = param_groups(model, cfg.optim)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {"pos_embed", "tokenizer.patch_pos_embed"} <= set(no_decay["names"])  # model.no_weight_decay()
    assert "blocks.0.norm1.weight" in no_decay["names"] and "head.bias" in no_decay["names"]
    assert "head.weight" in decay["names"] and "blocks.1.attn.qkv.linear.weight" in decay["names"]
    params = dict(model.named_parameters())
    assert all(params[n].ndim > 1 for n in decay["names"])
    assert sorted(decay["names"] + no_decay["names"]) == sorted(params)


def test_no_weight_decay_keywords_are_honoured():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Parameter(nn.init.normal_(nn.Parameter(nn.Linear(3, 3).weight)))
            self.relative_position_bias_table = nn.Parameter(nn.Linear(3, 3).weight.detach().clone())

        def no_weight_decay_keywords(self):
            return {"relative_position_bias_table"}

    assert no_weight_decay_names(M()) == {"relative_position_bias_table"}


def test_layer_decay_scales_lr_by_depth():
    cfg = load_config([], ["data.format=synthetic", "optim.layer_decay=0.5"])
    groups = param_groups(micro(), cfg.optim)
    scale = {n: g["lr_scale"] for g in groups for n in g["names"]}
    wd = {n: g["weight_decay"] for g in groups for n in g["names"]}
    assert scale["head.weight"] == 1.0
    assert scale["blocks.1.attn.qkv.linear.weight"] == 0.5 and scale["blocks.0.attn.qkv.linear.weight"] == 0.25
    assert scale["pos_embed"] == 0.125  # the stem is layer 0 of 4 (stem, 2 blocks, head)
    assert wd["pos_embed"] == 0.0 and wd["blocks.0.norm1.bias"] == 0.0 and wd["head.weight"] == 0.05


def test_lr_schedule_key_steps():
    cfg = load_config(
        [],
        ["data.format=synthetic", "sched.epochs=10", "sched.warmup_epochs=2", "sched.cooldown_epochs=3",
         "sched.warmup_lr=1e-6", "sched.min_lr=1e-5", "optim.lr=1e-3", "optim.lr_scale=none"],
    )  # fmt: skip
    d, spe = derived(cfg, 1), 100
    lr = lambda s: lr_at(s, spe, cfg.sched, d)  # noqa: E731
    assert lr(0) == pytest.approx(1e-6)
    assert lr(100) == pytest.approx(1e-6 + 0.5 * (1e-3 - 1e-6))  # half way through the warmup
    # after the warmup: the cosine from step 0 (timm's warmup_prefix=False)
    assert lr(200) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 0.2)))
    assert lr(500) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))
    assert lr(999) == pytest.approx(1e-5, rel=1e-3)
    assert lr(1000) == lr(1299) == 1e-5  # the cooldown sits at min_lr
    values = [lr(s) for s in range(200, 1000)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_lr_is_scaled_by_global_batch():
    cfg = load_config([], ["data.format=synthetic", "data.batch_size=64", "optim.lr=5e-4", "sched.warmup_epochs=0"])
    assert lr_at(0, 10, cfg.sched, derived(cfg, 4)) == pytest.approx(5e-4 * 256 / 512)
