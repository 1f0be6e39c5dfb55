"""StructuredLinear: the within-token half of structure-aware mixing for attention (SWAT_SPEC 3.2, 3.5).

SWAT's attention projections average two paths: the usual Linear over the whole token, and a 2D conv
over each token's (c, alpha, alpha) image ("token mixing with channel structure"). The conv does not
replace the Linear; both are kept and averaged 50/50. Costs c_in*c_out*k^2 extra weights, which is
tiny next to the Linear's C_in*C_out.

Output channel order of the conv path is (c_out, alpha, alpha) flattened, so for a qkv projection the
output splits into (3, C) exactly as the Linear's does, and into heads the usual way afterwards.

Both paths are linear in each token, so they run as ONE Linear (:meth:`StructuredLinear.folded`): weight
0.5 * (W_linear + the conv written as a dense (C_out, C_in) matrix), built from the conv weight at every
forward by a gather. Same parameters and checkpoints, one GEMM instead of a GEMM plus a tiny-channel conv
over B*N images (which MKL-DNN and cuDNN both run far below their GEMM rate).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .explicit import explicit_ops
from .structure import token_images, tokens_from_images


def conv_fold_index(alpha: int, kernel_size: int) -> Tensor:
    """(a^2, a^2) index of the kernel tap linking output position (u, v) to input position (u', v').

    Entry ``(u*a + v, u'*a + v')`` is ``dy*k + dx`` with ``dy = u' - u + k//2`` (likewise dx) where that
    tap exists, else ``k*k``: a slot the fold fills with zero (the conv's zero padding).
    """
    pos = torch.arange(alpha)
    d = pos[None, :] - pos[:, None] + kernel_size // 2  # (out, in) offset along one axis
    inside = (d >= 0) & (d < kernel_size)
    dy, dx = d[:, None, :, None], d[None, :, None, :]  # (u, v, u', v') broadcast
    tap = (dy * kernel_size + dx).masked_fill(~(inside[:, None, :, None] & inside[None, :, None, :]), kernel_size**2)
    return tap.reshape(alpha * alpha, alpha * alpha)


def _fold_bias(lin: Tensor | None, conv: Tensor | None, area: int) -> Tensor | None:
    if conv is None:
        return None if lin is None else 0.5 * lin
    conv_b = conv.repeat_interleave(area)  # one bias per output segment, shared by its a^2 positions
    return 0.5 * conv_b if lin is None else 0.5 * (lin + conv_b)


class StructuredLinear(nn.Module):
    """(B, N, in_dim) -> (B, N, out_dim) as 0.5 * (Linear(x) + Conv2d over each token's (c, alpha, alpha) view)."""

    def __init__(
        self, in_dim: int, out_dim: int, alpha: int, kernel_size: int, bias: bool = True, conv_bias: bool = True
    ) -> None:
        super().__init__()
        area = alpha * alpha
        if in_dim % area or out_dim % area:
            raise ValueError(f"dims {in_dim}->{out_dim} must be divisible by alpha^2 = {area}")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size {kernel_size} must be odd (a 'same' conv over the alpha x alpha image)")
        self.alpha = alpha
        self.linear = nn.Linear(in_dim, out_dim, bias=bias)
        self.conv = nn.Conv2d(in_dim // area, out_dim // area, kernel_size, padding=kernel_size // 2, bias=conv_bias)
        # Derived from alpha and k alone: kept out of checkpoints (a^4 int64s, 32 KiB at alpha 8).
        self.register_buffer("fold_index", conv_fold_index(alpha, kernel_size), persistent=False)

    def folded(self) -> tuple[Tensor, Tensor | None]:
        """The one Linear's (weight, bias). Costs ~4 passes over a (C_out, C_in) matrix per forward (gather,
        permute, add; a scatter-add backward): < 0.1% of the GEMM at DeiT-S batch 16. A gather, not a conv of
        an identity basis, so it is exact under TF32 and bf16 too (each dense entry is one conv weight)."""
        w = self.conv.weight  # (co, ci, k, k)
        taps = F.pad(w.flatten(2), (0, 1))  # (co, ci, k*k + 1): the last tap is the padding's zero
        index: Tensor = self.fold_index  # type: ignore[assignment]
        dense = taps[:, :, index]  # (co, ci, out pos, in pos)
        dense = dense.permute(0, 2, 1, 3).reshape(self.linear.out_features, self.linear.in_features)
        weight = 0.5 * (self.linear.weight + dense)
        return weight, _fold_bias(self.linear.bias, self.conv.bias, self.alpha * self.alpha)

    def forward(self, x_BNC: Tensor) -> Tensor:
        if not torch.jit.is_scripting():  # noqa: SIM102 (nested: TorchScript prunes only a bare is_scripting())
            if explicit_ops():
                return self.explicit(x_BNC)
        weight, bias = self.folded()
        return F.linear(x_BNC, weight, bias)

    @torch.jit.unused
    def explicit(self, x_BNC: Tensor) -> Tensor:
        """The official op structure (a Linear and a conv over B*N token images): what fvcore counts."""
        conv = tokens_from_images(self.conv(token_images(x_BNC, self.alpha)), x_BNC.shape[0])
        return 0.5 * (conv + self.linear(x_BNC))


def attention_projections(
    dim: int, alpha: int | None, kernel_size: int, qkv_bias: bool = True
) -> tuple[nn.Module, nn.Module]:
    """The qkv (dim -> 3 dim) and output (dim -> dim) projections of an attention layer.

    Plain Linears, or with ``alpha`` set SWAT's :class:`StructuredLinear` pair (SWAT_SPEC 3.2, 3.5): both
    convs carry a bias when ``qkv_bias`` does, as in the official ConvAttention; the output Linear always does.
    """
    if alpha is None:
        return nn.Linear(dim, 3 * dim, bias=qkv_bias), nn.Linear(dim, dim)
    qkv = StructuredLinear(dim, 3 * dim, alpha, kernel_size, bias=qkv_bias, conv_bias=qkv_bias)
    return qkv, StructuredLinear(dim, dim, alpha, kernel_size, bias=True, conv_bias=qkv_bias)
