"""What every swat_dist model entrypoint shares: its pretrained cfg and how timm builds it.

Models are built through timm's ``build_model_with_cfg`` so ``pretrained=True`` with
``pretrained_cfg_overlay=dict(file=...)`` loads our own checkpoints, and ``features_only=True`` wraps
the model in timm's ``FeatureGetterNet`` (which calls ``forward_intermediates``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg
from torch import nn


def swat_cfg(img_size: int = 224, crop_pct: float = 0.9, **kwargs: Any) -> dict[str, Any]:
    """Pretrained cfg for a model trained with the SWAT recipe (SWAT_SPEC 6.1: ImageNet mean/std, bicubic)."""
    cfg = {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, img_size, img_size),
        "pool_size": None,
        "crop_pct": crop_pct,
        "interpolation": "bicubic",
        "fixed_input_size": False,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "tokenizer.conv1",
        "classifier": "head",
        "license": "apache-2.0",
    }
    cfg.update(kwargs)
    return cfg


def build(
    model_cls: Callable[..., nn.Module],
    variant: str,
    pretrained: bool,
    filter_fn: Callable[..., dict] | None = None,
    feature_indices: int | tuple[int, ...] = 3,
    **kwargs: Any,
) -> Any:
    """Build ``model_cls`` under timm's conventions (pretrained files, features_only via the getter).

    ``feature_indices`` are the default ``out_indices`` for ``features_only=True``: an int n means the
    last n blocks (timm's convention for isotropic models; its global default (0..4) assumes 5 stages).
    A user's ``out_indices=`` overrides it.
    """
    return build_model_with_cfg(
        model_cls,
        variant,
        pretrained,
        pretrained_filter_fn=filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=feature_indices),
        **kwargs,
    )
