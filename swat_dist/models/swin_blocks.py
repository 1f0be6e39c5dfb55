"""Swin blocks, stages and patch merging, each in a SWAT and a baseline flavour (SWAT_SPEC 3.5).

The SWAT and baseline blocks are the same code; what differs is the module plugged in:

* attention projections: :class:`StructuredLinear` (0.5 * (Linear + conv over each token's (c, alpha, alpha)
  image)) in SWAT's non-shifted (W-MSA) blocks, ``nn.Linear`` in shifted blocks and in the baseline;
* MLP: :class:`ConvMlpGeneral` over the full stage map (B, C, H, W) in every SWAT block, timm's ``Mlp`` otherwise;
* merging: :class:`StructureMerging` (LN + conv on the sub-token map, regroup with alpha doubled) or Swin's
  :class:`PatchMerging`.

Window geometry follows the input grid: a side that fits in one window clamps the window to it and does
not shift (as Swin does at stage 4 for 224 px); a side that is not a multiple of the window is padded
bottom/right and cropped back (as Swin's segmentation backbone does), the shifted-window mask being built
for the padded size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models import register_notrace_function, register_notrace_module
from timm.models.swin_transformer import window_partition, window_reverse
from torch import Tensor, nn

from .layers import (
    ConvMlpGeneral,
    attention_projections,
    grid_map,
    map_from_tokens,
    tokens_from_grid,
    tokens_from_map,
)
from .layers.explicit import explicit_ops

Size = tuple[int, int]
MASKED = -100.0  # Swin's additive mask value: a masked pair keeps a softmax weight of ~exp(-100) = 4e-44


@register_notrace_function  # fx: computed on the real grid (one graph node), not branched on a traced one
def window_geometry(grid: Size, window: Size) -> tuple[Size, Size]:
    """The (window, shift) a stage uses on ``grid``: a side not larger than the window clamps it and gets no shift."""
    win = (min(window[0], grid[0]), min(window[1], grid[1]))
    shift = (window[0] // 2 if grid[0] > window[0] else 0, window[1] // 2 if grid[1] > window[1] else 0)
    return win, shift


def padded_size(grid: Size, window: Size) -> Size:
    """``grid`` rounded up to a multiple of ``window`` on each side."""
    return (-(-grid[0] // window[0]) * window[0], -(-grid[1] // window[1]) * window[1])


def relative_position_index(window: Size, table_window: Size, device: torch.device | None = None) -> Tensor:
    """(n, n) indices, n = wh*ww, into a relative-position table built for the (possibly larger) ``table_window``.

    The table has (2*Th-1)*(2*Tw-1) rows, one per offset; a clamped window uses the subset of offsets it
    can reach, so the bias weights do not depend on the input size.
    """
    rows, cols = torch.arange(window[0], device=device), torch.arange(window[1], device=device)
    coords = torch.stack(torch.meshgrid(rows, cols, indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, n, n) offsets between every pair of window positions
    return (rel[0] + table_window[0] - 1) * (2 * table_window[1] - 1) + rel[1] + table_window[1] - 1


def _regions(size: int, window: int, shift: int, device: torch.device) -> Tensor:
    """(size,) region of each row (or column): [0, size-window) 0, [size-window, size-shift) 1, the rest 2;
    all 0 without a shift."""
    idx = torch.arange(size, device=device)
    if shift == 0:
        return torch.zeros_like(idx)
    return (idx >= size - window).long() + (idx >= size - shift).long()


@register_notrace_function  # fx: built on the real geometry (one graph node); no autograd (integer labels)
def shifted_window_mask(padded: Size, window: Size, shift: Size, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(nW, n, n) additive mask for SW-MSA: ``MASKED`` between tokens that the cyclic shift brought together
    from different regions of the (padded) map, 0 elsewhere (all 0 without a shift)."""
    rows, cols = _regions(padded[0], window[0], shift[0], device), _regions(padded[1], window[1], shift[1], device)
    label_HW = (rows[:, None] * 3 + cols[None, :])[None, :, :, None]  # one label per (row, column) region pair
    label_Wn = window_partition(label_HW, window).flatten(1)  # (nW, n) region label of each window position
    differs = label_Wn[:, None, :] != label_Wn[:, :, None]
    return torch.zeros(differs.shape, device=device, dtype=dtype).masked_fill(differs, -100.0)  # MASKED: TorchScript
    # reads no module-level constants


# torch.fx.wrap patches this module's globals, so SwinStage's calls trace as single nodes under any tracer.
torch.fx.wrap("window_geometry")
torch.fx.wrap("shifted_window_mask")


