"""Tokenizers: SWAT's structure-aware tokenizer and the baseline patchify used by ablations.

Both map images (B, 3, H, W) to tokens (B, N, C) and return the token grid (Hg, Wg), so every model
family derives its grid from the input instead of assuming 224 px.
"""

import torch
from timm.layers import trunc_normal_
from timm.models import register_notrace_function
from torch import Tensor, nn

from .explicit import explicit_ops
from .layout import tokens_from_map


def check_input_size(height: int, width: int, multiple: int, what: str) -> None:
    """Fail before any compute when an input side is not a multiple of what the model needs."""
    if height % multiple != 0 or width % multiple != 0:
        raise ValueError(f"input {height}x{width} is not valid: {what} needs each side to be a multiple of {multiple}")


@torch.fx.wrap  # fx: one graph node that checks the real input size, not a branch on a traced one
@register_notrace_function  # (timm's tracer reads this list; other modules calling it also fx.wrap the name)
def input_grid(x: Tensor, multiple: int, what: str) -> tuple[int, int]:
    """The (H/multiple, W/multiple) grid of image ``x`` (B, C, H, W), after :func:`check_input_size`."""
    height, width = x.shape[-2], x.shape[-1]
    check_input_size(height, width, multiple, what)
    return height // multiple, width // multiple


