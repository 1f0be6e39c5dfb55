"""SWAT DeiT/ViT (SWAT_SPEC 2.2 and 3.2): no class token, global average pooling, structure-aware blocks.

The token grid follows ``img_size``; ``pos_embed`` (1, N, C) is resampled when a checkpoint trained at
another size is loaded (see :func:`checkpoint_filter_fn`), or on the fly with ``dynamic_img_size=True``.
"""

from typing import Any

import torch
from timm.layers import resample_abs_pos_embed, to_2tuple, trunc_normal_
from timm.models import generate_default_cfgs, register_model, register_notrace_function
from timm.models._features import feature_take_indices
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer import checkpoint_filter_fn as timm_vit_filter
from torch import Tensor, nn

from ._common import build, swat_cfg
from ._head import TokenClassifier, check_global_pool
from .layers import PatchTokenizer, StructureAwareTokenizer, check_input_size, grid_map, input_grid
from .vit_blocks import Block

# torch.fx: each call is one graph node run on the real input size, not a branch on a traced one
# (torch.fx.wrap patches this module's globals; timm's own tracer also reads register_notrace_function).
torch.fx.wrap("input_grid")


@register_notrace_function
def grid_pos_embed(
    pos_embed: Tensor, grid: tuple[int, int], built: tuple[int, int], patch: int, dynamic: bool
) -> Tensor:
    """``pos_embed`` (1, N, C) for a token grid ``grid``: as built, resampled if ``dynamic``, else a clear error."""
    if grid[0] == built[0] and grid[1] == built[1]:
        return pos_embed
    if not dynamic:
        raise ValueError(
            f"input {grid[0] * patch}x{grid[1] * patch} gives a {grid[0]}x{grid[1]} token grid but the model was "
            f"built for {built[0]}x{built[1]}: create it with img_size={grid[0] * patch} "
            "(weights are resampled on load) or dynamic_img_size=True"
        )
    return resample_abs_pos_embed(pos_embed, [grid[0], grid[1]], [built[0], built[1]], num_prefix_tokens=0)


torch.fx.wrap("grid_pos_embed")


class SwatVisionTransformer(TokenClassifier):
    """DeiT/ViT with structure-aware tokenization (``swat_tokens``) and mixing (``swat_mixing``).

    Both on is SWAT; either off gives the paper's two ablations. ``alpha`` is the within-token grid
    side; ``segments`` channels per token position follow as embed_dim / alpha^2.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        alpha: int = 8,
        stem_dim: int = 128,
        attn_kernel: int = 3,
        mlp_kernel: int = 5,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        swat_tokens: bool = True,
        swat_mixing: bool = True,
        dynamic_img_size: bool = False,
    ) -> None:
        super().__init__()
        img_hw = to_2tuple(img_size)  # timm passes (H, W) when the cfg says fixed_input_size
        check_input_size(img_hw[0], img_hw[1], patch_size, f"a patch-{patch_size} model")
        self.num_classes = num_classes
        self.global_pool = check_global_pool(global_pool)
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.dynamic_img_size = dynamic_img_size
        self.tokenizer = self._tokenizer(patch_size, in_chans, embed_dim, alpha, stem_dim, swat_tokens)
        self.grid = (img_hw[0] // patch_size, img_hw[1] // patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        # a Python list, not torch.linspace: models are also built on the meta device (param counting)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio,
                swat_mixing,
                alpha,
                attn_kernel,
                mlp_kernel,
                qkv_bias,
                0.0,
                attn_drop_rate,
                r,
            )
            for r in rates
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head: nn.Module = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f"blocks.{i}") for i in range(depth)]
        self._init_weights()

    @staticmethod
    def _tokenizer(patch: int, in_chans: int, dim: int, alpha: int, stem_dim: int, swat: bool) -> nn.Module:
        if not swat:
            return PatchTokenizer(dim, patch, in_chans)
        # conv2 takes the stride the patch still needs beyond conv1's 2 and the alpha regroup (2 for B/32).
        stride2 = patch // (2 * alpha)
        if stride2 < 1 or 2 * alpha * stride2 != patch:
            raise ValueError(f"patch_size {patch} must equal 2 * alpha * k for an integer k (alpha={alpha})")
        return StructureAwareTokenizer(
            dim, alpha, stem_dim, conv1=(4, 2, 1), conv2=(stride2, stride2), in_chans=in_chans, patch_pos_embed=True
        )

    def _init_weights(self) -> None:
        # SWAT_SPEC 3.8: Linear trunc-normal(.02) including the head, LayerNorm 1/0, convs keep PyTorch's init.
        trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "tokenizer.patch_pos_embed"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^pos_embed|^tokenizer", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = check_global_pool(global_pool)
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def _embed(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        grid = input_grid(x, self.patch_size, f"a patch-{self.patch_size} model")
        pos = grid_pos_embed(self.pos_embed, grid, self.grid, self.patch_size, self.dynamic_img_size)
        tokens, _ = self.tokenizer(x)
        return self.pos_drop(tokens + pos), grid

    def forward_features(self, x: Tensor) -> Tensor:
        x_BNC, grid = self._embed(x)
        for blk in self.blocks:
            x_BNC = blk(x_BNC, grid)
        return self.norm(x_BNC)

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Token maps (B, C, Hg, Wg) after the selected blocks (timm's forward_intermediates contract)."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.blocks), indices)
        x_BNC, grid = self._embed(x)
        blocks = self.blocks[: max_index + 1] if stop_early or intermediates_only else self.blocks
        intermediates = []
        for i, blk in enumerate(blocks):
            x_BNC = blk(x_BNC, grid)
            if i in take:
                y = self.norm(x_BNC) if norm else x_BNC
                intermediates.append(grid_map(y, grid) if output_fmt == "NCHW" else y)
        if intermediates_only:
            return intermediates
        return self.norm(x_BNC), intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        take, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()  # type: ignore[assignment]
        if prune_head:
            self.reset_classifier(0, "")
        return take


def checkpoint_filter_fn(state_dict: dict[str, Any], model: SwatVisionTransformer) -> dict[str, Tensor]:
    """Adapt a checkpoint to ``model``: resample ``pos_embed`` to the model's token grid."""
    state_dict = state_dict.get("model", state_dict.get("state_dict", state_dict))
    out = {}
    for k, v in state_dict.items():
        k = k.removeprefix("module.")
        if k == "pos_embed" and v.shape != model.pos_embed.shape:
            v = resample_abs_pos_embed(v, list(model.grid), num_prefix_tokens=0)
        out[k] = v
    return out


