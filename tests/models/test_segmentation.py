"""UperNet segmentation (SEG_SPEC 3): output contract per backbone kind, head structure, necks, the errors.

Micro backbones at small sizes for the contracts; the real Swin-T / DeiT-S pairs run once at 512 px
(slow: ~10 s each on one CPU thread, eval mode, batch 1).
"""

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from swat_dist.models.seg import (
    FCNHead,
    HierarchicalNeck,
    MultiLevelNeck,
    SegLogits,
    SegmentationModel,
    UPerHead,
    vit_out_indices,
)

K = 5  # classes
SMALL = dict(channels=32, aux_channels=16)  # narrow heads: the contracts do not depend on the width

# (backbone, img_size, input (H, W), backbone kwargs). Swin: sides multiples of 32 (the micro Swin's 3 stages
# need 16; its stride-32 level is a max-pool), any window (both Swins pad to windows). DeiT: multiples of the
# patch (4) at the img_size grid; timm's ViT takes a non-square img_size, ours only dynamic_img_size=True.
MICRO_CASES = [
    ("swat_swin_micro_patch4_window4_32", 64, (64, 64), {}),
    ("swat_swin_micro_patch4_window4_32", (64, 96), (64, 96), {}),
    ("swin_micro_patch4_window4_32", 64, (64, 64), {}),
    ("swin_micro_patch4_window4_32", (64, 96), (64, 96), {}),
    ("swat_deit_micro_patch4_32", 32, (32, 32), {}),
    ("swat_deit_micro_patch4_32", 32, (32, 48), dict(dynamic_img_size=True)),
    ("deit_micro_patch4_32", 32, (32, 32), {}),
    ("deit_micro_patch4_32", (32, 48), (32, 48), {}),
]


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _ids(case: tuple) -> str:
    name, _, (h, w), kw = case
    return f"{name}-{h}x{w}" + ("-dynamic" if kw else "")


@pytest.mark.parametrize("case", MICRO_CASES, ids=_ids)
def test_train_returns_main_at_stride_4_and_aux_at_stride_16_eval_main_only(case):
    name, img_size, (H, W), kwargs = case
    model = SegmentationModel(name, K, img_size=img_size, **SMALL, **kwargs)
    out = model.train()(torch.randn(2, 3, H, W))
    assert isinstance(out, SegLogits)
    main, aux = out
    assert main.shape == (2, K, H // 4, W // 4) and aux.shape == (2, K, H // 16, W // 16)
    assert (model.output_stride, model.aux_stride) == (4, 16)
    with torch.no_grad():
        pred = model.eval()(torch.randn(1, 3, H, W))
    assert isinstance(pred, torch.Tensor) and pred.shape == (1, K, H // 4, W // 4)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "swat_swin_tiny_patch4_window7_224",
        "swin_tiny_patch4_window7_224",
        "swat_deit_small_patch16_224",
        "deit_small_patch16_224",
    ],
)
def test_real_backbones_give_the_pyramid_and_logits_at_512(name):
    model = SegmentationModel(name, 150, img_size=512).eval()
    if model.family == "vit":  # position embeddings sized to the 512 crop: 32 x 32 tokens
        inner = model.backbone.model
        grid = getattr(inner, "grid", None) or inner.patch_embed.grid_size
        assert tuple(grid) == (32, 32)
    with torch.no_grad():
        maps = model.neck(model.backbone(torch.randn(1, 3, 512, 512)))
        assert [m.shape[-1] for m in maps] == [128, 64, 32, 16]
        assert [m.shape[1] for m in maps] == list(model.decode_head.in_channels)
        main = model.decode_head(maps)
        aux = model.aux_head(maps[2])
    assert main.shape == (1, 150, 128, 128) and aux.shape == (1, 150, 32, 32)
    assert torch.isfinite(main).all()


@pytest.mark.parametrize(
    "name", ["swat_mixer_micro_patch4_32", "swat_resmlp_micro_patch4_32", "mixer_s16_224", "resmlp_12_224"]
)
def test_mlp_backbones_are_refused_in_one_line(name):
    with pytest.raises(ValueError, match="fixed token count") as err:
        SegmentationModel(name, K, img_size=512)
    assert "\n" not in str(err.value) and name in str(err.value)


def test_other_backbone_families_are_refused():
    with pytest.raises(ValueError, match="not a supported backbone"):
        SegmentationModel("resnet18", K)
    with pytest.raises(ValueError, match="unknown model"):
        SegmentationModel("swat_swin_tyni_patch4_window7_224", K)


