"""DepthwiseConv2d: SWAT's k x k depthwise conv ("same" padding, stride 1), with a faster CPU backward.

Every SWAT family runs one per MLP (ConvMlpGeneral's ``fc3``) and ResMLP one more over each token's grid.
It is 2.5% of SWAT-DeiT-S's FLOPs, but on CPU oneDNN's depthwise backward ran at ~1/20 of its forward's
rate (batch 16, 1536 x 14 x 14, k 5: forward 2.8 ms, backward 57 ms, of which 45 ms the weight gradient)
and was 19% of the whole training step (docs/benchmarks.md, issue 12). Here:

* input gradient: the forward conv of the output gradient with the 180-degree-rotated kernel (3.4 ms);
* weight gradient, at training sizes: kh*kw multiply-reduce passes that torch.compile fuses into one
  pass over the input and the gradient (12.7 ms); for small maps, or where compiling fails, a forward
  depthwise conv over B*C groups with the output gradient as the kernel (25 ms, two layout copies).

Same parameters, state-dict keys and function as ``nn.Conv2d(c, c, k, padding=k // 2, groups=c)``; the
gradients agree within fp32 rounding (tests/models/test_depthwise.py). CPU eager training only: on CUDA
the native kernels (cuDNN's or ATen's depthwise ones) are kept, measured when a GPU is lent
(launch/gpu_check.sh); TorchScript, torch.jit.trace (fvcore), :func:`explicit_mode` and a
torch.compile'd model (``engine.compile``, which lowers the conv itself) see the plain conv.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from timm.models import register_notrace_function
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .explicit import explicit_ops


def _folded_weight_grad(x: Tensor, grad: Tensor, padding: tuple[int, int]) -> Tensor:
    """d loss / d weight of a depthwise conv, (C, 1, kh, kw), as one forward conv (eager, any size).

    Batch folded into the groups: input (1, B*C, H, W) in channels-last memory (a block copy of the
    usual channels-last activation), kernel the output gradient (B*C, 1, Ho, Wo) contiguous (a transpose).
    """
    B, C, H, W = x.shape
    folded_x = x.permute(2, 3, 0, 1).reshape(1, H, W, B * C).permute(0, 3, 1, 2)
    folded_g = grad.contiguous().view(B * C, 1, grad.shape[2], grad.shape[3])
    per_sample = F.conv2d(folded_x, folded_g, padding=padding, groups=B * C)  # (1, B*C, kh, kw)
    return per_sample.view(B, C, 1, per_sample.shape[-2], per_sample.shape[-1]).sum(0)


def _shifted_products(x: Tensor, grad: Tensor, padding: tuple[int, int]) -> Tensor:
    """The same gradient as kh*kw multiply-reduce passes over channels-last views: the source of
    :func:`_compiled_weight_grad`, where inductor fuses them into one pass over x and grad."""
    ph, pw = padding
    kh, kw = x.shape[2] + 2 * ph - grad.shape[2] + 1, x.shape[3] + 2 * pw - grad.shape[3] + 1
    x_pad = F.pad(x.permute(0, 2, 3, 1), (0, 0, pw, pw, ph, ph))  # (B, Hp, Wp, C)
    g = grad.permute(0, 2, 3, 1)
    ho, wo = g.shape[1], g.shape[2]
    taps = [(x_pad[:, i : i + ho, j : j + wo, :] * g).sum((0, 1, 2)) for i in range(kh) for j in range(kw)]
    return torch.stack(taps, 1).view(x.shape[1], 1, kh, kw)


# Compiled on first use (one dynamic-shape graph per padding; ~10 s, then inductor's on-disk cache) and
# used only from this many elements on, where a step is long enough to repay it: real training sizes
# (DeiT-S at batch 16: 4.8 M), never the tests' or the demo's micro models. Fused, it reads x and grad
# once: 12.7 ms against the fold's 25 ms (two layout copies and a 14 x 14-kernel conv) at DeiT-S batch 16.
COMPILE_MIN_ELEMENTS = 1 << 21
_COMPILED: dict[str, object] = {}  # "fn": the compiled function, or "failed": why it cannot be used
# The (input shape, padding) pairs whose compiled result was checked against the eager fold. Inductor has
# miscompiled this reduction: torch 2.14.1's AVX2 kernels at one thread read uninitialised memory (NaN or
# 1e33 gradients; ATEN_CPU_CAPABILITY=avx2 on any x86 CPU, or a CPU without AVX-512). One fold per new
# shape - a handful per run - finds such a kernel before its result is used.
_CHECKED: set[tuple[tuple[int, ...], tuple[int, int]]] = set()


def _give_up(reason: str) -> None:
    _COMPILED["failed"] = reason
    warnings.warn(
        f"depthwise conv: the compiled weight gradient is unavailable ({reason}); "
        "using the eager one (about 2x slower on this op)",
        stacklevel=3,
    )


def _compiled_weight_grad(x: Tensor, grad: Tensor, padding: tuple[int, int]) -> Tensor | None:
    """The fused gradient, or None where torch.compile is unavailable (no C++ compiler, say): reported once."""
    if "failed" in _COMPILED:
        return None
    try:
        if "fn" not in _COMPILED:
            _COMPILED["fn"] = torch.compile(_shifted_products, dynamic=True, fullgraph=True)
        out: Tensor = _COMPILED["fn"](x, grad, padding)  # type: ignore[operator]
    except Exception as exc:  # any backend failure: the eager fold computes the same gradient
        _give_up(f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}")
        return None
    key = (tuple(x.shape), padding)
    if key not in _CHECKED:
        eager = _folded_weight_grad(x, grad, padding)
        scale = float(eager.abs().amax())
        if math.isfinite(scale) and not torch.allclose(out, eager, rtol=1e-3, atol=1e-3 * scale):
            _give_up(f"its result at input {tuple(x.shape)} differs from the eager gradient's")
            return eager
        _CHECKED.add(key)
    return out


def _weight_grad(x: Tensor, grad: Tensor, padding: tuple[int, int]) -> Tensor:
    if x.numel() >= COMPILE_MIN_ELEMENTS:
        fused = _compiled_weight_grad(x, grad, padding)
        if fused is not None:
            return fused
    return _folded_weight_grad(x, grad, padding)


class _DepthwiseCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv2d(x, weight, bias, padding=padding, groups=weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b, _ = ctx.needs_input_grad
        grad_x = grad_w = grad_b = None
        if need_x:  # "same" padding, stride 1: the transposed conv is a conv with the rotated kernel
            grad_x = F.conv2d(grad, weight.flip((-2, -1)), padding=ctx.padding, groups=weight.shape[0])
        if need_w:
            grad_w = _weight_grad(x, grad, ctx.padding)
        if need_b:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


def _fast_backward_applies(x: Tensor, weight: Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and torch.is_grad_enabled()
        and (x.requires_grad or weight.requires_grad)
        and not explicit_ops()
        and not torch.jit.is_tracing()  # fvcore counts the plain conv
        and not torch.compiler.is_compiling()
    )


@torch.fx.wrap  # fx: one node, not a branch on a proxy's device
@register_notrace_function
def depthwise_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int]) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=padding, groups=C)``; on CPU under autograd with the fast backward."""
    if not torch.jit.is_scripting():  # noqa: SIM102 (nested: TorchScript prunes only a bare is_scripting())
        if _fast_backward_applies(x, weight):
            return _depthwise_autograd(x, weight, bias, padding)
    return F.conv2d(x, weight, bias, padding=padding, groups=weight.shape[0])


@torch.jit.unused
def _depthwise_autograd(x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int]) -> Tensor:
    out: Tensor = _DepthwiseCPU.apply(x, weight, bias, padding)
    return out


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels)``, backward as :func:`depthwise_conv2d`."""

    def __init__(self, channels: int, kernel_size: int, bias: bool = True) -> None:
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size {kernel_size} must be odd (a 'same' depthwise conv)")
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return depthwise_conv2d(x, self.weight, self.bias, (self.padding[0], self.padding[1]))
