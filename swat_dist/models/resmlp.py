"""SWAT ResMLP (SWAT_SPEC 3.4): ResMLP with structure-aware token and channel mixing.

Shares the Mixer trunk (tokenizer, pooling, head, features API) from :mod:`.mlp_trunk`. As for Mixer, the
token-mixing weights are N x N, so weights only fit the ``img_size`` the model was built for.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import DropPath, Mlp
from timm.models import generate_default_cfgs, register_model
from timm.models.mlp_mixer import Affine, MlpMixer, ResBlock
from torch import Tensor, nn

from ._common import swat_cfg
from .layers import ConvMlpGeneral, DepthwiseConv2d, grid_map, segment_maps, tokens_from_grid, tokens_from_segment_maps
from .mlp_trunk import MlpMixerTrunk, build_mlp_model

__all__ = ["ResBlockConv", "SwatResMLP"]


class ResBlockConv(nn.Module):
    """SWAT ResMLP block: Affine-normed, LayerScaled residual branches with structure-aware mixing.

    Token mixing on (B*c, N, alpha, alpha): 1x1 conv N -> N (the baseline Linear over tokens) -> GELU (new;
    baseline ResMLP has no activation here) -> depthwise ``token_kernel`` conv over the within-token grid.
    Channel mixing: ConvMlpGeneral(C -> mlp_ratio*C -> C, depthwise ``channel_kernel``) over the token grid.
    """

    def __init__(
        self,
        dim: int,
        seq_len: int,
        grid: tuple[int, int],
        alpha: int,
        mlp_ratio: float = 4.0,
        token_kernel: int = 3,
        channel_kernel: int = 5,
        init_values: float = 1e-4,
        drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.grid, self.alpha = grid, alpha
        self.norm1 = Affine(dim)
        self.linear_tokens = nn.Conv2d(seq_len, seq_len, 1)
        self.act = nn.GELU()
        self.dw_tokens = DepthwiseConv2d(seq_len, token_kernel)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = Affine(dim)
        self.mlp_channels = ConvMlpGeneral(dim, int(dim * mlp_ratio), kernel_size=channel_kernel, drop=drop)
        self.ls1 = nn.Parameter(init_values * torch.ones(dim))
        self.ls2 = nn.Parameter(init_values * torch.ones(dim))

    def token_mixing(self, x_BNC: Tensor) -> Tensor:
        """The token-mixing branch (before LayerScale, DropPath and the residual)."""
        y = self.dw_tokens(self.act(self.linear_tokens(segment_maps(self.norm1(x_BNC), self.alpha))))
        return tokens_from_segment_maps(y, x_BNC.shape[0])

    def channel_mixing(self, x_BNC: Tensor) -> Tensor:
        """The channel-mixing branch (before LayerScale, DropPath and the residual)."""
        return tokens_from_grid(self.mlp_channels(grid_map(self.norm2(x_BNC), self.grid)))

    def forward(self, x_BNC: Tensor) -> Tensor:
        x_BNC = x_BNC + self.drop_path(self.ls1 * self.token_mixing(x_BNC))
        return x_BNC + self.drop_path(self.ls2 * self.channel_mixing(x_BNC))


class SwatResMLP(MlpMixerTrunk):
    """SWAT ResMLP. ``swat_mixing=False`` uses timm's baseline ``ResBlock`` (Linear(N, N) tokens, Mlp channels).

    ``token_kernel`` is the depthwise kernel inside a token, ``channel_kernel`` the one over the token grid,
    ``init_values`` the LayerScale init. Norms are Affine; the trunk's final norm is Affine too.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        patch_size: int = 16,
        embed_dim: int = 384,
        depth: int = 12,
        mlp_ratio: float = 4.0,
        token_kernel: int = 3,
        channel_kernel: int = 5,
        init_values: float = 1e-4,
        stem_dim: int = 128,
        alpha: int | None = None,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        swat_tokens: bool = True,
        swat_mixing: bool = True,
    ) -> None:
        def make_block(seq_len: int, grid: tuple[int, int], alpha: int, drop_path: float) -> nn.Module:
            if not swat_mixing:
                return ResBlock(
                    embed_dim, seq_len, mlp_ratio, init_values=init_values, drop=proj_drop_rate, drop_path=drop_path
                )
            return ResBlockConv(
                embed_dim,
                seq_len,
                grid,
                alpha,
                mlp_ratio=mlp_ratio,
                token_kernel=token_kernel,
                channel_kernel=channel_kernel,
                init_values=init_values,
                drop=proj_drop_rate,
                drop_path=drop_path,
            )

        super().__init__(
            make_block,
            Affine,
            img_size=img_size,
            in_chans=in_chans,
            num_classes=num_classes,
            global_pool=global_pool,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            stem_dim=stem_dim,
            alpha=alpha,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
            swat_tokens=swat_tokens,
        )


default_cfgs = generate_default_cfgs(
    {
        "swat_resmlp_12_224": swat_cfg(fixed_input_size=True),
        "swat_resmlp_micro_patch4_32": swat_cfg(img_size=32, crop_pct=1.0, fixed_input_size=True),
        "resmlp_micro_patch4_32": swat_cfg(img_size=32, crop_pct=1.0, fixed_input_size=True, first_conv="stem.proj"),
    }
)


@register_model
def swat_resmlp_12_224(pretrained: bool = False, **kwargs: Any) -> SwatResMLP:
    """SWAT ResMLP-S12: C 384, 12 blocks, stem m=128, alpha 8 (c 6), within-token 3x3, token-grid 5x5."""
    model_args = dict(patch_size=16, embed_dim=384, depth=12, stem_dim=128, token_kernel=3, channel_kernel=5)
    return build_mlp_model(SwatResMLP, "swat_resmlp_12_224", pretrained, model_args, kwargs)


@register_model
def swat_resmlp_micro_patch4_32(pretrained: bool = False, **kwargs: Any) -> SwatResMLP:
    """CPU-sized SWAT ResMLP for 32 px inputs: C 128, 4 blocks, stem m=64, alpha 2, kernels 3 / 3 (8x8 grid)."""
    model_args = dict(img_size=32, patch_size=4, embed_dim=128, depth=4, stem_dim=64, token_kernel=3, channel_kernel=3)
    return build_mlp_model(SwatResMLP, "swat_resmlp_micro_patch4_32", pretrained, model_args, kwargs)


@register_model
def resmlp_micro_patch4_32(pretrained: bool = False, **kwargs: Any) -> MlpMixer:
    """Baseline for ``swat_resmlp_micro_patch4_32``: timm's MlpMixer with ResBlock/Affine/Mlp, as resmlp_12_224."""
    model_args = dict(
        img_size=32,
        patch_size=4,
        num_blocks=4,
        embed_dim=128,
        mlp_ratio=4,
        block_layer=ResBlock,
        norm_layer=Affine,
        mlp_layer=Mlp,
    )
    return build_mlp_model(MlpMixer, "resmlp_micro_patch4_32", pretrained, model_args, kwargs)
