"""AdamW parameter groups (weight decay, layer-wise lr decay) and the lr schedule, per optimizer step.

The groups follow timm: no weight decay on 1-D parameters (norms, biases), on names the model lists in
``no_weight_decay()`` and on names containing a keyword of ``no_weight_decay_keywords()`` (timm 0.4.13,
which produced the paper's numbers, ignored the keywords; we honour them, as current timm does). Each
group carries an ``lr_scale`` (1 without layer decay) that the trainer multiplies into the schedule's lr.
"""

from __future__ import annotations

import math
from typing import Any

from timm.optim import param_groups_layer_decay
from torch import nn

from ..config import Derived, OptimConfig, SchedConfig


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Parameter names the model exempts from weight decay (exact names and keyword matches)."""
    m: Any = model  # the hooks are optional methods, unknown to nn.Module's type
    exact = set(m.no_weight_decay()) if hasattr(m, "no_weight_decay") else set()
    keywords = set(m.no_weight_decay_keywords()) if hasattr(m, "no_weight_decay_keywords") else set()
    names = {n for n, _ in model.named_parameters()}
    return {n for n in names if n in exact or any(k in n for k in keywords)}


def param_groups(model: nn.Module, optim: OptimConfig) -> list[dict[str, Any]]:
    """AdamW groups: ``params``, ``weight_decay``, ``lr_scale`` (and ``names``, for tests and the log)."""
    skip = no_weight_decay_names(model)
    if optim.layer_decay is not None:
        groups = param_groups_layer_decay(
            model, weight_decay=optim.weight_decay, no_weight_decay_list=sorted(skip), layer_decay=optim.layer_decay
        )
        by_id = {id(p): n for n, p in model.named_parameters()}
        for g in groups:
            g["names"] = [by_id[id(p)] for p in g["params"]]
        return groups
    decay: dict[str, Any] = dict(params=[], names=[], weight_decay=optim.weight_decay, lr_scale=1.0)
    no_decay: dict[str, Any] = dict(params=[], names=[], weight_decay=0.0, lr_scale=1.0)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        group = no_decay if p.ndim <= 1 or name.endswith(".bias") or name in skip else decay
        group["params"].append(p)
        group["names"].append(name)
    return [g for g in (decay, no_decay) if g["params"]]


def lr_at(step: int, steps_per_epoch: int, sched: SchedConfig, d: Derived, run_steps: int | None = None) -> float:
    """The lr of optimizer step ``step`` (0-based): timm's CosineLRScheduler with ``t_in_epochs=False``.

    Linear warmup from ``warmup_lr`` to the peak over ``warmup_epochs`` (or ``warmup_steps``); cosine from
    the peak to ``min_lr`` over ``epochs`` (counted from step 0: the warmup overlaps it); ``min_lr``
    afterwards (the cooldown epochs). ``kind: poly`` decays after the warmup to ``min_lr`` at ``run_steps``
    (the run's last step; default the epochs' steps), as mmseg's PolyLR.
    """
    warmup = sched.warmup_epochs * steps_per_epoch if sched.warmup_steps is None else sched.warmup_steps
    total = sched.epochs * steps_per_epoch
    peak, low = d["lr"], d["min_lr"]
    if step < warmup:
        return d["warmup_lr"] + step * (peak - d["warmup_lr"]) / warmup
    if sched.kind == "poly":
        end = run_steps or total
        left = max(0.0, 1 - (step - warmup) / max(end - warmup, 1))
        return (peak - low) * left**sched.power + low
    if step < total:
        return low + 0.5 * (peak - low) * (1 + math.cos(math.pi * step / total))
    return low
