"""What differs per task on the training side - how the model and the loaders are built - in one table
(torchtitan's TrainSpec), so ``run``, ``eval`` and ``export`` never ask which task they train.

Segmentation: :class:`~swat_dist.models.seg.SegmentationModel` on the backbone ``model.name``, its
backbone initialised from ``model.backbone_weights`` through timm's pretrained path (DeiT position
embeddings resampled to the crop's grid) with every backbone weight required to be in the file, and its
BatchNorms synchronised across ranks on GPUs (SEG_SPEC 3: 2 images per GPU make per-rank statistics
noisy; torch's SyncBatchNorm has no CPU kernel, so CPU ranks keep their own statistics).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from ..config import Config
from ..data.loaders.build import Loaders, build_loaders
from ..dist import DistEnv
from .checkpoint_paths import weights_file
from .finetune import _classifier
from .finetune import build_model as build_classifier


@dataclass(frozen=True)
class TrainSpec:
    build_model: Callable[[Config, DistEnv], nn.Module]
    build_loaders: Callable[[Config, nn.Module, DistEnv], Loaders]


def _classify_loaders(cfg: Config, model: nn.Module, env: DistEnv) -> Loaders:
    return build_loaders(
        cfg.data, model.pretrained_cfg, world_size=env.world_size, rank=env.rank, seed=cfg.seed,  # type: ignore[arg-type]
        num_classes=cfg.model.num_classes, img_size=cfg.model.img_size,
    )  # fmt: skip


def _segment_model(cfg: Config, env: DistEnv) -> nn.Module:
    from ..models.seg import SegmentationModel

    m, s = cfg.model, cfg.seg
    kwargs: dict[str, Any] = dict(m.kwargs)
    if m.backbone_weights:
        file = weights_file(m.backbone_weights)
        overlay = dict(file=str(file), num_classes=_head_classes(m.name, file))
        kwargs |= dict(pretrained=True, pretrained_cfg_overlay=overlay)
    model = SegmentationModel(
        m.name, m.num_classes, img_size=s.crop_size, drop_path_rate=m.drop_path_rate, channels=s.channels,
        aux_channels=s.aux_channels, **kwargs,
    )  # fmt: skip
    if m.backbone_weights:
        _check_backbone_loaded(model, file)
    # torch's SyncBatchNorm runs on GPUs only ("expected input tensor to be on GPU"): on CPU ranks keep
    # per-rank statistics, so CPU runs on several ranks are not batch-size-exact there (documented).
    sync = env.world_size > 1 and torch.cuda.is_available()
    return nn.SyncBatchNorm.convert_sync_batchnorm(model) if sync else model


def _head_classes(name: str, file: Any) -> int:
    """The class count of the classifier in a classification weights file (timm must build that head to load)."""
    head = f"{_classifier(name)}.weight"
    with safe_open(str(file), framework="pt") as f:
        if head not in set(f.keys()):
            raise ValueError(f"model.backbone_weights={file} has no {head}: it does not hold {name} weights")
        return int(f.get_slice(head).get_shape()[0])


def _check_backbone_loaded(model: nn.Module, file: Any) -> None:
    """timm loads pretrained weights non-strictly for features_only: require every backbone weight by name."""
    with safe_open(str(file), framework="pt") as f:
        have = set(f.keys())
    backbone: Any = model.backbone
    missing = [k for k in backbone.state_dict() if k.removeprefix("model.") not in have]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ValueError(f"model.backbone_weights={file} lacks backbone weights: {shown}")


def _segment_loaders(cfg: Config, model: nn.Module, env: DistEnv) -> Loaders:
    from ..data.loaders.seg_build import build_seg_loaders

    return build_seg_loaders(
        cfg.data, cfg.seg, world_size=env.world_size, rank=env.rank, seed=cfg.seed, num_classes=cfg.model.num_classes
    )


SPECS = {
    "classify": TrainSpec(lambda cfg, env: build_classifier(cfg), _classify_loaders),
    "segment": TrainSpec(_segment_model, _segment_loaders),
}


def spec_for(cfg: Config) -> TrainSpec:
    return SPECS[cfg.task]
