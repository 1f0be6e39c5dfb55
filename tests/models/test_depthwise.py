"""DepthwiseConv2d: nn.Conv2d's function and gradients, with the CPU backward of issue 12.

The gradients are checked in float64 against ATen's own depthwise backward, where the two
summation orders agree to ~1e-13; the compiled weight gradient in float32 (what it runs in).
"""

import warnings

import pytest
import timm
import torch
from torch import nn

from swat_dist.models.layers import depthwise
from swat_dist.models.layers.depthwise import DepthwiseConv2d
from swat_dist.models.layers.explicit import explicit_mode


def _pair(channels: int, k: int, dtype: torch.dtype = torch.float64) -> tuple[DepthwiseConv2d, nn.Conv2d]:
    ours = DepthwiseConv2d(channels, k).to(dtype)
    native = nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels).to(dtype)
    native.load_state_dict(ours.state_dict())  # same keys and shapes
    return ours, native


def _grads(module: nn.Module, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.detach().clone().requires_grad_(True)
    module.zero_grad(set_to_none=True)
    out = module(x)
    out.backward(g)
    return out.detach(), x.grad, module.weight.grad, module.bias.grad  # type: ignore[return-value]


@pytest.mark.parametrize(
    "shape,k,channels_last",
    [((4, 48, 14, 14), 5, True), ((3, 16, 8, 8), 3, False), ((2, 10, 7, 9), 3, True), ((5, 7, 1, 1), 3, False)],
)
def test_output_and_gradients_are_the_native_convs(shape, k, channels_last):
    ours, native = _pair(shape[1], k)
    x = torch.randn(shape, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    g = torch.randn(shape, dtype=torch.float64)
    got, want = _grads(ours, x, g), _grads(native, x, g)
    assert torch.equal(got[0], want[0])  # the forward is the same F.conv2d call
    for a, b in zip(got[1:], want[1:]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


def test_the_fast_backward_runs_only_in_cpu_training_outside_explicit_mode():
    conv = DepthwiseConv2d(8, 3)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    assert type(conv(x).grad_fn).__name__ == "_DepthwiseCPUBackward"
    with explicit_mode():  # what fvcore counts
        assert type(conv(x).grad_fn).__name__ == "ConvolutionBackward0"
    with torch.no_grad():
        assert conv(x).grad_fn is None
    traced = torch.jit.trace(conv, x)  # fvcore's trace: a plain aten conv, no Python op
    assert "PythonOp" not in str(traced.graph) and "aten::_convolution" in str(traced.graph)


@pytest.mark.slow
def test_compiled_weight_gradient_equals_the_native_one(monkeypatch):
    monkeypatch.setattr(depthwise, "COMPILE_MIN_ELEMENTS", 0)
    monkeypatch.setattr(depthwise, "_COMPILED", {})
    monkeypatch.setattr(depthwise, "_CHECKED", set())
    ours, native = _pair(24, 5, torch.float32)
    x = torch.randn(3, 24, 9, 9).contiguous(memory_format=torch.channels_last)
    g = torch.randn(3, 24, 9, 9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # said once where the compiled kernel cannot be used; checked below
        got, want = _grads(ours, x, g), _grads(native, x, g)
    torch.testing.assert_close(got[2], want[2], rtol=1e-5, atol=1e-5)  # whichever path ran
    assert "fn" in depthwise._COMPILED
    if "failed" in depthwise._COMPILED:  # torch 2.14.1: no build with ATen default kernels, wrong with AVX2 at 1 thread
        pytest.skip(f"the compiled kernel is unusable with these CPU kernels: {depthwise._COMPILED['failed']}")
    checked = depthwise._CHECKED
    assert checked == {((3, 24, 9, 9), (2, 2))}  # the first result at this shape was checked, and passed


def test_a_miscompiled_kernel_is_caught_at_its_first_shape_and_never_used(monkeypatch):
    """What inductor's AVX2 kernels at one thread did (torch 2.14.1): gradients of 1e33 or NaN."""
    calls = []

    def garbage(x, grad, padding):
        calls.append(tuple(x.shape))
        return torch.full((x.shape[1], 1, 3, 3), 1e33, dtype=x.dtype)

    monkeypatch.setattr(depthwise, "COMPILE_MIN_ELEMENTS", 0)
    monkeypatch.setattr(depthwise, "_COMPILED", {"fn": garbage})
    monkeypatch.setattr(depthwise, "_CHECKED", set())
    ours, native = _pair(6, 3)
    x, g = torch.randn(2, 6, 5, 5, dtype=torch.float64), torch.randn(2, 6, 5, 5, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        first, again = _grads(ours, x, g), _grads(ours, x, g)
    want = _grads(native, x, g)
    for got in (first, again):
        torch.testing.assert_close(got[2], want[2], rtol=0, atol=1e-11)
    assert calls == [(2, 6, 5, 5)]  # tried once, then never again
    said = [str(w.message) for w in seen if "compiled weight gradient" in str(w.message)]
    assert said == ["depthwise conv: the compiled weight gradient is unavailable (its result at input (2, 6, 5, 5) "
                    "differs from the eager gradient's); using the eager one (about 2x slower on this op)"]  # fmt: skip


def test_a_failed_compile_falls_back_to_the_eager_gradient_and_says_so_once(monkeypatch):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler found\nsecond line")

    monkeypatch.setattr(depthwise, "COMPILE_MIN_ELEMENTS", 0)
    monkeypatch.setattr(depthwise, "_COMPILED", {})
    monkeypatch.setattr(torch, "compile", no_compiler)
    ours, native = _pair(6, 3)
    x, g = torch.randn(2, 6, 5, 5, dtype=torch.float64), torch.randn(2, 6, 5, 5, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        first, again = _grads(ours, x, g), _grads(ours, x, g)
    said = [str(w.message) for w in seen if "compiled weight gradient" in str(w.message)]
    assert said == ["depthwise conv: the compiled weight gradient is unavailable (RuntimeError: no C++ compiler "
                    "found); using the eager one (about 2x slower on this op)"]  # fmt: skip
    want = _grads(native, x, g)
    torch.testing.assert_close(first[2], want[2], rtol=0, atol=1e-11)
    assert torch.equal(first[2], again[2])


MICRO = [
    "swat_deit_micro_patch4_32",
    "swat_mixer_micro_patch4_32",
    "swat_resmlp_micro_patch4_32",
    "swat_swin_micro_patch4_window4_32",
]


@pytest.mark.parametrize("name", MICRO)
def test_a_whole_model_trains_with_the_native_gradients(name, monkeypatch):
    model = timm.create_model(name, num_classes=10).double().train()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        model(x).square().sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    fast = grads()
    monkeypatch.setattr(depthwise, "_fast_backward_applies", lambda x, w: False)
    native = grads()
    assert sorted(fast) == sorted(n for n, _ in model.named_parameters())
    assert any(isinstance(m, DepthwiseConv2d) for m in model.modules())
    for n in native:
        torch.testing.assert_close(fast[n], native[n], rtol=1e-9, atol=1e-12, msg=n)
