"""Exponential moving average of the weights, under every ZeRO stage, without gathering.

Each rank keeps an fp32 EMA of the parameter storage it holds (:meth:`Engine.local_params`): the
whole parameters under ZeRO 0-2 (memory: one fp32 copy of the model per rank, 4 bytes x params), its
own partition (``param.ds_tensor``) under ZeRO-3 (4 bytes x params / world size). The update is
elementwise, so the partitioned EMA is exactly the EMA of the full weights, and it needs no
communication. Evaluating or exporting the EMA swaps it into that storage and back (:meth:`swapped`);
the swap costs one extra copy of the local storage for as long as it lasts. Buffers are not averaged
(SWAT models have none that train). Checkpoints save rank 0's EMA under ZeRO 0-2 (the same on every
rank), each rank's partition under ZeRO-3 (:meth:`state_dict`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .safe_load import load_state


class EMA:
    def __init__(self, params: list[Tensor], decay: float, after_swap: Callable[[], None] = lambda: None) -> None:
        """``after_swap`` runs after each swap (ZeRO-3: :meth:`Engine.release_gathered`)."""
        self.params, self.decay, self.updates, self.after_swap = params, decay, 0, after_swap
        self.shadow = [p.detach().float().clone() for p in params]

    @torch.no_grad()
    def update(self) -> None:
        """shadow <- decay * shadow + (1 - decay) * weights, once per optimizer step.

        One multi-tensor lerp (torch's foreach kernels, as its optimizers use): on CUDA a few fused launches
        instead of one per parameter tensor (~150 for DeiT-S); on CPU the same per-tensor loop. Same
        arithmetic either way. bf16 weights are widened to fp32 first (a temporary copy of each); fp32
        weights are used in place."""
        self.updates += 1
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self.params], 1.0 - self.decay)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """The EMA weights in the model's storage inside the block; the trained weights restored after."""
        saved = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        self.after_swap()
        try:
            yield
        finally:
            with torch.no_grad():
                for p, w in zip(self.params, saved):
                    p.copy_(w)
            self.after_swap()

    def state_dict(self) -> dict[str, Any]:
        return dict(decay=self.decay, updates=self.updates, shadow=[s.cpu() for s in self.shadow])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["shadow"]) != len(self.shadow) or any(
            a.shape != b.shape for a, b in zip(state["shadow"], self.shadow)
        ):
            raise ValueError("EMA state does not match this model's parameters (or this rank's ZeRO-3 partition)")
        self.updates = int(state["updates"])
        for s, v in zip(self.shadow, state["shadow"]):
            s.copy_(v)


def _partition(full: torch.Tensor, world: int, rank: int) -> torch.Tensor:
    """ZeRO-3's split of a flattened parameter: ``ceil(n / world)`` elements per rank, the tail zero-padded."""
    size = math.ceil(full.numel() / world)
    padded = torch.zeros(size * world, dtype=full.dtype)
    padded[: full.numel()] = full
    return padded[rank * size : (rank + 1) * size].clone()


def ema_state(
    path: Path, saved_world: int, stage: int, world: int, rank: int, numels: list[int]
) -> dict[str, Any] | None:
    """This rank's EMA state on the new layout, from the rank files in ``path`` (None: they hold none).

    ZeRO 0-2: every rank's EMA covers the whole model and is the same (the update is elementwise on
    identical weights), so rank 0's is taken: the only one saved since 2026-12 (before, every rank file
    held a copy; rank 0's is read from those too). ZeRO-3: each old rank holds the EMA of its partition; the
    partitions are joined into the full flat tensors (``numels``: each parameter's element count) and cut
    again for ``world`` ranks. Cost: every rank reads every rank file once (one fp32 EMA of the model in
    all, plus the small trainer states).
    """
    if stage < 3:
        ema = load_state(path / "rank00000.pt")["ema"]
        return None if ema is None else dict(ema)
    parts = [load_state(path / f"rank{r:05d}.pt")["ema"] for r in range(saved_world)]
    if any(p is None for p in parts):
        return None
    shadow = []
    for i, numel in enumerate(numels):
        full = torch.cat([p["shadow"][i].reshape(-1) for p in parts])[:numel]
        shadow.append(_partition(full, world, rank))
    return dict(parts[0], shadow=shadow)
