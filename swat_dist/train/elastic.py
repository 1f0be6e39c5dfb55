"""Resuming on another world size: the same training, continued on more or fewer ranks.

The contract is the checkpoint's global batch G (samples per optimizer step). The sample plan
(:mod:`swat_dist.data.loaders.plan`) cuts each epoch's global order into consecutive chunks of ``world x
micro`` samples, one per micro-step, so optimizer step ``k`` always averages the gradients of samples
``order[k*G : (k+1)*G]`` whatever ``world`` is, as long as ``micro x accum x world = G``. On the new
world size :func:`relayout` re-derives ``data.batch_size`` (micro) and ``engine.grad_accum`` (accum)
for that, and refuses, naming the world sizes that can keep G, when ``world`` does not divide it.

What moves across (see :class:`~.checkpoint.CheckpointManager`): DeepSpeed's model and optimizer state
(stage 0 as it is; ZeRO 1-3 through the universal copy :func:`.engine.universal_copy` writes once),
and from the rank files the trainer state, the loader position (re-counted in the new micro-steps:
:func:`loader_state`), the RNG state (rank 0's: every micro-batch and sample reseeds anyway) and the
EMA (:func:`.ema.ema_state`: identical on every rank under ZeRO 0-2, re-partitioned under ZeRO-3).
No torch here: ``swat-dist submit`` checks a world-size change with :func:`relayout` on a login node. The lr
schedule is a function of the optimizer step, which the trainer state carries.

ZeRO-3 continues exactly too. DeepSpeed 0.19.8's ZeRO-3 universal load restores the fp32 weights and both
Adam moments element by element, but gives every param group's flat partition one shared ``step`` tensor,
which ZeRO-3's per-group optimizer steps then advance once per group (the drift ZeRO-3 was once refused
for: 3e-5 in the loss one step after the resume, 1e-3 after five); :meth:`.engine.Engine.load` gives each
partition its own again, as it puts back each group's hyperparameters.

What is not the same: the order in which floating-point sums run (micro-batch means, then a mean over
micro-steps and ranks), so losses agree to ~1e-6 in fp32, not bit for bit; and randomness drawn on the
device per micro-batch (mixup/cutmix pairs and mixing ratios, random erasing, drop-path), which is
seeded per (epoch, micro-step, rank) and so follows another stream on another layout (README "Resume").
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..config import Config
from ..config_types import ConfigError


def divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def saved_global_batch(meta: dict[str, Any], cfg: Config) -> int:
    """The checkpoint's global batch; older checkpoints (no ``global_batch`` in meta.json) ran this config."""
    if isinstance(meta.get("global_batch"), int):
        return int(meta["global_batch"])
    return cfg.data.batch_size * cfg.engine.grad_accum * int(meta["world_size"])


def relayout(cfg: Config, meta: dict[str, Any], world: int, where: Path) -> tuple[Config, str]:
    """``cfg`` with micro-batch and accumulation re-derived for ``world`` ranks, and the line that says so.

    The micro-batch is the largest divisor of G / world not above ``data.batch_size`` (what the config
    says fits in a device's memory) that the config's rules accept, the accumulation makes up the rest.
    ValueError (one line) when ``world`` does not divide G, or no micro-batch is accepted.
    """
    saved, global_batch = int(meta["world_size"]), saved_global_batch(meta, cfg)
    if global_batch % world:
        keep = ", ".join(str(k) for k in divisors(global_batch))
        raise ValueError(
            f"checkpoint {where} trained with a global batch of {global_batch} on {saved} ranks; {world} ranks "
            f"cannot keep it (micro-batch x grad_accum x ranks = {global_batch}): resume on {keep} ranks, or "
            f"start a new run from its weights (model.finetune={where / 'model.safetensors'})"
        )
    per_rank, why = global_batch // world, ""
    for micro in sorted((m for m in divisors(per_rank) if m <= max(cfg.data.batch_size, 1)), reverse=True):
        try:  # the config's own rules still hold (an even micro-batch under mixup, say)
            out = dataclasses.replace(
                cfg,
                data=dataclasses.replace(cfg.data, batch_size=micro),
                engine=dataclasses.replace(cfg.engine, grad_accum=per_rank // micro),
            )
            break
        except ConfigError as err:
            why = why or str(err)
    else:
        raise ValueError(
            f"checkpoint {where}: no micro-batch keeps its global batch {global_batch} on {world} ranks ({why})"
        )
    accum = out.engine.grad_accum
    line = (
        f"[swat-dist] resuming step {meta['step']} of {saved} ranks on {world}: global batch {global_batch} kept as "
        f"data.batch_size={micro} x engine.grad_accum={accum} x {world} ranks"
    )
    return out, line


CHANGES = "elastic.jsonl"  # RUN/elastic.jsonl: one line per world-size change, for `swat-dist jobs`


def record_change(run_dir: Path, meta: dict[str, Any], world: int, cfg: Config) -> None:
    """Append the change to ``run_dir/elastic.jsonl`` (rank 0, before training)."""
    line = dict(step=int(meta["step"]), world_from=int(meta["world_size"]), world_to=world,
                batch_size=cfg.data.batch_size, grad_accum=cfg.engine.grad_accum)  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / CHANGES).open("a") as f:
        f.write(json.dumps(line) + "\n")


def changes(run_dir: Path) -> list[str]:
    """The recorded world-size changes of a run, one phrase each (none recorded: [])."""
    path = run_dir / CHANGES
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    return [f"step {r['step']}: {r['world_from']} -> {r['world_to']} ranks (data.batch_size={r['batch_size']} x "
            f"engine.grad_accum={r['grad_accum']})" for r in rows]  # fmt: skip


def change_note(meta: dict[str, Any], world: int, cfg: Config) -> dict[str, str]:
    """The MLflow param recording the change: a new key per change (MLflow params are write-once)."""
    value = f"{meta['world_size']}->{world} ranks, batch {cfg.data.batch_size} x accum {cfg.engine.grad_accum}"
    return {f"elastic.step_{int(meta['step']):08d}": value}


def loader_state(state: dict[str, Any], global_micro: int) -> dict[str, Any]:
    """The loader position re-counted in micro-steps of ``global_micro`` (= world x micro) samples.

    A checkpoint is written at an optimizer-step boundary, so the samples used this epoch are a multiple
    of G and so of ``global_micro``; anything else is a checkpoint this module cannot continue exactly.
    """
    samples = int(state["step"]) * int(state["global_batch"])
    if samples % global_micro:
        raise ValueError(
            f"the checkpoint's loader stopped after {samples} samples of its epoch, not a whole number of "
            f"micro-steps of {global_micro}: it cannot be continued on this layout"
        )
    return dict(state, step=samples // global_micro, global_batch=global_micro)
