"""ConvMlpGeneral: the two-layer MLP with a depthwise spatial conv in its hidden layer (SWAT_SPEC 3.1).

It is the among-token half of structure-aware mixing ("channel mixing with token structure") when run
over the token grid, and the within-token token-mixing of Mixer when run over the (h, w) grid inside
each token. The 1x1 convs are exactly the baseline MLP's two Linear layers; SWAT adds the depthwise
k x k conv and a second GELU between them. Dropout sits once, before fc2, as in the official code.
"""

from __future__ import annotations

from torch import Tensor, nn

from .depthwise import DepthwiseConv2d


class ConvMlpGeneral(nn.Module):
    """(B, Cin, S1, S2) -> (B, Cout, S1, S2): 1x1 -> GELU -> depthwise kxk -> GELU -> drop -> 1x1."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        out_features: int | None = None,
        kernel_size: int = 3,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        out_features = out_features or in_features
        self.fc1 = nn.Conv2d(in_features, hidden_features, 1)
        self.act1 = nn.GELU()
        self.fc3 = DepthwiseConv2d(hidden_features, kernel_size)  # = nn.Conv2d(groups=hidden), faster CPU backward
        self.act2 = nn.GELU()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Conv2d(hidden_features, out_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act1(self.fc1(x))
        x = self.act2(self.fc3(x))
        return self.fc2(self.drop(x))