def _create(variant: str, pretrained: bool, **kwargs: Any) -> SwatVisionTransformer:
    return build(SwatVisionTransformer, variant, pretrained, filter_fn=checkpoint_filter_fn, **kwargs)


default_cfgs = generate_default_cfgs(
    {
        # fixed_input_size: the model takes its img_size only (pos_embed), unless built with dynamic_img_size
        # or another img_size (as timm's ViT cfgs say)
        "swat_deit_tiny_patch16_224": swat_cfg(fixed_input_size=True),
        "swat_deit_small_patch16_224": swat_cfg(fixed_input_size=True),
        "swat_deit_base_patch32_224": swat_cfg(fixed_input_size=True),
        "swat_deit_micro_patch4_32": swat_cfg(img_size=32, crop_pct=1.0, fixed_input_size=True),
        "deit_micro_patch4_32": swat_cfg(
            img_size=32, crop_pct=1.0, fixed_input_size=True, first_conv="patch_embed.proj"
        ),
    }
)


@register_model
def swat_deit_tiny_patch16_224(pretrained: bool = False, **kwargs: Any) -> SwatVisionTransformer:
    """SWAT DeiT-Ti: C 192, 12 blocks, 3 heads = 3 segments of 8x8 (5,827,883 params)."""
    args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)
    return _create("swat_deit_tiny_patch16_224", pretrained, **dict(args, **kwargs))


@register_model
def swat_deit_small_patch16_224(pretrained: bool = False, **kwargs: Any) -> SwatVisionTransformer:
    """SWAT DeiT-S: C 384, 12 blocks, 6 heads = 6 segments of 8x8 (22,264,910 params)."""
    args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
    return _create("swat_deit_small_patch16_224", pretrained, **dict(args, **kwargs))


@register_model
def swat_deit_base_patch32_224(pretrained: bool = False, **kwargs: Any) -> SwatVisionTransformer:
    """SWAT DeiT-B/32: C 768, 12 blocks, 12 heads; conv2 strides 2; 3x3 depthwise on the 7x7 grid."""
    args = dict(patch_size=32, embed_dim=768, depth=12, num_heads=12, mlp_kernel=3)
    return _create("swat_deit_base_patch32_224", pretrained, **dict(args, **kwargs))


# CPU-sized pair for 32 px images. alpha = 2 (patch 4, stem stride 2), so 24 segments of 2x2 per token
# and heads are split the usual way (head_dim 32), as SWAT Swin does when heads != segments. The
# attention conv is 1x1, as in SWAT Swin's alpha = 2 and 4 stages: a 3x3 conv over a 2x2 token with 24
# segments would cost more than the Linear it is averaged with (+40% model FLOPs for nothing spatial).
_MICRO = dict(img_size=32, patch_size=4, embed_dim=96, depth=4, num_heads=3)


@register_model
def swat_deit_micro_patch4_32(pretrained: bool = False, **kwargs: Any) -> SwatVisionTransformer:
    """SWAT DeiT-micro for 32 px images: C 96, 4 blocks, 3 heads, alpha 2, 3x3 depthwise on the 8x8 grid."""
    args = dict(_MICRO, alpha=2, stem_dim=32, attn_kernel=1, mlp_kernel=3)
    return _create("swat_deit_micro_patch4_32", pretrained, **dict(args, **kwargs))


@register_model
def deit_micro_patch4_32(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """Baseline for swat_deit_micro_patch4_32: timm's own DeiT (class token) at the same width and depth."""
    args = dict(_MICRO, **kwargs)
    return build(VisionTransformer, "deit_micro_patch4_32", pretrained, filter_fn=timm_vit_filter, **args)
