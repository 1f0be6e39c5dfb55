"""SWAT Swin (SWAT_SPEC 2.2 and 3.5): structure-aware stem, ConvWindowAttention, conv MLPs, structure merging.

Any input whose sides are multiples of 32 (patch 4 x 2^3 merges) works: grids come from the input and
windows clamp or pad to them (see :mod:`.swin_blocks`). Which stages have shifted blocks is part of the
architecture (``shift_stages``): the registered models pin it, so ``img_size`` never changes their weights.

Within-token geometry: the sub-token map stays at half the input size (112 x 112 at 224 px) through all
stages; stage s (from 0) has alpha = 2^(s+1) and c = C_s / alpha^2 segments, i.e. (c, h, w) = (24, 2, 2),
(12, 4, 4), (6, 8, 8), (3, 16, 16) for Swin-T.
"""

from typing import Any

import torch
from timm.layers import to_2tuple, trunc_normal_
from timm.models import generate_default_cfgs, register_model, register_notrace_function
from timm.models._features import feature_take_indices
from timm.models.swin_transformer import SwinTransformer
from timm.models.swin_transformer import checkpoint_filter_fn as timm_swin_filter
from torch import Tensor, nn

from ._common import build, swat_cfg
from ._head import TokenClassifier, check_global_pool
from .layers import PatchTokenizer, StructureAwareTokenizer, check_input_size, grid_map
from .swin_blocks import PatchMerging, StructureMerging, SwinStage

PATCH = 4  # stem stride 2 x alpha 2


@register_notrace_function  # fx: one graph node that checks the real input size, not a branch on a traced one
def checked_input(x: Tensor, multiple: int, what: str) -> Tensor:
    """``x`` itself, once its sides are checked to be multiples of ``multiple``."""
    check_input_size(x.shape[-2], x.shape[-1], multiple, what)
    return x  # returned, so fx keeps the node (a call whose result nobody uses is dead code to fx)


torch.fx.wrap("checked_input")