def _tiled(tile: Tensor, y: Tensor) -> Tensor:
    """``tile`` (1, m, th, tw) repeated over the (H, W) of map ``y``: the official form's addend."""
    return tile.repeat(1, 1, y.shape[2] // tile.shape[2], y.shape[3] // tile.shape[3])


class _AddTiled(torch.autograd.Function):
    """``y += tile`` repeated over y's (H, W), with tile's gradient reduced in y's own memory layout.

    Autograd's broadcast backward sums the batch into an NCHW-strided result, 20x slower than into
    the gradient's channels-last layout on CPU (112 vs 5.5 ms for (16, 128, 112, 112)).
    """

    @staticmethod
    def forward(ctx, y: Tensor, tile: Tensor) -> Tensor:
        ctx.tile = (tile.shape[2], tile.shape[3])
        ctx.mark_dirty(y)  # in place: y is conv1's fresh output, which its backward does not need
        return y.add_(_tiled(tile, y))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        _, m, height, width = grad.shape
        fmt = torch.channels_last if grad.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        per_position = torch.empty((1, m, height, width), dtype=grad.dtype, device=grad.device, memory_format=fmt)
        torch.sum(grad, 0, keepdim=True, out=per_position)  # the batch: one pass, output in grad's layout
        ti, tj = ctx.tile  # the tiles: 1/B of the data
        return grad, per_position.view(1, m, height // ti, ti, width // tj, tj).sum((2, 4))


@torch.fx.wrap
@register_notrace_function
def add_tiled_(y: Tensor, tile: Tensor) -> Tensor:
    """``y += tile.repeat(1, 1, H // th, W // tw)`` in place (y: (B, m, H, W), tile: (1, m, th, tw)).

    In place: 37 ms less per step at batch 16 than a fresh (16, 128, 112, 112) output (measured A/B).
    """
    # Plain ops for TorchScript (a scripted fx graph calls this too), jit.trace (fvcore) and compile/export.
    if not torch.jit.is_scripting():  # noqa: SIM102 (nested: TorchScript prunes only a bare is_scripting())
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            return _add_tiled_autograd(y, tile)
    return y + _tiled(tile, y)


@torch.jit.unused
def _add_tiled_autograd(y: Tensor, tile: Tensor) -> Tensor:
    out: Tensor = _AddTiled.apply(y, tile)
    return out


class StructureAwareTokenizer(nn.Module):
    """Tokenize at the sub-token stride, then regroup each alpha x alpha block into one token (SWAT_SPEC 2).

    conv1 (3->m, stride 2) [+ tiled within-patch position embedding P] -> GELU [-> LN(m)]
    -> conv2 (m->c) -> regroup to (B, N, c*alpha*alpha) in (c, h, w) order [-> LN(C)].

    The token count and width equal those of a p x p patchify with p = patch_size, so the cost of
    every later block is unchanged; what changes is that channels keep the patch's layout.
    """

    __constants__ = ["has_stem_norm"]  # TorchScript compiles only the branch this flag takes

    def __init__(
        self,
        embed_dim: int,
        alpha: int,
        stem_dim: int = 128,
        conv1: tuple[int, int, int] = (2, 2, 0),
        conv2: tuple[int, int] = (1, 1),
        in_chans: int = 3,
        patch_pos_embed: bool = False,
        stem_norm: bool = False,
        token_norm: bool = False,
    ) -> None:
        super().__init__()
        if embed_dim % (alpha * alpha):
            raise ValueError(f"embed_dim {embed_dim} must be divisible by alpha^2 = {alpha * alpha}")
        k1, s1, p1 = conv1
        k2, s2 = conv2
        self.alpha = alpha
        self.segments = embed_dim // (alpha * alpha)
        self.stem_stride = s1
        self.patch_size = s1 * s2 * alpha
        self.conv1 = nn.Conv2d(in_chans, stem_dim, k1, stride=s1, padding=p1)
        # P: one learnable code per position inside a patch, shared by every patch (ViT only).
        tile = self.patch_size // s1
        self.patch_pos_embed = nn.Parameter(torch.zeros(1, stem_dim, tile, tile)) if patch_pos_embed else None
        if self.patch_pos_embed is not None:
            trunc_normal_(self.patch_pos_embed, std=0.02)
        self.act = nn.GELU()
        self.has_stem_norm = stem_norm
        self.stem_norm = nn.LayerNorm(stem_dim) if stem_norm else nn.Identity()
        self.conv2 = nn.Conv2d(stem_dim, self.segments, k2, stride=s2)
        self.norm = nn.LayerNorm(embed_dim) if token_norm else nn.Identity()

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        grid = input_grid(x, self.patch_size, "the structure-aware tokenizer")
        if not torch.jit.is_scripting():  # noqa: SIM102 (nested: TorchScript prunes only a bare is_scripting())
            if explicit_ops():
                return self.explicit(x, grid)
        # Channels-last from the first conv on: the stem's maps are 8-21x the token tensor (m channels at
        # H/2), and oneDNN runs the 1x1 conv2 and the GELU's backward 2.8-4x faster on them in channels-last
        # (issue 12); cuDNN prefers NHWC too. The copy of the 3-channel image costs < 1 ms at batch 16.
        y = self.conv1(x.contiguous(memory_format=torch.channels_last))
        if self.patch_pos_embed is not None:
            y = add_tiled_(y, self.patch_pos_embed)
        return self._tokens(y), grid

    @torch.jit.unused
    def explicit(self, x: Tensor, grid: tuple[int, int]) -> tuple[Tensor, tuple[int, int]]:
        """The official op order and memory format (NCHW, the tiled embedding as a broadcast add): the
        form tests/models/test_golden.py pins bit for bit."""
        y = self.conv1(x)
        if self.patch_pos_embed is not None:
            y = y + _tiled(self.patch_pos_embed, y)
        return self._tokens(y), grid

    def _tokens(self, y: Tensor) -> Tensor:
        y = self.act(y)
        if self.has_stem_norm:
            y = self.stem_norm(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        y = self.conv2(y)
        return self.norm(tokens_from_map(y, self.alpha))


class PatchTokenizer(nn.Module):
    """Baseline p x p patchify (one strided conv), for the 'structure-aware mixing only' ablation."""

    def __init__(self, embed_dim: int, patch_size: int, in_chans: int = 3, token_norm: bool = False) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if token_norm else nn.Identity()

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        grid = input_grid(x, self.patch_size, "the patch tokenizer")
        y = self.proj(x)
        return self.norm(y.flatten(2).transpose(1, 2)), grid
