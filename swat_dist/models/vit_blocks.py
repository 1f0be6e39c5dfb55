"""DeiT/ViT blocks with structure-aware mixing (SWAT_SPEC 3.2).

Within tokens: attention whose qkv and output projections average a Linear with a conv over each
token's (c, alpha, alpha) image (:class:`StructuredLinear`). Among tokens: the channel MLP gains a
depthwise conv over the token grid (:class:`ConvMlpGeneral`). With ``swat_mixing=False`` the same block
uses plain Linear projections and timm's ``Mlp`` - the baseline ViT block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import Tensor, nn

from .layers import ConvMlpGeneral, attention_projections, grid_map, tokens_from_grid
from .layers.explicit import explicit_ops


class Attention(nn.Module):
    """Multi-head self-attention: fused ``F.scaled_dot_product_attention``, or explicit matmuls in
    :func:`~.layers.explicit.explicit_mode` (fvcore counts those; a fused kernel it does not).

    ``alpha``/``kernel_size`` set, the projections are structure-aware; heads are split the usual way
    afterwards. For SWAT DeiT, heads == c, so head k is exactly channel segment k (one alpha x alpha map).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        alpha: int | None = None,
        kernel_size: int = 3,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv, self.proj = attention_projections(dim, alpha, kernel_size, qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x_BNC: Tensor) -> Tensor:
        B, N, C = x_BNC.shape
        qkv = self.qkv(x_BNC).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = self._attend(q, k, v)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, C)))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if not torch.jit.is_scripting():  # noqa: SIM102 (nested: TorchScript prunes only a bare is_scripting())
            if explicit_ops():
                return self.attn_drop(((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)) @ v
        # Dropout on the attention weights inside the kernel, where attn_drop puts it in the explicit form.
        p = self.attn_drop.p if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p, scale=self.scale)


class GridConvMlp(nn.Module):
    """Channel mixing with token structure: ConvMlpGeneral over the (Hg, Wg) token grid, on (B, N, C) tokens."""

    def __init__(self, dim: int, hidden: int, kernel_size: int, drop: float = 0.0) -> None:
        super().__init__()
        self.mlp = ConvMlpGeneral(dim, hidden, dim, kernel_size=kernel_size, drop=drop)

    def forward(self, x_BNC: Tensor, grid: tuple[int, int]) -> Tensor:
        return tokens_from_grid(self.mlp(grid_map(x_BNC, grid)))


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(attn(LN x)); x + DropPath(mlp(LN x))."""

    __constants__ = ["grid_mlp"]  # TorchScript compiles only the branch this flag takes

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        swat_mixing: bool = True,
        alpha: int = 8,
        attn_kernel: int = 3,
        mlp_kernel: int = 5,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(
            dim, num_heads, alpha if swat_mixing else None, attn_kernel, qkv_bias, attn_drop, proj_drop
        )
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.grid_mlp = swat_mixing  # GridConvMlp takes the grid, timm's Mlp does not
        self.mlp: nn.Module = GridConvMlp(dim, hidden, mlp_kernel, proj_drop) if swat_mixing else Mlp(dim, hidden)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x_BNC: Tensor, grid: tuple[int, int]) -> Tensor:
        x_BNC = x_BNC + self.drop_path1(self.attn(self.norm1(x_BNC)))
        z = self.norm2(x_BNC)
        z = self.mlp(z, grid) if self.grid_mlp else self.mlp(z)
        return x_BNC + self.drop_path2(z)
