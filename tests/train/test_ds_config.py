"""The generated DeepSpeed config: batch arithmetic, precision, ZeRO blocks, and the merge-last rule."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from swat_dist.config import Config, ConfigError, load_config
from swat_dist.train.ds_config import BUCKET, FP16_LOSS_SCALING, deepspeed_config


def cfg(*overrides: str) -> Config:
    return load_config([], ["data.format=synthetic", *overrides])


@pytest.mark.parametrize("batch,accum,world", [(128, 1, 1), (64, 4, 2), (256, 1, 8), (6, 3, 5)])
def test_batch_sizes_are_micro_x_accumulation_x_world(batch, accum, world):
    ds = deepspeed_config(cfg(f"data.batch_size={batch}", f"engine.grad_accum={accum}"), world)
    assert ds["train_batch_size"] == batch * accum * world
    assert ds["train_micro_batch_size_per_gpu"] == batch
    assert ds["gradient_accumulation_steps"] == accum


def test_the_default_config_exactly():
    assert deepspeed_config(cfg(), 2) == {
        "train_batch_size": 256,
        "train_micro_batch_size_per_gpu": 128,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 5.0,
        "bf16": {"enabled": True},
        "fp16": {"enabled": False},
        "zero_optimization": {
            "stage": 1,  # stage 0 in bf16 steps Adam once before training (issue 24, tests/train/test_engine_adam.py)
            "contiguous_gradients": True,
            "overlap_comm": False,
            "reduce_bucket_size": BUCKET,
            "allgather_bucket_size": BUCKET,
        },
        "communication_data_type": "fp32",
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_precision_blocks(precision):
    ds = deepspeed_config(cfg(f"engine.precision={precision}"), 1)
    assert ds["bf16"] == {"enabled": precision == "bf16"}
    assert ds["fp16"] == ({"enabled": True, **FP16_LOSS_SCALING} if precision == "fp16" else {"enabled": False})
    assert ds["fp16"].get("loss_scale", 0) == 0  # dynamic loss scaling when fp16


def test_clipping_off_is_zero():
    assert deepspeed_config(cfg("optim.clip_grad=null"), 1)["gradient_clipping"] == 0.0
    assert deepspeed_config(cfg("optim.clip_grad=1.0"), 1)["gradient_clipping"] == 1.0


STAGES = [(s, oo, op) for s, oo, op in itertools.product(range(4), [False, True], [False, True])
          if (not oo or s >= 1) and (not op or s == 3)]  # fmt: skip


@pytest.mark.parametrize("stage,offload_opt,offload_par", STAGES)
def test_zero_blocks_per_stage_and_offload(stage, offload_opt, offload_par):
    c = cfg(
        f"engine.zero_stage={stage}",
        f"engine.offload_optimizer={offload_opt}",
        f"engine.offload_params={offload_par}",
        *(["engine.precision=fp32"] if stage == 0 else []),  # stage 0 refuses bf16 (tests/train/test_engine_adam.py)
    )
    zero = deepspeed_config(c, 4)["zero_optimization"]
    assert zero["stage"] == stage
    if stage == 0:
        assert zero == {"stage": 0}
        return
    assert zero["contiguous_gradients"] is True and zero["reduce_bucket_size"] == BUCKET
    assert zero["overlap_comm"] is (stage >= 2)
    assert ("allgather_bucket_size" in zero) is (stage < 3)
    assert zero.get("offload_optimizer") == ({"device": "cpu", "pin_memory": True} if offload_opt else None)
    assert zero.get("offload_param") == ({"device": "cpu", "pin_memory": True} if offload_par else None)
    # a client torch AdamW is allowed with ZeRO-Offload only with this switch
    assert deepspeed_config(c, 4).get("zero_force_ds_cpu_optimizer", True) is not offload_opt


def test_no_optimizer_or_scheduler_block_and_plain_json():
    ds = deepspeed_config(cfg("engine.zero_stage=3", "engine.offload_params=true"), 8)
    assert not {"optimizer", "scheduler"} & set(ds)
    assert json.loads(json.dumps(ds)) == ds  # plain data, no frozen mappings or tuples


def test_user_keys_are_deep_merged_last():
    c = cfg(
        "engine.zero_stage=2",
        "engine.deepspeed.zero_optimization.reduce_bucket_size=5e8",
        "engine.deepspeed.zero_optimization.round_robin_gradients=true",
        "engine.deepspeed.steps_per_print=10",
        "engine.deepspeed.activation_checkpointing={partition_activations: true}",
        "engine.deepspeed.train_batch_size=256",  # equal to ours: allowed
    )
    ds = deepspeed_config(c, 2)
    assert ds["zero_optimization"]["reduce_bucket_size"] == 5e8  # theirs wins
    assert ds["zero_optimization"]["round_robin_gradients"] is True
    assert ds["zero_optimization"]["stage"] == 2 and ds["zero_optimization"]["overlap_comm"] is True  # ours kept
    assert ds["steps_per_print"] == 10 and ds["activation_checkpointing"] == {"partition_activations": True}
    ds["zero_optimization"]["stage"] = 9  # the result is a fresh dict: the frozen config is untouched
    assert deepspeed_config(c, 2)["zero_optimization"]["stage"] == 2


@pytest.mark.parametrize(
    "override,message",
    [
        ("train_batch_size=512", "engine.deepspeed.train_batch_size: 512 contradicts 256 from data.batch_size x "
         "engine.grad_accum x world size (batch sizes come from data.batch_size and engine.grad_accum)"),
        ("train_micro_batch_size_per_gpu=64", "contradicts 128 from data.batch_size (per rank)"),
        ("gradient_accumulation_steps=2", "contradicts 1 from engine.grad_accum"),
        ("gradient_clipping=1.0", "contradicts 5.0 from optim.clip_grad"),
        ("bf16.enabled=false", "engine.deepspeed.bf16.enabled: False contradicts True from engine.precision"),
        ("fp16={enabled: true}", "engine.deepspeed.fp16.enabled: True contradicts False from engine.precision"),
        ("zero_optimization.stage=3", "zero_optimization.stage: 3 contradicts 1 from engine.zero_stage"),
        ("zero_optimization.offload_optimizer={device: cpu}", "set engine.offload_optimizer=true"),
        ("zero_optimization.offload_param={device: nvme}", "set engine.offload_params=true"),
    ],
)  # fmt: skip
def test_merged_values_may_not_contradict_ours(override, message):
    with pytest.raises(ConfigError) as info:
        deepspeed_config(cfg(f"engine.deepspeed.{override}"), 2)
    assert message in str(info.value)


def test_offload_device_may_be_changed_when_offload_is_on():
    nvme = "engine.deepspeed.zero_optimization.offload_param={device: nvme, nvme_path: /nvme}"
    c = cfg("engine.zero_stage=3", "engine.offload_params=true", nvme)
    offload = deepspeed_config(c, 1)["zero_optimization"]["offload_param"]
    assert offload == {"device": "nvme", "pin_memory": True, "nvme_path": "/nvme"}


@pytest.mark.slow
def test_deepspeed_parses_every_generated_config():
    """DeepSpeed's own parser (pydantic models, batch assertion) accepts each stage x precision x offload.

    Without a process group DeepSpeedConfig assumes world size 1, so the configs are generated for 1.
    Costs one deepspeed import (~8 s here); no engine, no extension build.
    """
    deepspeed_config_cls = pytest.importorskip("deepspeed.runtime.config").DeepSpeedConfig
    for (stage, oo, op), precision, accum in itertools.product(STAGES, ["bf16", "fp16", "fp32"], [1, 3]):
        if stage == 0 and precision != "fp32":
            continue  # refused by the config (tests/train/test_engine_adam.py)
        c = cfg(f"engine.zero_stage={stage}", f"engine.offload_optimizer={oo}", f"engine.offload_params={op}",
                f"engine.precision={precision}", f"engine.grad_accum={accum}", "data.batch_size=6")  # fmt: skip
        parsed = deepspeed_config_cls(deepspeed_config(c, 1))
        assert (parsed.train_batch_size, parsed.gradient_accumulation_steps) == (6 * accum, accum)
        assert parsed.zero_optimization_stage == stage
        assert parsed.bfloat16_config.enabled is (precision == "bf16")
        assert parsed.float16_config.enabled is (precision == "fp16")
        assert (parsed.zero_config.offload_optimizer is not None) is oo
        assert (parsed.zero_config.offload_param is not None) is op
        assert parsed.zero_force_ds_cpu_optimizer is not oo
        assert parsed.gradient_clipping == 5.0 and parsed.optimizer_name is None and parsed.scheduler_name is None
        assert parsed.communication_data_type == torch.float32
