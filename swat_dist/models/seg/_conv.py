"""The conv unit both segmentation heads are made of: Conv2d (no bias) -> BatchNorm2d -> ReLU."""

from __future__ import annotations

from torch import nn


class ConvBNReLU(nn.Sequential):
    """``k x k`` conv, same padding, no bias (BatchNorm follows), then BatchNorm2d and ReLU.

    Plain ``nn.BatchNorm2d``: the trainer converts it to ``SyncBatchNorm`` (SEG_SPEC 3: batch 2 per GPU).
    Kaiming-normal (fan_out, ReLU) init, BN weight 1 / bias 0 (PyTorch's BN default).
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1) -> None:
        conv = nn.Conv2d(in_chs, out_chs, kernel_size, padding=kernel_size // 2, bias=False)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        super().__init__(conv, nn.BatchNorm2d(out_chs), nn.ReLU(inplace=True))


def classifier(in_chs: int, num_classes: int) -> nn.Conv2d:
    """The 1x1 per-pixel classifier of a head: weights N(0, 0.01), bias 0 (small logits at the start)."""
    cls = nn.Conv2d(in_chs, num_classes, 1)
    nn.init.normal_(cls.weight, std=0.01)
    assert cls.bias is not None  # for the type checker: Conv2d's default bias=True
    nn.init.zeros_(cls.bias)
    return cls
