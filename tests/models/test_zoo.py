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
        every_token = tuple(range(1, tokens.dim() - 1))  # (B, N, C) tokens, or Swin's (B, H, W, C) map
        torch.testing.assert_close(pooled.forward_head(tokens, pre_logits=True), tokens.mean(every_token))
    with pytest.raises(ValueError, match="global_pool"):
        timm.create_model(name, global_pool="token")
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(3, global_pool="max")


# --- timm's model contract (timm's tests/test_models.py, the kinds issue 16 lists), swept over the registry ---
# What timm holds its own ViT / Swin / Mixer / ResMLP to: cfgs that say what the model does, forward_features /
# forward_head(pre_logits) / forward_intermediates / features_only, torch.jit.script, torch.fx (forward exact,
# backward, fx then scripted). Inputs follow timm's rule (the cfg size if fixed, else capped at 128 px).
# The full sweep runs on every micro model and mixer_ti16_224; of the 224 px models, the tiny one of each family
# scripts and traces too (slow marks), while the bigger ones (DeiT-S, DeiT-B/32, Mixer-S/B, ResMLP-12, Swin-S)
# are the same classes and code paths at more width and depth: compile time (~10 s each) for no new coverage.
OURS = sorted(
    timm.list_models("swat_*") + [e.baseline for e in ZOO if e.baseline == "mixer_ti16_224" or "_micro_" in e.baseline]
)
SPATIAL = [n for n in OURS if "swin" in n]  # timm's 'std' models: forward_features is a (B, H, W, C) map
CHEAP = [n for n in OURS if "_micro_" in n]
TINY_224 = [
    "swat_deit_tiny_patch16_224",
    "swat_mixer_ti16_224",
    "swat_resmlp_12_224",
    "swat_swin_tiny_patch4_window7_224",
    "mixer_ti16_224",
]
TRACED = CHEAP + [pytest.param(n, marks=pytest.mark.slow) for n in TINY_224]


def _timm_size(name: str, target: int = 128) -> tuple[int, int, int]:
    cfg = timm.get_pretrained_cfg(name)
    return cfg.input_size if cfg.fixed_input_size else tuple(min(s, target) for s in cfg.input_size)


def _fx(model: torch.nn.Module) -> torch.nn.Module:
    """The model as timm's tests trace it: torchvision's extractor with timm's leaf modules and wrapped functions
    (the logits: our models have one output in train and eval mode alike)."""
    from timm.models import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    kw = dict(
        leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(), param_shapes_constant=True
    )
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=kw)
    return create_feature_extractor(
        model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=kw
    )


@pytest.mark.parametrize("name", OURS)
def test_cfg_attributes_and_heads_follow_timm(name):
    model = timm.create_model(name).eval()
    cfg = model.pretrained_cfg
    assert model.num_classes == cfg["num_classes"] and model.num_features > 0 and model.head_hidden_size > 0
    state = model.state_dict()
    assert cfg["classifier"] + ".weight" in state and cfg["first_conv"] + ".weight" in state
    x = torch.randn(1, *cfg["input_size"])
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (1, model.head_hidden_size)
        if name in SPATIAL:  # (B, H, W, C) at the cfg's pool_size
            assert feats.shape == (1, *cfg["pool_size"], model.num_features)
        else:
            assert feats.dim() == 3 and feats.shape[-1] == model.num_features
        model.reset_classifier(0)
        assert model.num_classes == 0 and model(x).shape == pre.shape
        unpooled = timm.create_model(name, num_classes=0, global_pool="").eval()
        assert unpooled(x).shape == feats.shape  # no pooling, no classifier: the features themselves
    if cfg["fixed_input_size"] and "swat_" in name:  # it says so because other sizes are refused
        with pytest.raises(ValueError, match="img_size"):
            model(torch.randn(1, 3, 2 * x.shape[-2], 2 * x.shape[-1]))


@pytest.mark.parametrize("name", OURS)
def test_forward_intermediates_and_features_only_follow_timm(name):
    model = timm.create_model(name).eval()
    info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
    x = torch.randn(1, *_timm_size(name, 96))
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
        feats = timm.create_model(name, features_only=True, out_indices=tuple(range(len(info)))).eval()(x)
    for got in (maps, feats):
        assert len(got) == len(info)
        for m, ch, red in zip(got, info.channels(), info.reduction()):
            assert m.shape == (1, ch, -(-x.shape[-2] // red), -(-x.shape[-1] // red)) and torch.isfinite(m).all()


@pytest.mark.parametrize("name", TRACED)
def test_torchscript_computes_what_eager_does(name):
    with timm.set_scriptable(True):
        model = timm.create_model(name).eval()
    torch.nn.init.normal_(model.get_classifier().weight, std=0.02)  # Mixer heads start at zero
    x = torch.randn(1, *_timm_size(name))
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


@pytest.mark.parametrize("name", TRACED)
def test_fx_trace_is_exact_and_scripts(name):
    model = timm.create_model(name).eval()
    torch.nn.init.normal_(model.get_classifier().weight, std=0.02)
    x = torch.randn(1, *_timm_size(name))
    traced = _fx(model)
    with torch.inference_mode():
        eager = model(x)
        assert torch.equal(next(iter(traced(x).values())), eager)  # timm asks for exact equality
    with torch.inference_mode():
        torch.testing.assert_close(next(iter(torch.jit.script(traced)(x).values())), eager)


@pytest.mark.parametrize("name", TRACED)
def test_fx_backward_reaches_every_parameter(name):
    model = timm.create_model(name, num_classes=42).train()
    torch.nn.init.normal_(model.get_classifier().weight, std=0.02)
    traced = _fx(model)
    out = next(iter(traced(torch.randn(2, *_timm_size(name))).values()))
    assert out.shape == (2, 42)
    out.mean().backward()
    assert all(p.grad is not None for p in traced.parameters())
    assert sum(p.numel() for p in traced.parameters()) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", [n for n in CHEAP if "swat_" in n])
def test_traced_models_keep_the_one_line_size_errors(name):
    model = timm.create_model(name).eval()
    traced = _fx(model)
    size = _timm_size(name)[-1]
    with pytest.raises(ValueError, match=r"multiple of \d+"):
        traced(torch.randn(1, 3, size + 2, size + 2))
