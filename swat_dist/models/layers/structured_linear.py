"""StructuredLinear: the within-token half of structure-aware mixing for attention (SWAT_SPEC 3.2, 3.5).

SWAT's attention projections average two paths: the usual Linear over the whole token, and a 2D conv
over each token's (c, alpha, alpha) image ("token mixing with channel structure"). The conv does not
replace the Linear; both are kept and averaged 50/50. Costs c_in*c_out*k^2 extra weights, which is
tiny next to the Linear's C_in*C_out.

Output channel order of the conv path is (c_out, alpha, alpha) flattened, so for a qkv projection the
output splits into (3, C) exactly as the Linear's does, and into heads the usual way afterwards.
"""

from __future__ import annotations

from torch import Tensor, nn

from .structure import token_images, tokens_from_images


class StructuredLinear(nn.Module):
    """(B, N, in_dim) -> (B, N, out_dim) as 0.5 * (Linear(x) + Conv2d over each token's (c, alpha, alpha) view)."""

    def __init__(
        self, in_dim: int, out_dim: int, alpha: int, kernel_size: int, bias: bool = True, conv_bias: bool = True
    ) -> None:
        super().__init__()
        area = alpha * alpha
        if in_dim % area or out_dim % area:
            raise ValueError(f"dims {in_dim}->{out_dim} must be divisible by alpha^2 = {area}")
        self.alpha = alpha
        self.linear = nn.Linear(in_dim, out_dim, bias=bias)
        self.conv = nn.Conv2d(in_dim // area, out_dim // area, kernel_size, padding=kernel_size // 2, bias=conv_bias)

    def forward(self, x_BNC: Tensor) -> Tensor:
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
