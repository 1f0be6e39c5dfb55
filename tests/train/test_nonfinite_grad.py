"""A step whose gradient norm is not finite stops the run in one line, with no checkpoint of it (issue 27).

The loss stays finite: at micro-step ``at`` the poisoned loss adds ``sqrt(|0 * sum(logits)|)``, which is 0
but has a nan gradient, so only the gradient norm shows it. Before the guard, ZeRO-1 in fp32 and bf16
trained on without a word (measured: DeepSpeed skips such an update as an overflow, the loop counted it as
a step and checkpointed it); at stage 0 the client AdamW applies it and the weights become nan.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from swat_dist.config import load_config
from swat_dist.dist import DistEnv
from swat_dist.train.checkpoint_paths import latest_tag

from .test_train_runs import _port, overrides


def _rank(rank: int, world: int, port: int, args: list[str], at: int, result: str) -> None:
    from swat_dist.train import run as R
    from swat_dist.train.trainer import NonFiniteLoss

    original = R.build_task

    def build_task(cfg, augment):  # type: ignore[no-untyped-def]
        task, calls = original(cfg, augment), [0]
        loss = task.loss

        def poisoned(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            calls[0] += 1
            out = loss(logits, y)
            return out + (logits.float().sum() * 0).abs().sqrt() if calls[0] == at else out

        task.loss = poisoned
        return task

    R.build_task = build_task
    torch.set_num_threads(1)
    env = DistEnv(rank=rank, local_rank=rank, world_size=world, local_world_size=world, master_port=port,
                  launcher="torchrun")  # fmt: skip
    try:
        R.run(load_config([], args), env)
        outcome = {"error": None}
    except NonFiniteLoss as err:
        outcome = {"error": type(err).__name__, "message": str(err)}
    if rank == 0:
        Path(result).write_text(json.dumps(outcome))


# at 4: a checkpoint step, the save refuses; at 3: the next micro-step's flags stop it
@pytest.mark.parametrize("stage,precision,at", [(0, "fp32", 4), (1, "bf16", 4), (3, "fp32", 4), (1, "fp32", 3)])
def test_a_non_finite_gradient_norm_stops_without_a_checkpoint_of_it(stage, precision, at, tmp_path):
    out, result = tmp_path / "run", tmp_path / "result.json"
    args = overrides(out, f"engine.precision={precision}", f"engine.zero_stage={stage}", "checkpoint.every_steps=2",
                     "checkpoint.keep_last=5", "ema.enabled=false")  # fmt: skip
    mp.spawn(_rank, args=(2, _port(), args, at, str(result)), nprocs=2, join=True)
    outcome = json.loads(result.read_text())
    assert outcome["error"] == "NonFiniteGradNorm", outcome
    assert f"the gradient norm was not finite at step {at}; stopped without saving" in outcome["message"]
    ckpts = out / "checkpoints"
    assert f"Last good checkpoint: step 2 in {ckpts}" in outcome["message"]
    assert latest_tag(ckpts) == "step_00000002"
    assert sorted(p.name for p in ckpts.iterdir() if p.name.startswith("step_")) == ["step_00000002"]
