"""Which backbones UperNet takes, and how: the family (from the model class), its feature indices, its neck.

The family is read from the class of the architecture, built once on the meta device (no memory, no
init cost), so timm's own models and ours are told apart without guessing from names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import timm
import torch
from timm.models.mlp_mixer import MlpMixer
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ..factory import check_model_name
from ..mlp_trunk import MlpMixerTrunk
from ..swin import SwatSwin
from ..vit import SwatVisionTransformer
from .neck import PYRAMID_STRIDES, HierarchicalNeck, MultiLevelNeck

# Drop-path rates of the published UperNet setups (SEG_SPEC 3).
DROP_PATH = {"swin": 0.3, "vit": 0.1}
# Blocks 4, 6, 8, 12 of a 12-block ViT (SEG_SPEC 3), as fractions of the depth for other depths.
VIT_BLOCK_FRACTIONS = (4 / 12, 6 / 12, 8 / 12, 12 / 12)
# Arguments that size inputs, load weights or pick features: not needed (nor wanted, on meta) to read the architecture.
_NOT_ARCH = ("img_size", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "out_indices")


@dataclass(frozen=True)
class Architecture:
    """What the segmentation model needs to know about a backbone before building it."""

    family: str  # "swin" or "vit"
    timm_swin: bool  # timm's own Swin (it checks the input size unless built with dynamic_img_size)
    depth: int  # blocks (vit) or stages (swin)
    no_weight_decay: frozenset[str]  # parameter names, relative to the classification model
    no_weight_decay_keywords: frozenset[str]


def inspect(name: str, **kwargs: Any) -> Architecture:
    """Build ``name`` on the meta device and classify it; ``ValueError`` for backbones UperNet cannot take."""
    check_model_name(name)
    with torch.device("meta"):
        model: Any = timm.create_model(name, **{k: v for k, v in kwargs.items() if k not in _NOT_ARCH})
    if isinstance(model, (MlpMixerTrunk, MlpMixer)):
        raise ValueError(
            f"{name} is an MLP-Mixer/ResMLP: its token-mixing weights are sized to a fixed token count, so it "
            "cannot take segmentation crops of another size, and no published ADE20K setup exists for it"
        )
    if isinstance(model, (SwatSwin, SwinTransformer)):
        family, depth = "swin", len(model.layers)
    elif isinstance(model, (SwatVisionTransformer, VisionTransformer)):
        family, depth = "vit", len(model.blocks)
    else:
        raise ValueError(f"{name} ({type(model).__name__}) is not a supported backbone: Swin or DeiT/ViT models only")
    nwd = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    keywords = model.no_weight_decay_keywords() if hasattr(model, "no_weight_decay_keywords") else set()
    return Architecture(family, isinstance(model, SwinTransformer), depth, frozenset(nwd), frozenset(keywords))


def vit_out_indices(depth: int) -> tuple[int, ...]:
    """0-based blocks after which a ViT's features are taken: (3, 5, 7, 11) at depth 12; the same fractions of
    the depth, rounded, elsewhere ((0, 1, 2, 3) for our 4-block micro DeiTs, (1, 2, 3, 5) at depth 6)."""
    blocks = tuple(max(1, round(depth * f)) - 1 for f in VIT_BLOCK_FRACTIONS)
    if len(set(blocks)) != len(blocks):
        raise ValueError(f"a ViT backbone needs at least {len(blocks)} blocks for {len(blocks)} levels, has {depth}")
    return blocks


def build_features(
    name: str, arch: Architecture, img_size: Any, drop_path_rate: float, **kwargs: Any
) -> tuple[nn.Module, nn.Module]:
    """timm's ``features_only`` network for ``name`` and the neck turning its maps into the 4-level pyramid."""
    if arch.family == "vit":
        kwargs.setdefault("out_indices", vit_out_indices(arch.depth))
    if arch.family == "vit" or arch.timm_swin:
        # whole-image evaluation feeds every val image at its own (resized, padded) size: position
        # embeddings (DeiT) and timm Swin's size check follow the input (our Swin takes any size as built)
        kwargs.setdefault("dynamic_img_size", True)
    features = timm.create_model(name, features_only=True, img_size=img_size, drop_path_rate=drop_path_rate, **kwargs)
    info: Any = features.feature_info
    neck: nn.Module
    if arch.family == "vit":
        if len(info.channels()) != len(PYRAMID_STRIDES):
            raise ValueError(f"a ViT backbone needs {len(PYRAMID_STRIDES)} out_indices, got {info.channels()}")
        neck = MultiLevelNeck(info.channels()[0], info.reduction()[0])
    else:
        # timm's Swin features come channels-last (FeatureListNet, output_fmt NHWC); ours NCHW (the getter).
        nhwc = getattr(features, "output_fmt", "NCHW") == "NHWC"
        neck = HierarchicalNeck(info.channels(), info.reduction(), nhwc)
    return features, neck