class WindowAttention(nn.Module):
    """Multi-head self-attention inside (B*nW, n, C) windows, with Swin's relative position bias.

    ``alpha`` set: SWAT's ConvWindowAttention, whose qkv and proj are :class:`StructuredLinear` with a
    ``kernel_size`` conv over each token's (c, alpha, alpha) image; heads are split the usual way after the
    projection (C / heads dims each). Fused ``F.scaled_dot_product_attention`` with the position bias (and
    shift mask) as an additive float mask, as timm's Swin does; explicit matmuls in
    :func:`~.layers.explicit.explicit_mode`, so fvcore counts QK^T and AV.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: Size,
        alpha: int | None = None,
        kernel_size: int = 1,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.window = window
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window[0] - 1) * (2 * window[1] - 1), num_heads)
        )
        trunc_normal_(self.relative_position_bias_table, std=0.02)
        # Derived from the window alone, so kept out of checkpoints.
        self.register_buffer("relative_position_index", relative_position_index(window, window), persistent=False)
        self.qkv, self.proj = attention_projections(dim, alpha, kernel_size, qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)

    def position_bias(self, window: Size) -> Tensor:
        """(heads, n, n) relative position bias for a window of size ``window`` (<= the built window)."""
        index: Tensor = self.relative_position_index  # type: ignore[assignment]
        if window != self.window:
            index = relative_position_index(window, self.window, index.device)  # on device: no host copy
        n = window[0] * window[1]
        table: Tensor = self.relative_position_bias_table
        return table[index.flatten()].view(n, n, -1).permute(2, 0, 1)

    def forward(self, x_MnC: Tensor, window: Size, mask: Tensor | None = None) -> Tensor:
        M, n, C = x_MnC.shape
        qkv = self.qkv(x_MnC).reshape(M, n, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = self._attend(q, k, v, window, mask)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(M, n, C)))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, window: Size, mask: Tensor | None) -> Tensor:
        M, n = q.shape[0], q.shape[2]
        if not torch.jit.is_scripting():  # noqa: SIM102 (nested: TorchScript prunes only a bare is_scripting())
            if explicit_ops():
                attn = (q * self.scale) @ k.transpose(-2, -1) + self.position_bias(window)
                if mask is not None:
                    nW = mask.shape[0]
                    attn = attn.view(M // nW, nW, self.num_heads, n, n) + mask[None, :, None]
                return self.attn_drop(attn.view(M, self.num_heads, n, n).softmax(dim=-1)) @ v
        p = self.attn_drop.p if self.training else 0.0
        bias = self.attention_bias(window, mask, M).to(q.dtype)  # SDPA wants q's dtype (a no-op in bf16 runs)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p, scale=self.scale)

    def attention_bias(self, window: Size, mask: Tensor | None, windows: int) -> Tensor:
        """The additive float mask for SDPA: (heads, n, n) position bias, plus with a shift mask (nW, n, n)
        the sum expanded to (``windows``, heads, n, n). That copy is one attention matrix's worth of memory per
        SW-MSA block (what timm's fused Swin pays too): SDPA's 4D kernels cannot broadcast over the nW of
        B*nW windows, and a 5D call would fall back to the unfused math kernel."""
        bias = self.position_bias(window)
        if mask is None:
            return bias
        nW, n = mask.shape[0], mask.shape[1]
        both = mask[:, None] + bias[None]  # (nW, heads, n, n)
        return both.expand(windows // nW, nW, self.num_heads, n, n).reshape(windows, self.num_heads, n, n)


# fx: WindowAttention picks its position-bias index by comparing the window (traced) with the built one, so
# timm's tracer keeps it whole, one node run on real sizes (it still scripts; fx sees no attention internals).
register_notrace_module(WindowAttention)


class SwinBlock(nn.Module):
    """Pre-norm Swin block on (B, N, C) tokens: (shifted) window attention, then an MLP, each residual.

    ``alpha`` set (SWAT mixing): non-shifted blocks get ConvWindowAttention with ``attn_kernel``, and every
    block's MLP is ConvMlpGeneral with a depthwise ``mlp_kernel`` over the full stage map (not windowed).
    """

    __constants__ = ["shifted", "conv_mlp"]  # TorchScript compiles only the branches these flags take

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: Size,
        shifted: bool,
        alpha: int | None = None,
        attn_kernel: int = 1,
        mlp_kernel: int = 5,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.shifted = shifted
        self.norm1 = nn.LayerNorm(dim)
        attn_alpha = None if shifted else alpha  # SW-MSA keeps the standard attention in SWAT too
        self.attn = WindowAttention(dim, num_heads, window, attn_alpha, attn_kernel, qkv_bias, attn_drop, proj_drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.conv_mlp = alpha is not None  # ConvMlpGeneral runs on the (B, C, H, W) map, timm's Mlp on tokens
        self.mlp: nn.Module
        if alpha is None:
            self.mlp = Mlp(dim, hidden, drop=proj_drop)
        else:
            self.mlp = ConvMlpGeneral(dim, hidden, dim, kernel_size=mlp_kernel, drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _attention(self, x_BHWC: Tensor, window: Size, shift: Size, mask: Tensor | None) -> Tensor:
        _, H, W, C = x_BHWC.shape
        Hp, Wp = padded_size((H, W), window)
        x_BHWC = F.pad(x_BHWC, (0, 0, 0, Wp - W, 0, Hp - H))
        # Branch on the built flag, not on the shift's value (traced under fx): a shifted block whose grid fits
        # one window rolls by 0, an exact copy.
        if self.shifted:
            x_BHWC = torch.roll(x_BHWC, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        windows = window_partition(x_BHWC, window).view(-1, window[0] * window[1], C)
        windows = self.attn(windows, window, mask)
        x_BHWC = window_reverse(windows.view(-1, window[0], window[1], C), window, Hp, Wp)
        if self.shifted:
            x_BHWC = torch.roll(x_BHWC, shifts=(shift[0], shift[1]), dims=(1, 2))
        return x_BHWC[:, :H, :W, :]

    def forward(self, x_BNC: Tensor, grid: Size, window: Size, shift: Size, mask: Tensor | None) -> Tensor:
        """``window``/``shift``/``mask`` are the stage's geometry for ``grid``; this block shifts only if built so."""
        B, N, C = x_BNC.shape
        if not self.shifted:
            shift, mask = (0, 0), None
        y_BHWC = self._attention(self.norm1(x_BNC).view(B, grid[0], grid[1], C), window, shift, mask)
        x_BNC = x_BNC + self.drop_path1(y_BHWC.reshape(B, N, C))
        z = self.norm2(x_BNC)
        z = tokens_from_grid(self.mlp(grid_map(z, grid))) if self.conv_mlp else self.mlp(z)
        return x_BNC + self.drop_path2(z)


class StructureMerging(nn.Module):
    """SWAT merging: (B, H*W, C = c*a*a) -> (B, H/2*W/2, 2C = (c/2)*(2a)*(2a)).

    Un-flatten the tokens into the sub-token map (B, c, H*a, W*a), LayerNorm over c, conv c -> c/2 (no bias,
    same padding), regroup with alpha doubled. The sub-token map keeps its size (112 x 112 at 224 px): each
    token gets a 4x larger image with half the segments.
    """

    def __init__(self, dim: int, alpha: int, kernel_size: int) -> None:
        super().__init__()
        segments = dim // (alpha * alpha)
        if dim % (alpha * alpha) or segments % 2:
            raise ValueError(f"dim {dim} must be c*{alpha}^2 with an even number of segments c to merge")
        self.alpha = alpha
        self.norm = nn.LayerNorm(segments)
        self.reduction = nn.Conv2d(segments, segments // 2, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x_BNC: Tensor, grid: Size) -> tuple[Tensor, Size]:
        y_BcHW = map_from_tokens(x_BNC, grid, self.alpha)
        y_BcHW = self.norm(y_BcHW.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return tokens_from_map(self.reduction(y_BcHW), 2 * self.alpha), (grid[0] // 2, grid[1] // 2)


class PatchMerging(nn.Module):
    """Baseline Swin merging: concatenate each 2x2 block of tokens, LayerNorm(4C), Linear(4C -> 2C, no bias)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x_BNC: Tensor, grid: Size) -> tuple[Tensor, Size]:
        # Concatenation order of the Swin paper/timm: (0,0), (1,0), (0,1), (1,1) as (row, col) offsets,
        # i.e. (b, (i u j v), c) -> (b, (i j), (v u c)) as reshape/permute (TorchScript and fx take it).
        B, _, C = x_BNC.shape
        i, j = grid[0] // 2, grid[1] // 2
        x_BNC = x_BNC.reshape(B, i, 2, j, 2, C).permute(0, 1, 3, 4, 2, 5).reshape(B, i * j, 4 * C)
        return self.reduction(self.norm(x_BNC)), (grid[0] // 2, grid[1] // 2)


class SwinStage(nn.Module):
    """Optional merging, then ``depth`` blocks: W-MSA only, or alternating W-MSA / SW-MSA if ``shift``.

    At run time the window and shift follow the input grid (:func:`window_geometry`); a block built
    non-shifted never shifts, so its (SWAT: structured) weights keep their role at every resolution.
    """

    __constants__ = ["has_shifted"]  # TorchScript compiles only the branch this flag takes

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window: Size,
        shift: bool,
        downsample: nn.Module | None,
        drop_path: list[float],
        **block_kwargs,
    ) -> None:
        super().__init__()
        self.window = window
        self.downsample = downsample
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window, shifted=shift and j % 2 == 1, drop_path=drop_path[j], **block_kwargs)
            for j in range(depth)
        )
        self.has_shifted = shift and depth > 1

    def forward(self, x_BNC: Tensor, grid: Size) -> tuple[Tensor, Size]:
        if self.downsample is not None:
            x_BNC, grid = self.downsample(x_BNC, grid)
        window, shift = window_geometry(grid, self.window)
        # Built whenever the stage has shifted blocks, all zeros where the grid gives no shift (adding 0 is
        # exact): whether to build it cannot depend on the shift's value, which fx traces.
        mask: Tensor | None = None
        if self.has_shifted:
            mask = shifted_window_mask(padded_size(grid, window), window, shift, x_BNC.device, x_BNC.dtype)
        for blk in self.blocks:
            x_BNC = blk(x_BNC, grid, window, shift, mask)
        return x_BNC, grid
