"""Backbone features -> the 4-level pyramid (strides 4, 8, 16, 32 of the input) UperNet expects.

Two adapters, one per backbone shape:
- :class:`HierarchicalNeck` (Swin): maps come at those strides natively; each gets a LayerNorm (SEG_SPEC 3),
  NHWC maps (timm's Swin) become NCHW, and a backbone with fewer stages (our 3-stage micro Swin) is completed
  with 2x2 max-pools of its last map, as the ViT neck makes its stride-32 level.
- :class:`MultiLevelNeck` (DeiT/ViT): maps all come at the patch stride; each is rescaled to its level by
  transposed convs (finer) or max-pooling (coarser), the factor computed from the patch stride.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

PYRAMID_STRIDES = (4, 8, 16, 32)


class HierarchicalNeck(nn.Module):
    """LayerNorm each map over its channels, return NCHW maps at ``PYRAMID_STRIDES``.

    ``strides`` are the backbone's (4, 8, 16[, 32]); missing coarser levels are 2x2 max-pools of the last.
    """

    def __init__(self, channels: Sequence[int], strides: Sequence[int], nhwc: bool) -> None:
        super().__init__()
        n = len(strides)
        if tuple(strides) != PYRAMID_STRIDES[:n] or n < 3:
            raise ValueError(f"a hierarchical backbone needs maps at strides {PYRAMID_STRIDES} (>= 3), got {strides}")
        self.nhwc = nhwc
        self.norms = nn.ModuleList(nn.LayerNorm(c) for c in channels)
        self.extra_levels = len(PYRAMID_STRIDES) - n
        self.out_channels = [*channels, *[channels[-1]] * self.extra_levels]

    def forward(self, maps: Sequence[Tensor]) -> list[Tensor]:
        out = []
        for norm, x in zip(self.norms, maps):
            # LayerNorm runs on channels-last; the permuted result is an NCHW view in channels_last memory.
            x_BHWC = x if self.nhwc else x.permute(0, 2, 3, 1)
            out.append(norm(x_BHWC).permute(0, 3, 1, 2))
        for _ in range(self.extra_levels):
            out.append(F.max_pool2d(out[-1], 2))
        return out


def rescale(dim: int, native: int, target: int) -> nn.Module:
    """A module taking a stride-``native`` map to stride ``target``, ``dim`` channels kept.

    Finer (target < native, ratio 2^k): k 2x2 stride-2 transposed convs with BatchNorm + GELU between them
    (BEiT's x4 level is ConvT-BN-GELU-ConvT, its x2 level one ConvT). Equal: identity. Coarser: max-pool
    with kernel = stride = target / native.
    """
    if target == native:
        return nn.Identity()
    if target > native:
        if target % native:
            raise ValueError(f"cannot max-pool stride {native} to stride {target}: not an integer factor")
        return nn.MaxPool2d(target // native)
    ratio = native // target
    if native % target or ratio & (ratio - 1):
        raise ValueError(f"cannot upsample stride {native} to stride {target}: factor is not a power of 2")
    layers: list[nn.Module] = [nn.ConvTranspose2d(dim, dim, 2, stride=2)]
    for _ in range(ratio.bit_length() - 2):  # k - 1 more doublings
        layers += [nn.BatchNorm2d(dim), nn.GELU(), nn.ConvTranspose2d(dim, dim, 2, stride=2)]
    return nn.Sequential(*layers)


class MultiLevelNeck(nn.Module):
    """Rescale ``len(PYRAMID_STRIDES)`` same-stride token maps to strides 4, 8, 16, 32.

    Patch 16 gives BEiT's neck: x4 deconv, x2 deconv, identity, 2x2 max-pool. Patch 4 (our micro DeiTs)
    gives identity, then max-pools 2, 4, 8; patch 32 three, two and one deconvs and an identity.
    """

    def __init__(self, dim: int, native_stride: int) -> None:
        super().__init__()
        self.levels = nn.ModuleList(rescale(dim, native_stride, s) for s in PYRAMID_STRIDES)
        self.out_channels = [dim] * len(PYRAMID_STRIDES)

    def forward(self, maps: Sequence[Tensor]) -> list[Tensor]:
        if len(maps) != len(self.levels):
            raise ValueError(f"MultiLevelNeck takes {len(self.levels)} maps, got {len(maps)}")
        return [level(x) for level, x in zip(self.levels, maps)]
