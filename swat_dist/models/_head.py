"""The classifier end every swat_dist model shares (timm conventions): mean over tokens, dropout, Linear."""

from typing import TYPE_CHECKING

from torch import Tensor, nn

GLOBAL_POOLS = ("avg", "")  # '' = no pooling: forward_head returns the (B, N, C) tokens (timm's convention)


def check_global_pool(global_pool: str) -> str:
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool must be 'avg' or '' (no pooling; there is no class token), got {global_pool!r}")
    return global_pool


class TokenClassifier(nn.Module):
    """``forward_head`` / ``forward`` / ``get_classifier`` over ``forward_features``' (B, N, C) or (B, H, W, C).

    Subclasses set ``global_pool``, ``head_drop`` and ``head`` and implement ``forward_features``.
    """

    if TYPE_CHECKING:  # for mypy only: TorchScript cannot read an nn.Module class annotation
        global_pool: str
        head_drop: nn.Module
        head: nn.Module

    def __init__(self) -> None:
        super().__init__()
        # The token axes of forward_features' output: (B, N, C) tokens; a subclass whose features are a
        # (B, H, W, C) map, as timm's Swin, sets [1, 2]. An attribute, not x.dim(): torch.fx traces the tensor.
        self.pool_dims: list[int] = [1]

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=self.pool_dims)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head