class SwatSwin(TokenClassifier):
    """Swin with structure-aware tokenization (``swat_tokens``) and mixing (``swat_mixing``).

    Both on is SWAT; either off gives the paper's ablations (baseline patchify + LN; baseline Swin blocks and
    2x2-concat merging). Per-stage kernels: ``attn_kernels`` (conv over the within-token grid in W-MSA
    blocks), ``mlp_kernels`` (depthwise conv over the token grid), ``merge_kernels`` (conv on the sub-token map).

    ``shift_stages``: which stages alternate W-MSA / SW-MSA. None applies Swin's rule at ``img_size``: a
    stage whose grid fits in one window has no shifted block (stage 4 of Swin-T at 224 px). In SWAT only
    non-shifted blocks have ConvWindowAttention, so this choice fixes the parameter set.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int | tuple[int, int] = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        stem_dim: int = 128,
        attn_kernels: tuple[int, ...] = (1, 1, 3, 5),
        mlp_kernels: tuple[int, ...] = (5, 5, 5, 3),
        merge_kernels: tuple[int, ...] = (3, 5, 9),
        shift_stages: tuple[bool, ...] | None = None,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        swat_tokens: bool = True,
        swat_mixing: bool = True,
    ) -> None:
        super().__init__()
        stages = len(depths)
        if not len(num_heads) == len(attn_kernels) == len(mlp_kernels) == len(merge_kernels) + 1 == stages:
            raise ValueError("num_heads, attn_kernels, mlp_kernels need one entry per stage, merge_kernels one less")
        self.num_classes = num_classes
        self.global_pool = check_global_pool(global_pool)
        self.size_multiple = PATCH * 2 ** (stages - 1)
        self.size_constraint = f"Swin (patch {PATCH} x 2^{stages - 1} patch merges)"
        img_hw: tuple[int, int] = to_2tuple(img_size)
        check_input_size(img_hw[0], img_hw[1], self.size_multiple, self.size_constraint)
        window = to_2tuple(window_size)
        if shift_stages is None:
            grids = [(img_hw[0] // (PATCH * 2**s), img_hw[1] // (PATCH * 2**s)) for s in range(stages)]
            shift_stages = tuple(g[0] > window[0] or g[1] > window[1] for g in grids)
        if len(shift_stages) != stages:
            raise ValueError(f"shift_stages needs one entry per stage ({stages}), got {shift_stages}")
        dims = [embed_dim * 2**s for s in range(stages)]
        self.num_features = self.head_hidden_size = dims[-1]
        # forward_features gives the last stage's (B, H, W, C) map, as timm's Swin (its cfg's pool_size)
        self.output_fmt = "NHWC"
        self.pool_dims = [1, 2]
        if swat_tokens:
            self.tokenizer: nn.Module = StructureAwareTokenizer(
                embed_dim, 2, stem_dim, conv1=(2, 2, 0), in_chans=in_chans, stem_norm=True, token_norm=True
            )
        else:
            self.tokenizer = PatchTokenizer(embed_dim, PATCH, in_chans, token_norm=True)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # cpu: works under meta init
        layers = []
        for s in range(stages):
            alpha = 2 ** (s + 1)  # within-token side: doubles at each structure merge
            downsample: nn.Module | None = None
            if s > 0:
                prev = dims[s - 1]
                downsample = (
                    StructureMerging(prev, alpha // 2, merge_kernels[s - 1]) if swat_mixing else PatchMerging(prev)
                )
            start = sum(depths[:s])
            layers.append(
                SwinStage(
                    dims[s],
                    depths[s],
                    num_heads[s],
                    window,
                    shift_stages[s],
                    downsample,
                    rates[start : start + depths[s]],
                    alpha=alpha if swat_mixing else None,
                    attn_kernel=attn_kernels[s],
                    mlp_kernel=mlp_kernels[s],
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    proj_drop=proj_drop_rate,
                    attn_drop=attn_drop_rate,
                )
            )
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(self.num_features)
        self.head_drop = nn.Dropout(drop_rate)
        self.head: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = [dict(num_chs=dims[s], reduction=PATCH * 2**s, module=f"layers.{s}") for s in range(stages)]
        self.apply(_init_weights)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        # The official recipe (timm 0.4.13) decays everything 2-D, relative-position tables included (SWAT_SPEC 6.1).
        return set()

    @torch.jit.ignore
    def no_weight_decay_keywords(self) -> set[str]:
        return {"relative_position_bias_table"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise lr decay: the stem, then stages (coarse) or merges and blocks."""
        blocks: Any = r"^layers\.(\d+)"
        if not coarse:
            blocks = [
                (r"^layers\.(\d+)\.downsample", (0,)),
                (r"^layers\.(\d+)\.blocks\.(\d+)", None),
                (r"^norm", (99999,)),
            ]
        return dict(stem=r"^tokenizer", blocks=blocks)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = check_global_pool(global_pool)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _tokens(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        # Checked here, before the stem, so a bad size fails with the whole model's constraint.
        return self.tokenizer(checked_input(x, self.size_multiple, self.size_constraint))

    def _final(self, x_BNC: Tensor, grid: tuple[int, int]) -> Tensor:
        """The final norm, as the (B, H, W, C) map of the last stage's grid."""
        B, _, C = x_BNC.shape
        return self.norm(x_BNC).reshape(B, grid[0], grid[1], C)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, H/r, W/r, num_features) after the final norm, r the last stage's reduction."""
        x_BNC, grid = self._tokens(x)
        for stage in self.layers:
            x_BNC, grid = stage(x_BNC, grid)
        return self._final(x_BNC, grid)

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Per-stage maps (B, C_s, H/r_s, W/r_s) (timm's forward_intermediates contract; ``norm`` applies the
        final norm to the last stage only, as timm's Swin does)."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.layers), indices)
        x_BNC, grid = self._tokens(x)
        last = len(self.layers) - 1
        stages = self.layers[: max_index + 1] if stop_early or intermediates_only else self.layers
        intermediates = []
        for i, stage in enumerate(stages):
            x_BNC, grid = stage(x_BNC, grid)
            if i in take:
                y = self.norm(x_BNC) if norm and i == last else x_BNC
                intermediates.append(grid_map(y, grid).contiguous() if output_fmt == "NCHW" else y)
        if intermediates_only:
            return intermediates
        return self._final(x_BNC, grid), intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        take, max_index = feature_take_indices(len(self.layers), indices)
        self.layers = self.layers[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()  # type: ignore[assignment]
        if prune_head:
            self.reset_classifier(0, "")
        return take


def _init_weights(m: nn.Module) -> None:
    # SWAT_SPEC 3.8 (ViT/Swin): Linear trunc-normal(.02) including the head, LayerNorm 1/0, convs keep
    # PyTorch's default; relative-position tables are trunc-normal(.02) where they are built.
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def checkpoint_filter_fn(state_dict: dict[str, Any], model: SwatSwin) -> dict[str, Tensor]:
    """Weights do not depend on the input size (relative-position tables depend on the window only), so this
    only unwraps trainer checkpoints and drops size-derived buffers that other code may have saved."""
    state_dict = state_dict.get("model", state_dict.get("state_dict", state_dict))
    return {
        k.removeprefix("module."): v
        for k, v in state_dict.items()
        if not k.endswith(("relative_position_index", "attn_mask"))
    }


def _stages(kwargs: dict[str, Any]) -> tuple[int, ...]:
    """features_only default: every stage (timm's (0..4) assumes 5 stages; ours have len(depths))."""
    return tuple(range(len(kwargs["depths"])))


def _create(variant: str, pretrained: bool, **kwargs: Any) -> SwatSwin:
    return build(SwatSwin, variant, pretrained, checkpoint_filter_fn, _stages(kwargs), **kwargs)


default_cfgs = generate_default_cfgs(
    {
        # pool_size: the (H, W) of forward_features' map at the cfg's input size (stride 32, or 16 for micro)
        "swat_swin_tiny_patch4_window7_224": swat_cfg(pool_size=(7, 7)),
        "swat_swin_small_patch4_window7_224": swat_cfg(pool_size=(7, 7)),
        "swat_swin_micro_patch4_window4_32": swat_cfg(img_size=32, crop_pct=1.0, pool_size=(2, 2)),
        "swin_micro_patch4_window4_32": swat_cfg(
            img_size=32, crop_pct=1.0, pool_size=(2, 2), first_conv="patch_embed.proj", classifier="head.fc"
        ),
    }
)


# Swin's rule at the design size (224 px: grids 56, 28, 14 > 7 = 7), pinned for other img_size values.
_SHIFT_224 = (True, True, True, False)


@register_model
def swat_swin_tiny_patch4_window7_224(pretrained: bool = False, **kwargs: Any) -> SwatSwin:
    """SWAT Swin-T: C 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24), window 7 (27,110,704 params)."""
    args = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, shift_stages=_SHIFT_224)
    return _create("swat_swin_tiny_patch4_window7_224", pretrained, **dict(args, **kwargs))


@register_model
def swat_swin_small_patch4_window7_224(pretrained: bool = False, **kwargs: Any) -> SwatSwin:
    """SWAT Swin-S: C 96, depths (2, 2, 18, 2), heads (3, 6, 12, 24), window 7 (48,915,760 params)."""
    args = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window_size=7, shift_stages=_SHIFT_224)
    return _create("swat_swin_small_patch4_window7_224", pretrained, **dict(args, **kwargs))


