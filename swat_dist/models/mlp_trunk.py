"""The trunk SWAT Mixer and SWAT ResMLP share: tokenizer -> blocks -> norm -> mean over tokens -> head.

Also their init (SWAT_SPEC 3.8), their checkpoint filter, and their timm build helper.
"""

from collections.abc import Callable
from typing import Any

import torch
from timm.layers import lecun_normal_, to_2tuple
from timm.models import register_notrace_function
from timm.models._features import feature_take_indices
from timm.models._manipulate import named_apply
from torch import Tensor, nn

from ._common import build
from ._head import TokenClassifier, check_global_pool
from .layers import (
    PatchTokenizer,
    StructureAwareTokenizer,
    check_input_size,
    grid_map,
)


@register_notrace_function  # fx: one graph node that checks the real input size, not a branch on a traced one
def fixed_size_input(x: Tensor, img_size: tuple[int, int], patch_size: int, num_tokens: int) -> Tensor:
    """``x`` itself, once its (H, W) is checked against the size the N-sized token mixing was built for."""
    height, width = x.shape[-2], x.shape[-1]
    check_input_size(height, width, patch_size, f"patch size {patch_size}")
    if height != img_size[0] or width != img_size[1]:
        raise ValueError(
            f"input {height}x{width} does not match img_size {img_size[0]}x{img_size[1]}: token mixing "
            f"is built for exactly N={num_tokens} tokens; build the model with img_size=({height}, {width})"
        )
    return x  # returned, so fx keeps the node (a call whose result nobody uses is dead code to fx)


torch.fx.wrap("fixed_size_input")  # fx.wrap patches this module's globals; timm's tracer reads the register


# What a block factory gets from the trunk: (seq_len N, token grid (Hg, Wg), alpha, drop_path rate).
BlockFn = Callable[[int, tuple[int, int], int, float], nn.Module]


def init_weights(module: nn.Module, name: str) -> None:
    """SWAT_SPEC 3.8 for Mixer/ResMLP: xavier Linear (tiny bias in MLPs), zero head, lecun-normal convs.

    Affine (1/0) and LayerScale (``init_values``) are set by their own constructors.
    """
    if isinstance(module, nn.Linear):
        if name.startswith("head"):
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)
            return
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.normal_(module.bias, std=1e-6) if "mlp" in name else nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        lecun_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# The first token-mixing weight of a Mixer / ResMLP block (ours or timm's); its dim 1 is the token count N.
_TOKEN_WEIGHTS = ("blocks.0.mlp_tokens.fc1.weight", "blocks.0.linear_tokens.weight")


def checkpoint_filter_fn(state_dict: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """Pass a checkpoint through, refusing one made for another token count (token mixing is N-sized)."""
    state_dict = state_dict.get("model", state_dict.get("state_dict", state_dict))
    own = model.state_dict()
    for key in _TOKEN_WEIGHTS:
        if key in state_dict and key in own and state_dict[key].shape[1] != own[key].shape[1]:
            raise ValueError(
                f"checkpoint was trained with {state_dict[key].shape[1]} tokens but this model has "
                f"{own[key].shape[1]}: token-mixing weights do not transfer across input sizes"
            )
    return state_dict


class MlpMixerTrunk(TokenClassifier):
    """Tokenizer -> blocks -> norm -> mean over tokens -> head; what SWAT Mixer and SWAT ResMLP share.

    Subclasses pass ``make_block`` (the family's block) and ``norm_layer``. ``swat_tokens=False`` swaps the
    structure-aware tokenizer for a p x p patchify (the "mixing only" ablation). N is fixed by ``img_size``;
    see the module docstring.
    """

    def __init__(
        self,
        make_block: BlockFn,
        norm_layer: Callable[[int], nn.Module],
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        patch_size: int = 16,
        embed_dim: int = 512,
        depth: int = 8,
        stem_dim: int = 128,
        alpha: int | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        swat_tokens: bool = True,
    ) -> None:
        super().__init__()
        self.img_size = to_2tuple(img_size)
        check_input_size(self.img_size[0], self.img_size[1], patch_size, f"img_size with patch size {patch_size}")
        # The stem's first conv has stride 2; a coarser alpha leaves the rest to a k=s strided conv2.
        self.alpha = alpha or patch_size // 2
        conv2_stride = patch_size // (2 * self.alpha)
        if 2 * self.alpha * conv2_stride != patch_size:
            raise ValueError(f"patch_size {patch_size} must equal 2 * alpha * an integer (alpha = {self.alpha})")
        self.patch_size = patch_size
        self.grid = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        self.num_tokens = self.grid[0] * self.grid[1]
        self.num_classes, self.global_pool = num_classes, check_global_pool(global_pool)
        self.embed_dim = self.num_features = self.head_hidden_size = embed_dim
        self.tokenizer: nn.Module
        if swat_tokens:
            self.tokenizer = StructureAwareTokenizer(
                embed_dim, self.alpha, stem_dim, conv2=(conv2_stride, conv2_stride), in_chans=in_chans
            )
        else:
            self.tokenizer = PatchTokenizer(embed_dim, patch_size, in_chans=in_chans)
        # Same DropPath rate in every block, as timm's Mixer and ResMLP do (no ramp).
        self.blocks = nn.Sequential(
            *[make_block(self.num_tokens, self.grid, self.alpha, drop_path_rate) for _ in range(depth)]
        )
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f"blocks.{i}") for i in range(depth)]
        self.norm = norm_layer(embed_dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes, global_pool)
        named_apply(init_weights, self)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            self.global_pool = check_global_pool(global_pool)
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:  # a fresh head starts at zero like the constructed one (SWAT_SPEC 3.8)
            init_weights(self.head, "head")

    def no_weight_decay(self) -> set[str]:
        return set()

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Layer-decay groups: tokenizer, one group per block, final norm with the last."""
        return dict(stem=r"^tokenizer", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, in_chans, H, W) -> (B, N, C) after the final norm."""
        x = fixed_size_input(x, self.img_size, self.patch_size, self.num_tokens)
        x_BNC, _ = self.tokenizer(x)
        return self.norm(self.blocks(x_BNC))

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Outputs of selected blocks (timm semantics: int = last n, list = those indices, None = all).

        NCHW maps are (B, C, Hg, Wg) over the token grid; NLC keeps (B, N, C).
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        x = fixed_size_input(x, self.img_size, self.patch_size, self.num_tokens)
        x_BNC, grid = self.tokenizer(x)
        blocks = self.blocks[: max_index + 1] if stop_early else self.blocks
        intermediates = []
        for i, block in enumerate(blocks):
            x_BNC = block(x_BNC)
            if i in take_indices:
                y = self.norm(x_BNC) if norm else x_BNC
                intermediates.append(grid_map(y, grid).contiguous() if output_fmt == "NCHW" else y)
        if intermediates_only:
            return intermediates
        return self.norm(x_BNC), intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop blocks after the last one ``indices`` needs (and the norm / head if asked)."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: max_index + 1]
        self.feature_info = self.feature_info[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices


def build_mlp_model(
    model_cls: Callable[..., nn.Module],
    variant: str,
    pretrained: bool,
    model_args: dict[str, Any],
    kwargs: dict[str, Any],
) -> Any:
    """``_common.build`` with this module's checkpoint filter; user ``kwargs`` override ``model_args``."""
    return build(model_cls, variant, pretrained, filter_fn=checkpoint_filter_fn, **dict(model_args, **kwargs))
