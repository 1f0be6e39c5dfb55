"""SWAT MLP-Mixer (SWAT_SPEC 3.3); its trunk, shared with ResMLP, is in :mod:`.mlp_trunk`.

A Mixer's token-mixing weights are sized by the token count N = (img_size / patch)^2, so a model can be
built for any input that is a multiple of the patch size, but its weights only fit that one size:
checkpoints never transfer across resolutions (``checkpoint_filter_fn`` refuses them by name).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from timm.layers import DropPath, to_2tuple
from timm.models import generate_default_cfgs, register_model
from timm.models.mlp_mixer import MixerBlock, MlpMixer
from torch import Tensor, nn

from ._common import swat_cfg
from .layers import (
    ConvMlpGeneral,
    grid_map,
    segment_maps,
    tokens_from_grid,
    tokens_from_segment_maps,
)
from .mlp_trunk import MlpMixerTrunk, build_mlp_model

__all__ = ["MixerBlockConv", "SwatMlpMixer"]


class MixerBlockConv(nn.Module):
    """SWAT Mixer block: token-MLP with a depthwise conv inside each token, channel-MLP with one across tokens.

    Token mixing runs ConvMlpGeneral(N -> Dt -> N, depthwise ``token_kernel``) over (B*c, N, alpha, alpha):
    its 1x1 convs are the baseline token-MLP, the depthwise conv mixes neighbouring within-token positions.
    Channel mixing runs ConvMlpGeneral(C -> Dc -> C, depthwise ``channel_kernel``) over the (Hg, Wg) grid.
    """

    def __init__(
        self,
        dim: int,
        seq_len: int,
        grid: tuple[int, int],
        alpha: int,
        mlp_ratio: tuple[float, float] = (0.5, 4.0),
        token_kernel: int = 3,
        channel_kernel: int = 5,
        drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        tokens_dim, channels_dim = (int(r * dim) for r in to_2tuple(mlp_ratio))
        self.grid, self.alpha = grid, alpha
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_tokens = ConvMlpGeneral(seq_len, tokens_dim, kernel_size=token_kernel, drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_channels = ConvMlpGeneral(dim, channels_dim, kernel_size=channel_kernel, drop=drop)

    def token_mixing(self, x_BNC: Tensor) -> Tensor:
        """The token-mixing branch (before DropPath and the residual)."""
        y = self.mlp_tokens(segment_maps(self.norm1(x_BNC), self.alpha))
        return tokens_from_segment_maps(y, x_BNC.shape[0])

    def channel_mixing(self, x_BNC: Tensor) -> Tensor:
        """The channel-mixing branch (before DropPath and the residual)."""
        return tokens_from_grid(self.mlp_channels(grid_map(self.norm2(x_BNC), self.grid)))

    def forward(self, x_BNC: Tensor) -> Tensor:
        x_BNC = x_BNC + self.drop_path(self.token_mixing(x_BNC))
        return x_BNC + self.drop_path(self.channel_mixing(x_BNC))


class SwatMlpMixer(MlpMixerTrunk):
    """SWAT MLP-Mixer (SWAT_SPEC 3.3). ``swat_mixing=False`` uses timm's baseline ``MixerBlock`` instead.

    ``token_kernel`` is the depthwise kernel over the alpha x alpha grid inside a token (k1),
    ``channel_kernel`` the one over the token grid (k2). ``stem_dim`` is the tokenizer's m.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        patch_size: int = 16,
        embed_dim: int = 512,
        depth: int = 8,
        mlp_ratio: tuple[float, float] = (0.5, 4.0),
        token_kernel: int = 3,
        channel_kernel: int = 5,
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
                # timm's MixerBlock defaults to LayerNorm(eps=1e-6), as ours
                return MixerBlock(embed_dim, seq_len, mlp_ratio, drop=proj_drop_rate, drop_path=drop_path)
            return MixerBlockConv(
                embed_dim,
                seq_len,
                grid,
                alpha,
                mlp_ratio=mlp_ratio,
                token_kernel=token_kernel,
                channel_kernel=channel_kernel,
                drop=proj_drop_rate,
                drop_path=drop_path,
            )

        super().__init__(
            make_block,
            partial(nn.LayerNorm, eps=1e-6),
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


def _baseline_cfg(**kwargs: Any) -> dict[str, Any]:
    return swat_cfg(first_conv="stem.proj", fixed_input_size=True, **kwargs)


default_cfgs = generate_default_cfgs(
    {
        "swat_mixer_ti16_224": swat_cfg(fixed_input_size=True),
        "swat_mixer_s16_224": swat_cfg(fixed_input_size=True),
        "swat_mixer_b32_224": swat_cfg(fixed_input_size=True),
        "swat_mixer_micro_patch4_32": swat_cfg(img_size=32, crop_pct=1.0, fixed_input_size=True),
        "mixer_ti16_224": _baseline_cfg(),
        "mixer_micro_patch4_32": _baseline_cfg(img_size=32, crop_pct=1.0),
    }
)

# CPU-sized: 32 px -> 8x8 tokens of 4 px; alpha 2 (stride-2 stem), so c = 128 / 4 = 32 segments.
_MICRO = dict(img_size=32, patch_size=4, embed_dim=128, depth=4)


@register_model
def swat_mixer_ti16_224(pretrained: bool = False, **kwargs: Any) -> SwatMlpMixer:
    """SWAT Mixer-Ti/16: C 256, 8 blocks, stem m=64, alpha 8 (c 4), k1 3, k2 5."""
    args = dict(patch_size=16, embed_dim=256, depth=8, stem_dim=64, token_kernel=3, channel_kernel=5)
    return build_mlp_model(SwatMlpMixer, "swat_mixer_ti16_224", pretrained, args, kwargs)


@register_model
def swat_mixer_s16_224(pretrained: bool = False, **kwargs: Any) -> SwatMlpMixer:
    """SWAT Mixer-S/16: C 512, 8 blocks, stem m=128, alpha 8 (c 8), k1 3, k2 5."""
    args = dict(patch_size=16, embed_dim=512, depth=8, stem_dim=128, token_kernel=3, channel_kernel=5)
    return build_mlp_model(SwatMlpMixer, "swat_mixer_s16_224", pretrained, args, kwargs)


@register_model
def swat_mixer_b32_224(pretrained: bool = False, **kwargs: Any) -> SwatMlpMixer:
    """SWAT Mixer-B/32: C 768, 12 blocks, stem m=128, alpha 16 (c 3), k1 5, k2 3 (7x7 token grid)."""
    args = dict(patch_size=32, embed_dim=768, depth=12, stem_dim=128, token_kernel=5, channel_kernel=3)
    return build_mlp_model(SwatMlpMixer, "swat_mixer_b32_224", pretrained, args, kwargs)


@register_model
def swat_mixer_micro_patch4_32(pretrained: bool = False, **kwargs: Any) -> SwatMlpMixer:
    """CPU-sized SWAT Mixer for 32 px inputs: C 128, 4 blocks, stem m=64, alpha 2, k1 3, k2 3 (8x8 grid)."""
    args = dict(_MICRO, stem_dim=64, token_kernel=3, channel_kernel=3)
    return build_mlp_model(SwatMlpMixer, "swat_mixer_micro_patch4_32", pretrained, args, kwargs)


@register_model
def mixer_ti16_224(pretrained: bool = False, **kwargs: Any) -> MlpMixer:
    """Baseline Mixer-Ti/16 (timm's MlpMixer; not in timm or the Mixer paper): C 256, 8 blocks."""
    args = dict(patch_size=16, num_blocks=8, embed_dim=256, mlp_ratio=(0.5, 4.0))
    return build_mlp_model(MlpMixer, "mixer_ti16_224", pretrained, args, kwargs)


@register_model
def mixer_micro_patch4_32(pretrained: bool = False, **kwargs: Any) -> MlpMixer:
    """Baseline for ``swat_mixer_micro_patch4_32`` (timm's MlpMixer, same width and depth)."""
    args = dict(img_size=32, patch_size=4, num_blocks=4, embed_dim=128, mlp_ratio=(0.5, 4.0))
    return build_mlp_model(MlpMixer, "mixer_micro_patch4_32", pretrained, args, kwargs)
