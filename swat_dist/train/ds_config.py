"""The DeepSpeed config, generated from ours (STYLE.md principle 9: one source of truth).

Pure: no deepspeed import, so the launcher and ``swat-dist config`` can print it on a login node.
There is no ``optimizer``/``scheduler`` block: the engine gets a client ``torch.optim.AdamW`` and the
trainer steps our own schedule (DeepSpeed's FusedAdam/CPUAdam JIT-compile for ~50 s, PLATFORM.md).
``engine.deepspeed`` is deep-merged last, so users can pass any other DeepSpeed key through; a merged
value that contradicts one derived from our config is an error, not a silent second truth.
"""

from __future__ import annotations

from typing import Any

from ..config import Config, derived
from ..config_types import ConfigError, merge, thaw

# DeepSpeed's fp16 loss-scaling defaults, spelled out so the printed config shows them.
FP16_LOSS_SCALING = {
    "loss_scale": 0,  # 0: dynamic
    "initial_scale_power": 16,
    "loss_scale_window": 1000,
    "hysteresis": 2,
    "min_loss_scale": 1,
}
# Elements per gradient bucket. DeepSpeed's default 5e8 preallocates 1-2 GB per bucket (x2 with
# overlap_comm), ten times the largest SWAT model (86 M params); 5e7 still takes few buckets per step.
BUCKET = 50_000_000


def _zero(cfg: Config) -> dict[str, Any]:
    e = cfg.engine
    zero: dict[str, Any] = {"stage": e.zero_stage}
    if e.zero_stage == 0:
        return zero
    zero |= {
        "contiguous_gradients": True,
        "overlap_comm": e.zero_stage >= 2,  # overlap the gradient reduce-scatter with the backward pass
        "reduce_bucket_size": BUCKET,
    }
    if e.zero_stage < 3:
        zero["allgather_bucket_size"] = BUCKET
    if e.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if e.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return zero


def deepspeed_config(cfg: Config, world_size: int) -> dict[str, Any]:
    """The config dict for ``deepspeed.initialize`` on ``world_size`` ranks: ours, then ``engine.deepspeed``."""
    d = derived(cfg, world_size)
    precision = cfg.engine.precision
    ours: dict[str, Any] = {
        "train_batch_size": d["global_batch"],
        "train_micro_batch_size_per_gpu": cfg.data.batch_size,
        "gradient_accumulation_steps": cfg.engine.grad_accum,
        "gradient_clipping": cfg.optim.clip_grad or 0.0,  # 0: no clipping
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": True, **FP16_LOSS_SCALING} if precision == "fp16" else {"enabled": False},
        "zero_optimization": _zero(cfg),
        # Reduce gradients in fp32, not in the model's bf16 (DeepSpeed's default): a bf16 sum over ranks
        # rounds each addend to 8 mantissa bits. Cost: twice the gradient bytes on the wire, small next
        # to the step for models of this size (<= 86 M parameters).
        "communication_data_type": "fp32",
        "steps_per_print": 2**31 - 1,  # we log ourselves
        "wall_clock_breakdown": False,
    }
    if cfg.engine.offload_optimizer:
        # DeepSpeed refuses a client optimizer with ZeRO-Offload unless told otherwise. torch AdamW steps
        # the offloaded fp32 master weights on the CPU more slowly than DeepSpeedCPUAdam, but needs no
        # ~50 s JIT build; an engine that builds DeepSpeedCPUAdam may drop this key.
        ours["zero_force_ds_cpu_optimizer"] = False
    out = merge(ours, thaw(cfg.engine.deepspeed))
    _check_merge(out, ours, cfg)
    return out


# Values generated from our settings: engine.deepspeed may repeat them, never change them.
_OWNED = {
    ("train_batch_size",): "data.batch_size x engine.grad_accum x world size",
    ("train_micro_batch_size_per_gpu",): "data.batch_size (per rank)",
    ("gradient_accumulation_steps",): "engine.grad_accum",
    ("gradient_clipping",): "optim.clip_grad",
    ("bf16", "enabled"): "engine.precision",
    ("fp16", "enabled"): "engine.precision",
    ("zero_optimization", "stage"): "engine.zero_stage",
}


def _get(tree: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree.get(key) if isinstance(tree, dict) else None  # type: ignore[assignment]
    return tree


def _check_merge(out: dict[str, Any], ours: dict[str, Any], cfg: Config) -> None:
    for path, owner in _OWNED.items():
        if _get(out, path) != _get(ours, path):
            key = "engine.deepspeed." + ".".join(path)
            hint = " (batch sizes come from data.batch_size and engine.grad_accum)" if "batch" in owner else ""
            raise ConfigError(f"{key}: {_get(out, path)!r} contradicts {_get(ours, path)!r} from {owner}{hint}")
    for block, flag in (("offload_optimizer", "offload_optimizer"), ("offload_param", "offload_params")):
        device = _get(out, ("zero_optimization", block, "device"))
        if device not in (None, "none") and not getattr(cfg.engine, flag):
            raise ConfigError(
                f"engine.deepspeed.zero_optimization.{block}: set engine.{flag}=true to offload "
                f"(it also checks the ZeRO stage)"
            )