def upernet_params(in_chs: list[int], C: int, K: int, scales: int = 4) -> int:
    """UPerHead by hand: every ConvBNReLU is k*k*cin*cout weights (no bias) + 2*cout BN affine."""

    def cbr(cin: int, cout: int, k: int) -> int:
        return k * k * cin * cout + 2 * cout

    ppm = scales * cbr(in_chs[-1], C, 1) + cbr(in_chs[-1] + scales * C, C, 3)
    laterals = sum(cbr(c, C, 1) for c in in_chs[:-1])
    fpn = (len(in_chs) - 1) * cbr(C, C, 3)
    fuse = cbr(len(in_chs) * C, C, 3)
    return ppm + laterals + fpn + fuse + C * K + K


def test_upernet_structure_matches_a_hand_count():
    head = UPerHead([8, 16, 24, 32], K, channels=16)
    assert _params(head) == upernet_params([8, 16, 24, 32], 16, K)
    pools = [m.output_size for m in head.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    assert pools == [1, 2, 3, 6]
    bns = [m for m in head.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 4 + 1 + 3 + 3 + 1 and all(b.num_features == 16 for b in bns)  # PPM, bottleneck, lat, fpn, fuse
    assert sum(isinstance(m, nn.ReLU) for m in head.modules()) == len(bns)
    assert isinstance(head.dropout, nn.Dropout2d) and head.dropout.p == 0.1
    assert head.cls.kernel_size == (1, 1) and head.cls.out_channels == K
    # the published Swin-T configuration: 512 channels over 96/192/384/768, 150 classes
    with torch.device("meta"):
        swin_t = UPerHead([96, 192, 384, 768], 150)
    assert _params(swin_t) == upernet_params([96, 192, 384, 768], 512, 150)
    aux = FCNHead(384, 150)
    assert _params(aux) == 9 * 384 * 256 + 2 * 256 + 256 * 150 + 150


def test_swin_t_upernet_matches_the_published_size():
    # SEG_SPEC 6: Swin-T + UperNet 60M parameters (auxiliary head included, as mmseg counts).
    with torch.device("meta"):
        model = SegmentationModel("swin_tiny_patch4_window7_224", 150)
    assert abs(_params(model) / 1e6 - 60) < 0.3


@pytest.mark.parametrize("name", ["swat_swin_micro_patch4_window4_32", "swat_deit_micro_patch4_32"])
def test_backward_reaches_every_parameter_of_backbone_neck_and_both_heads(name):
    model = SegmentationModel(name, K, img_size=64, **SMALL).train()
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, K, (2, 64, 64))
    main, aux = model(x)
    up = dict(size=(64, 64), mode="bilinear", align_corners=False)
    loss = F.cross_entropy(F.interpolate(main, **up), y) + 0.4 * F.cross_entropy(F.interpolate(aux, **up), y)
    loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []  # no unused parameter (DDP-safe)
    for part in (model.backbone, model.decode_head, model.aux_head):
        assert sum(p.grad.abs().sum() for p in part.parameters()) > 0


def test_vit_features_come_after_blocks_4_6_8_12_or_the_same_fractions():
    assert vit_out_indices(12) == (3, 5, 7, 11)
    assert vit_out_indices(4) == (0, 1, 2, 3)
    assert vit_out_indices(6) == (1, 2, 3, 5)
    with pytest.raises(ValueError, match="at least 4 blocks"):
        vit_out_indices(3)
    with torch.device("meta"):
        model = SegmentationModel("swat_deit_small_patch16_224", 150)
    assert list(model.backbone.out_indices) == [3, 5, 7, 11]


def test_multilevel_neck_rescales_from_the_patch_stride():
    neck16 = MultiLevelNeck(8, native_stride=16)
    kinds = [[type(m).__name__ for m in (lvl if isinstance(lvl, nn.Sequential) else [lvl])] for lvl in neck16.levels]
    assert kinds == [
        ["ConvTranspose2d", "BatchNorm2d", "GELU", "ConvTranspose2d"],
        ["ConvTranspose2d"],
        ["Identity"],
        ["MaxPool2d"],
    ]
    neck4 = MultiLevelNeck(8, native_stride=4)
    assert isinstance(neck4.levels[0], nn.Identity)
    assert [lvl.kernel_size for lvl in neck4.levels[1:]] == [2, 4, 8]
    for neck, grid in ((neck16, 4), (neck4, 16)):  # a 64 px input
        out = neck([torch.randn(1, 8, grid, grid) for _ in range(4)])
        assert [o.shape[-1] for o in out] == [16, 8, 4, 2]
    with pytest.raises(ValueError, match="power of 2"):
        MultiLevelNeck(8, native_stride=12)


def test_hierarchical_neck_normalises_each_map_and_completes_to_stride_32():
    maps = [torch.randn(2, c, s, s) * 3 + 1 for c, s in ((4, 16), (8, 8), (16, 4))]
    neck = HierarchicalNeck([4, 8, 16], [4, 8, 16], nhwc=False)
    out = neck(maps)
    assert [o.shape[1:] for o in out] == [(4, 16, 16), (8, 8, 8), (16, 4, 4), (16, 2, 2)]
    for o in out[:3]:  # LayerNorm over channels at every pixel (affine at init: 1, 0)
        torch.testing.assert_close(o.mean(1), torch.zeros_like(o.mean(1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[3], F.max_pool2d(out[2], 2))
    nhwc = neck.__class__([4, 8, 16], [4, 8, 16], nhwc=True)
    nhwc.load_state_dict(neck.state_dict())
    for a, b in zip(nhwc([m.permute(0, 2, 3, 1) for m in maps]), out):
        torch.testing.assert_close(a, b)


def test_swin_feature_layouts_are_read_from_the_backbone():
    # timm's own Swin returns channels-last maps (FeatureListNet); ours and the micro baseline NCHW (getter)
    with torch.device("meta"):
        timm_swin = SegmentationModel("swin_tiny_patch4_window7_224", K)
        ours = SegmentationModel("swat_swin_tiny_patch4_window7_224", K)
    assert timm_swin.neck.nhwc and not ours.neck.nhwc
    assert timm_swin.neck.extra_levels == ours.neck.extra_levels == 0


def test_no_weight_decay_names_position_embeddings_tables_and_norms():
    vit = SegmentationModel("deit_micro_patch4_32", K, img_size=32, **SMALL)
    names = dict(vit.named_parameters())
    nwd = vit.no_weight_decay()
    assert nwd <= names.keys()
    assert {"backbone.model.pos_embed", "backbone.model.cls_token", "backbone.model.blocks.0.norm1.weight"} <= nwd
    assert {"decode_head.fuse.1.weight", "aux_head.conv.1.bias"} <= nwd  # the heads' BatchNorms
    assert "decode_head.fuse.0.weight" not in nwd and "backbone.model.blocks.0.attn.qkv.weight" not in nwd
    swin = SegmentationModel("swat_swin_micro_patch4_window4_32", K, img_size=64, **SMALL)
    tables = {n for n, _ in swin.named_parameters() if n.endswith("relative_position_bias_table")}
    assert tables and tables <= swin.no_weight_decay()
    assert "neck.norms.0.weight" in swin.no_weight_decay()


def test_backbone_param_names_are_exactly_the_backbones():
    model = SegmentationModel("swat_deit_micro_patch4_32", K, img_size=32, **SMALL)
    names = model.backbone_param_names()
    assert len(names) == len(list(model.backbone.parameters())) and all(n.startswith("backbone.") for n in names)


def test_classification_weights_load_with_position_embeddings_resampled(tmp_path):
    src = timm.create_model("swat_deit_micro_patch4_32")
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    weights = dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    model = SegmentationModel("swat_deit_micro_patch4_32", K, img_size=64, **weights, **SMALL)
    inner = model.backbone.model
    assert inner.pos_embed.shape == (1, 16 * 16, 96)
    torch.testing.assert_close(inner.blocks[3].mlp.mlp.fc1.weight, src.blocks[3].mlp.mlp.fc1.weight)


def test_input_size_constraints_surface_as_the_backbones_errors():
    # DeiTs are built dynamic by default (whole-image evaluation at each image's size); asked strict, they refuse
    vit = SegmentationModel("swat_deit_micro_patch4_32", K, img_size=32, dynamic_img_size=False, **SMALL).eval()
    with pytest.raises(ValueError, match="dynamic_img_size=True"):
        vit(torch.randn(1, 3, 48, 48))
    default = SegmentationModel("swat_deit_micro_patch4_32", K, img_size=32, **SMALL).eval()
    with torch.no_grad():
        assert default(torch.randn(1, 3, 48, 64)).shape == (1, K, 12, 16)
    swin = SegmentationModel("swat_swin_micro_patch4_window4_32", K, img_size=64, **SMALL).eval()
    with pytest.raises(ValueError, match="multiple of 16"):
        swin(torch.randn(1, 3, 40, 64))


def test_timm_swin_takes_other_sizes_only_when_built_dynamic():
    # timm's Swin builds its attention masks for img_size (strict); ours derives them from each input. The
    # segmentation model builds timm's dynamic unless told otherwise.
    strict = SegmentationModel("swin_micro_patch4_window4_32", K, img_size=64, dynamic_img_size=False, **SMALL).eval()
    with torch.no_grad(), pytest.raises(AssertionError, match="doesn't match model"):
        strict(torch.randn(1, 3, 64, 96))
    dynamic = SegmentationModel("swin_micro_patch4_window4_32", K, img_size=64, **SMALL).eval()
    ours = SegmentationModel("swat_swin_micro_patch4_window4_32", K, img_size=64, **SMALL).eval()
    with torch.no_grad():
        assert dynamic(torch.randn(1, 3, 64, 96)).shape == ours(torch.randn(1, 3, 64, 96)).shape == (1, K, 16, 24)
