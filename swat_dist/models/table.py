"""The paper's complexity table, computed live: each SWAT model beside its baseline (``swat-dist models``)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import torch
from timm.models import get_pretrained_cfg_value

from .complexity import count_gflops, count_params, create_unfused
from .factory import closest_models
from .zoo import ZOO, ZooEntry


@dataclass(frozen=True)
class Row:
    name: str
    kind: str  # "SWAT" or "baseline"
    params: int
    gflops: float | None
    d_params: int | None  # SWAT minus its baseline
    d_gflops: float | None


def select(pattern: str) -> list[ZooEntry]:
    """Zoo entries whose SWAT or baseline name matches the shell-style ``pattern``."""
    hits = [e for e in ZOO if fnmatch.fnmatch(e.name, pattern) or fnmatch.fnmatch(e.baseline, pattern)]
    if not hits:
        close = closest_models(pattern.strip("*"))
        raise ValueError(f"no model matches {pattern!r}" + (f"; closest: {', '.join(close)}" if close else ""))
    return hits


def _measure(name: str, flops: bool) -> tuple[int, float | None]:
    if not flops:  # parameters only: build on the meta device, no memory or init cost
        with torch.device("meta"):
            return count_params(create_unfused(name)), None
    model = create_unfused(name)
    size = int((get_pretrained_cfg_value(name, "input_size") or (3, 224, 224))[-1])
    return count_params(model), count_gflops(model, size)


def rows(pattern: str = "*", flops: bool = False) -> list[Row]:
    """One SWAT row and one baseline row per matching zoo entry, SWAT rows carrying the deltas."""
    out = []
    for entry in select(pattern):
        sp, sf = _measure(entry.name, flops)
        bp, bf = _measure(entry.baseline, flops)
        d_f = sf - bf if sf is not None and bf is not None else None
        out.append(Row(entry.name, "SWAT", sp, sf, sp - bp, d_f))
        out.append(Row(entry.baseline, "baseline", bp, bf, None, None))
    return out


def render(table: list[Row]) -> str:
    """Plain-text table: name, kind, params (M), GFLOPs, and the SWAT-minus-baseline deltas."""
    head = f"{'model':<38} {'kind':<9} {'params(M)':>10} {'GFLOPs':>8} {'dParams(M)':>11} {'dGFLOPs':>8}"
    lines = [head, "-" * len(head)]
    for r in table:
        g = f"{r.gflops:8.3f}" if r.gflops is not None else f"{'-':>8}"
        dp = f"{r.d_params / 1e6:+11.3f}" if r.d_params is not None else f"{'':>11}"
        dg = f"{r.d_gflops:+8.3f}" if r.d_gflops is not None else f"{'':>8}"
        lines.append(f"{r.name:<38} {r.kind:<9} {r.params / 1e6:10.3f} {g} {dp} {dg}")
    return "\n".join(lines)