# CPU-sized pair for 32 px images. Three stages (strides 4, 8, 16; inputs multiples of 16): a fourth would
# run on a 1x1 grid, where one-token attention is the identity and its position bias gets no gradient.
# Grids 8, 4, 2 with window 4, so only stage 1 shifts. C 32 keeps c = C / alpha^2 = 8, 4, 2 segments
# (halvable at each merge); heads keep Swin's head_dim 32.
_MICRO = dict(img_size=32, embed_dim=32, depths=(2, 2, 4), num_heads=(1, 2, 4), window_size=4)


@register_model
def swat_swin_micro_patch4_window4_32(pretrained: bool = False, **kwargs: Any) -> SwatSwin:
    """SWAT Swin-micro for 32 px images: C 32, depths (2, 2, 4), window 4, 32-channel stem, 3x3 depthwise."""
    args = dict(
        _MICRO,
        stem_dim=32,
        attn_kernels=(1, 1, 3),
        mlp_kernels=(3, 3, 3),
        merge_kernels=(3, 5),
        shift_stages=(True, False, False),
    )
    return _create("swat_swin_micro_patch4_window4_32", pretrained, **dict(args, **kwargs))


@register_model
def swin_micro_patch4_window4_32(pretrained: bool = False, **kwargs: Any) -> SwinTransformer:
    """Baseline for swat_swin_micro_patch4_window4_32: timm's own SwinTransformer at the same widths and depths."""
    args: dict[str, Any] = dict(_MICRO, patch_size=4)
    args.update(kwargs)
    return build(SwinTransformer, "swin_micro_patch4_window4_32", pretrained, timm_swin_filter, _stages(args), **args)
