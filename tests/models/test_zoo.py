"""Contracts swept over every model in the zoo, SWAT and baseline (STYLE.md principle 11).

Exact parameter counts and fvcore FLOPs against SWAT_SPEC section 4; forward, backward, features,
pretrained cfgs and the ablation switches for every family.
"""

import pytest
import timm
import torch

from swat_dist.models import ZOO
from swat_dist.models.complexity import count_gflops, count_params, create_unfused
from swat_dist.models.factory import create_model
from swat_dist.models.layers import ConvMlpGeneral, PatchTokenizer, StructureAwareTokenizer, StructuredLinear

SWAT = [e.name for e in ZOO]
ALL = SWAT + [e.baseline for e in ZOO]
PAPER = [e for e in ZOO if e.params is not None]


def _size(model: torch.nn.Module) -> int:
    return model.pretrained_cfg["input_size"][-1]


def test_registry_lists_exactly_the_zoo():
    assert sorted(timm.list_models("swat_*")) == sorted(SWAT)
    for name in ALL:
        assert timm.is_model(name), name


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_reaches_every_parameter(name):
    model = timm.create_model(name, num_classes=7)
    torch.nn.init.normal_(model.get_classifier().weight, std=0.02)  # Mixer heads start at zero
    size = _size(model)
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"


@pytest.mark.parametrize("entry", PAPER, ids=lambda e: e.name)
def test_parameter_counts_match_the_spec(entry):
    with torch.device("meta"):
        assert count_params(timm.create_model(entry.name)) == entry.params
        baseline = count_params(timm.create_model(entry.baseline))
    assert abs(baseline / 1e6 - entry.baseline_params_m) < 0.0005  # spec gives baselines to 3 decimals


@pytest.mark.parametrize("entry", PAPER, ids=lambda e: e.name)
def test_fvcore_flops_within_one_percent_of_the_spec(entry):
    assert count_gflops(create_unfused(entry.name), 224) == pytest.approx(entry.gflops, rel=0.01)
    assert count_gflops(create_unfused(entry.baseline), 224) == pytest.approx(entry.baseline_gflops, rel=0.01)


@pytest.mark.parametrize("name", ALL)
def test_pretrained_cfg_carries_the_eval_transform(name):
    cfg = timm.create_model(name, pretrained=False).pretrained_cfg
    for key in ("input_size", "mean", "std", "crop_pct", "interpolation"):
        assert cfg.get(key) is not None, key


@pytest.mark.parametrize("name", SWAT)
def test_ablation_switches_change_what_they_say(name):
    def kinds(model):
        return {type(m) for m in model.modules()}

    with torch.device("meta"):
        both = kinds(timm.create_model(name))
        tokens_only = kinds(timm.create_model(name, swat_mixing=False))
        mixing_only = kinds(timm.create_model(name, swat_tokens=False))
    assert StructureAwareTokenizer in both and ConvMlpGeneral in both
    assert StructureAwareTokenizer in tokens_only and ConvMlpGeneral not in tokens_only
    assert StructuredLinear not in tokens_only
    assert PatchTokenizer in mixing_only and StructureAwareTokenizer not in mixing_only
    assert ConvMlpGeneral in mixing_only


@pytest.mark.parametrize("name", SWAT)
def test_features_only_gives_maps_at_the_declared_strides(name):
    model = timm.create_model(name, features_only=True)
    size = _size(model)
    maps = model(torch.randn(1, 3, size, size))
    assert len(maps) == len(model.feature_info.channels()) >= 1
    for m, ch, red in zip(maps, model.feature_info.channels(), model.feature_info.reduction()):
        assert m.shape == (1, ch, size // red, size // red)


@pytest.mark.parametrize("name", [e.name for e in ZOO if e.family in ("deit", "swin") and e.params])
@pytest.mark.parametrize("size", [256, 384])
def test_any_resolution(name, size):
    model = timm.create_model(name, img_size=size, num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 3)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ValueError, match="swat_deit_tiny_patch16_224"):
        create_model("swat_deit_tiny_patch16")


@pytest.mark.parametrize("name", [e.name for e in ZOO if e.params is None])  # one micro model per family
def test_unpooled_head_returns_tokens_and_bad_pools_are_refused(name):
    model = timm.create_model(name, global_pool="").eval()
    size = _size(model)
    with torch.no_grad():
        tokens = model.forward_features(torch.randn(1, 3, size, size))
        assert torch.equal(model.forward_head(tokens, pre_logits=True), tokens)  # no class token to pick
        pooled = timm.create_model(name).eval()
        pooled.load_state_dict(model.state_dict())
        torch.testing.assert_close(pooled.forward_head(tokens, pre_logits=True), tokens.mean(1))
    with pytest.raises(ValueError, match="global_pool"):
        timm.create_model(name, global_pool="token")
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(3, global_pool="max")
