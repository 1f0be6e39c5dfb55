"""``swat-dist bench model NAME``: training images/s and MFU of a SWAT model beside its baseline.

One process, one device, synthetic batches already on the device: this measures the model (forward,
backward, AdamW step), not the data or communication. bf16 autocast on CUDA, fp32 on CPU (bf16 is ~13x
slower there, PLATFORM.md). The two models alternate over rounds and each keeps its best round, so a
busy spell on a shared machine does not decide the ratio. MFU = 3 x 2 x fvcore forward MACs per image
x images/s / the device's peak (``train.metrics.peak_flops``); on a CPU only with SWAT_DIST_PEAK_TFLOPS.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import timm
import torch
from torch import nn

from ..models.complexity import count_gflops, create_unfused
from ..models.zoo import BASELINE_OF
from .metrics import peak_flops, train_flops_per_image


def _step_time(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """Seconds per training step, averaged over ``steps`` after the caller's warm-up."""
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.is_cuda)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        with autocast:
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync()  # a CPU-GPU sync point: only here, outside the timed loop's body
    return (time.perf_counter() - start) / steps


def bench_pair(
    name: str, batch: int, steps: int = 10, rounds: int = 3, device: str | None = None
) -> list[dict[str, float | str]]:
    """Rows for ``name`` and its baseline: images/s, step time, GFLOPs, MFU, and the SWAT/baseline ratio."""
    if name not in BASELINE_OF:
        raise ValueError(f"{name!r} is not a SWAT model of the zoo (see swat-dist models)")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    names = [name, BASELINE_OF[name]]
    runs: dict[str, Any] = {}
    for n in names:
        model: Any = timm.create_model(n)  # timm models: pretrained_cfg, num_classes
        size = int(model.pretrained_cfg["input_size"][-1])
        gmacs = count_gflops(create_unfused(n), size)  # fvcore cannot see fused attention
        model = model.to(dev).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randn(batch, 3, size, size, device=dev)
        y = torch.randint(0, model.num_classes, (batch,), device=dev)
        _step_time(model, opt, x, y, 2)  # warm-up: allocator, cuDNN autotuning, lazy init
        runs[n] = dict(model=model, opt=opt, x=x, y=y, gmacs=gmacs, best=float("inf"))
    for _ in range(rounds):
        for n in names:
            r = runs[n]
            r["best"] = min(r["best"], _step_time(r["model"], r["opt"], r["x"], r["y"], steps))
    # A CPU has no peak we can know here: MFU only when the user gives one (SWAT_DIST_PEAK_TFLOPS).
    known = dev.type == "cuda" or "SWAT_DIST_PEAK_TFLOPS" in os.environ
    peak = peak_flops(dev) if known else float("nan")
    rows: list[dict[str, float | str]] = []
    for n in names:
        r = runs[n]
        ips = batch / r["best"]
        mfu = train_flops_per_image(r["gmacs"]) * ips / peak
        rows.append(dict(model=n, step_s=r["best"], images_per_sec=ips, gflops=r["gmacs"], mfu=mfu))
    rows[0]["step_ratio"] = rows[0]["step_s"] / rows[1]["step_s"]  # type: ignore[operator]
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
        f"Device: {device}; {machine}. Batch {batch}, best of alternating rounds. "
        f"Step time SWAT/baseline {head['step_ratio']:.2f}x (FLOPs ratio {head['flops_ratio']:.2f}).",
        "",
        "| model | step (s) | images/s | fvcore GFLOPs | MFU |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['step_s']:.3f} | {r['images_per_sec']:,.1f} | {r['gflops']:.3f} | {_pct(r['mfu'])} |"
        )
    return "\n".join(lines) + "\n"
