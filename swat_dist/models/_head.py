"""The classifier end every swat_dist model shares (timm conventions): mean over tokens, dropout, Linear."""

from __future__ import annotations

from torch import Tensor, nn

GLOBAL_POOLS = ("avg", "")  # '' = no pooling: forward_head returns the (B, N, C) tokens (timm's convention)


def check_global_pool(global_pool: str) -> str:
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool must be 'avg' or '' (no pooling; there is no class token), got {global_pool!r}")
    return global_pool


class TokenClassifier(nn.Module):
    """``forward_head`` / ``forward`` / ``get_classifier`` over ``forward_features``' (B, N, C) tokens.

    Subclasses set ``global_pool``, ``head_drop`` and ``head`` and implement ``forward_features``.
    """

    global_pool: str
    head_drop: nn.Module
    head: nn.Module

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, x_BNC: Tensor, pre_logits: bool = False) -> Tensor:
        x = x_BNC.mean(dim=1) if self.global_pool == "avg" else x_BNC
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head
