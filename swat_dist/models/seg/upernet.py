"""UperNet's decode head (UPerHead, SEG_SPEC 3): a pyramid pooling module on the coarsest map, a top-down
FPN over all maps, and a fuse conv over their concatenation at the finest map's resolution."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._conv import ConvBNReLU, classifier


def resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear, align_corners=False (the mmseg UperNet configs' setting)."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class PyramidPooling(nn.Module):
    """PPM: per scale s, adaptive average pool to s x s -> 1x1 ConvBNReLU -> upsample back; concat with
    the input; 3x3 ConvBNReLU bottleneck to ``channels``.

    Scale 1 pools to a single pixel: in training mode its BatchNorm then needs more than one sample per
    BN group (batch >= 2, or SyncBatchNorm across ranks), as any BN after global pooling.
    """

    def __init__(self, in_chs: int, channels: int, scales: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.scales = tuple(scales)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvBNReLU(in_chs, channels, 1)) for s in self.scales
        )
        self.bottleneck = ConvBNReLU(in_chs + len(self.scales) * channels, channels, 3)

    def forward(self, x_BCHW: Tensor) -> Tensor:
        size = x_BCHW.shape[-2:]
        pooled = [resize(branch(x_BCHW), size) for branch in self.branches]
        return self.bottleneck(torch.cat([x_BCHW, *pooled], dim=1))


class UPerHead(nn.Module):
    """UPerHead over maps ordered fine to coarse (strides 4, 8, 16, 32): logits at the finest map's stride.

    laterals: 1x1 ConvBNReLU on every map but the last, the PPM output for the last; top-down: each
    lateral += the upsampled coarser one; 3x3 ConvBNReLU on every lateral but the last (the PPM output is
    already 3x3-convolved); all upsampled to the finest map, concatenated, fused by a 3x3 ConvBNReLU;
    Dropout2d then the 1x1 classifier. ``channels`` everywhere (512 in the published setups).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 512,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if len(in_channels) < 2:
            raise ValueError(f"UPerHead needs at least 2 feature maps, got in_channels={list(in_channels)}")
        self.in_channels = tuple(in_channels)
        self.ppm = PyramidPooling(in_channels[-1], channels, pool_scales)
        self.lateral_convs = nn.ModuleList(ConvBNReLU(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvBNReLU(channels, channels, 3) for _ in in_channels[:-1])
        self.fuse = ConvBNReLU(len(in_channels) * channels, channels, 3)
        # Dropout2d (whole channels), as mmseg's decode heads; the brief's "dropout 0.1".
        self.dropout = nn.Dropout2d(dropout)
        self.cls = classifier(channels, num_classes)

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        if len(maps) != len(self.in_channels):
            raise ValueError(f"UPerHead was built for {len(self.in_channels)} maps, got {len(maps)}")
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, maps[:-1])]
        laterals.append(self.ppm(maps[-1]))
        for i in range(len(laterals) - 1, 0, -1):  # top-down: coarse into fine
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals[:-1])]
        outs.append(laterals[-1])
        size = outs[0].shape[-2:]
        fused = self.fuse(torch.cat([outs[0], *(resize(x, size) for x in outs[1:])], dim=1))
        return self.cls(self.dropout(fused))
