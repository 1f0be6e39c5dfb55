"""``swat-dist bench model NAME``: training images/s and MFU of a SWAT model beside its baseline.

One process, one device, synthetic batches already on the device: this measures the model (forward,
backward, AdamW step), not the data or communication. The precision regime is the trainer's: on CUDA
DeepSpeed bf16 (module weights, activations and gradients in bf16, fp32 master weights in the optimizer,
:class:`_MasterWeights`), on CPU fp32 (bf16 is ~13x slower there, PLATFORM.md). The two models alternate
over rounds; each reports its median round, and the SWAT/baseline step ratio is the median of the
per-round (paired) ratios, so a busy spell on a shared machine hits both sides of a pair and cancels.
MFU = 3 x 2 x fvcore forward MACs per image x images/s / the device's peak
(``train.metrics.peak_flops``); on a CPU only with SWAT_DIST_PEAK_TFLOPS.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from typing import Any

import timm
import torch
from torch import nn

from ..models.complexity import count_gflops, create_unfused
from ..models.zoo import BASELINE_OF
from .cpu_memory import keep_freed_memory
from .metrics import peak_flops, train_flops_per_image


class _MasterWeights:
    """AdamW over fp32 copies of a bf16 module's weights, as DeepSpeed's bf16 mode trains it.

    Per step: bf16 grads cast up into the masters, AdamW on the masters, masters copied back down into the
    module. Costs what DeepSpeed's costs: two fp32 copies-worth of traffic per step beyond the AdamW itself.
    """

    def __init__(self, model: nn.Module) -> None:
        self.params: list[torch.Tensor] = [p for p in model.parameters() if p.requires_grad]
        self.masters = [p.detach().float().clone().requires_grad_(True) for p in self.params]
        self.opt = torch.optim.AdamW(self.masters, lr=1e-4)

    def step(self) -> None:
        for p, m in zip(self.params, self.masters):
            m.grad = None if p.grad is None else p.grad.float()
        self.opt.step()
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.masters)  # fp32 -> bf16 (round to nearest)
        for p in self.params:
            p.grad = None


class _Plain:
    """AdamW on the module's own (fp32) weights."""

    def __init__(self, model: nn.Module) -> None:
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(self) -> None:
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def _step_time(model: nn.Module, opt: _MasterWeights | _Plain, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """Seconds per training step, averaged over ``steps`` after the caller's warm-up."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        nn.functional.cross_entropy(model(x).float(), y).backward()
        opt.step()
    sync()  # a CPU-GPU sync point: only here, outside the timed loop's body
    return (time.perf_counter() - start) / steps


def _setup(name: str, batch: int, dev: torch.device) -> dict[str, Any]:
    model: Any = timm.create_model(name)  # timm models: pretrained_cfg, num_classes
    size = int(model.pretrained_cfg["input_size"][-1])
    gmacs = count_gflops(create_unfused(name), size)  # fvcore cannot see fused attention
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    model = model.to(dev, dtype).train()
    opt = _MasterWeights(model) if dtype == torch.bfloat16 else _Plain(model)
    x = torch.randn(batch, 3, size, size, device=dev, dtype=dtype)
    y = torch.randint(0, model.num_classes, (batch,), device=dev)
    _step_time(model, opt, x, y, 2)  # warm-up: allocator, cuDNN autotuning, lazy init
    return dict(model=model, opt=opt, x=x, y=y, gmacs=gmacs, times=[])


def bench_pair(
    name: str, batch: int, steps: int = 10, rounds: int = 3, device: str | None = None
) -> list[dict[str, float | str]]:
    """Rows for ``name`` and its baseline: images/s, step time, GFLOPs, MFU, and the SWAT/baseline ratio."""
    if name not in BASELINE_OF:
        raise ValueError(f"{name!r} is not a SWAT model of the zoo (see swat-dist models)")
    if rounds < 1 or steps < 1:
        raise ValueError(f"need --rounds >= 1 and --steps >= 1, got {rounds} and {steps}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cpu":
        keep_freed_memory()  # as the trainer runs on CPU: both models, before either allocates
    names = [name, BASELINE_OF[name]]
    runs = {n: _setup(n, batch, dev) for n in names}
    for _ in range(rounds):
        for n in names:
            r = runs[n]
            r["times"].append(_step_time(r["model"], r["opt"], r["x"], r["y"], steps))
    # A CPU has no peak we can know here: MFU only when the user gives one (SWAT_DIST_PEAK_TFLOPS).
    known = dev.type == "cuda" or "SWAT_DIST_PEAK_TFLOPS" in os.environ
    peak = peak_flops(dev) if known else float("nan")
    rows: list[dict[str, float | str]] = []
    for n in names:
        r = runs[n]
        step = statistics.median(r["times"])
        ips = batch / step
        mfu = train_flops_per_image(r["gmacs"]) * ips / peak
        rows.append(dict(model=n, step_s=step, images_per_sec=ips, gflops=r["gmacs"], mfu=mfu))
    pairs = [s / b for s, b in zip(runs[names[0]]["times"], runs[names[1]]["times"])]
    rows[0]["step_ratio"] = statistics.median(pairs)
    rows[0]["step_ratio_range"] = f"{min(pairs):.2f}-{max(pairs):.2f}"
    rows[0]["flops_ratio"] = rows[0]["gflops"] / rows[1]["gflops"]  # type: ignore[operator]
    return rows


def _pct(value: float | str) -> str:
    return "-" if isinstance(value, str) or math.isnan(value) else f"{value:.1%}"


def render(rows: list[dict[str, float | str]], batch: int, device: str, machine: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    head = rows[0]
    lines = [
        f"### Model training throughput, {head['model']}, {stamp}",
        "",
        f"Device: {device}; {machine}. Batch {batch}, medians of alternating rounds. "
        f"Step time SWAT/baseline {head['step_ratio']:.2f}x, median of paired rounds "
        f"(range {head.get('step_ratio_range', '-')}; FLOPs ratio {head['flops_ratio']:.2f}).",
        "",
        "| model | step (s) | images/s | fvcore GFLOPs | MFU |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['step_s']:.3f} | {r['images_per_sec']:,.1f} | {r['gflops']:.3f} | {_pct(r['mfu'])} |"
        )
    return "\n".join(lines) + "\n"
