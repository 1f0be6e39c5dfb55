"""Parameter and FLOP counts, measured the way SWAT_SPEC section 7 does (fvcore, one 1x3xSxS input).

fvcore counts one multiply-add as one flop, so "GFLOPs" here are GMACs, as in the paper's tables.
Attention must be explicit matmuls for fvcore to see it: timm's fused attention is switched off while a
model is built here, and SWAT's layers run their explicit form (unfolded within-token convs, unfused
attention: ``layers.explicit``) while one is counted. Costs a jit trace: about a second per 224 px model on CPU.
"""

from __future__ import annotations

import warnings
from typing import Any

import timm
import torch
from timm.layers import config as timm_layer_config
from torch import nn

from .layers.explicit import explicit_mode

with warnings.catch_warnings():  # fvcore's import calls torch.jit.script, which torch now deprecates
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis


def count_params(model: nn.Module) -> int:
    """All parameters, trainable or not (the paper counts them all)."""
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: nn.Module, img_size: int, in_chans: int = 3) -> float:
    """fvcore GFLOPs (= GMACs) of one forward pass at ``img_size``."""
    analysis = FlopCountAnalysis(model.eval(), torch.randn(1, in_chans, img_size, img_size))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    with torch.no_grad(), explicit_mode():  # the trace runs here, lazily
        return analysis.total() / 1e9


def create_unfused(name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with fused attention off, so fvcore counts timm baselines' attention."""
    previous = timm_layer_config._USE_FUSED_ATTN
    timm_layer_config.set_fused_attn(False)
    try:
        return timm.create_model(name, **kwargs)
    finally:
        timm_layer_config._USE_FUSED_ATTN = previous


def conv_macs(conv: nn.Conv2d, out_hw: tuple[int, int]) -> int:
    """Multiply-adds of one Conv2d producing an ``out_hw`` map (how fvcore counts a conv)."""
    kh, kw = conv.kernel_size
    return conv.out_channels * out_hw[0] * out_hw[1] * (conv.in_channels // conv.groups) * kh * kw
