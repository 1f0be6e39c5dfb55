"""The auxiliary FCN head of the UperNet setups (SEG_SPEC 3): deep supervision on the stride-16 map."""

from __future__ import annotations

from torch import Tensor, nn

from ._conv import ConvBNReLU, classifier


class FCNHead(nn.Module):
    """One 3x3 ConvBNReLU to ``channels`` (256), Dropout2d, 1x1 classifier; logits at the input map's stride.

    Training only (loss weight 0.4 in the published recipe, applied by the caller).
    """

    def __init__(self, in_chs: int, num_classes: int, channels: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_chs, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.cls = classifier(channels, num_classes)

    def forward(self, x_BCHW: Tensor) -> Tensor:
        return self.cls(self.dropout(self.conv(x_BCHW)))
