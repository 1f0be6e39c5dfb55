"""The engine steps AdamW exactly: no Adam step before training, and bf16 losses follow fp32 AdamW.

DeepSpeed 0.19.8 wraps a client AdamW at ZeRO-0 in bf16/fp16 in ``FP16_UnfusedOptimizer``, whose
constructor runs one ``optimizer.step()`` on zero gradients: every Adam ``step`` is 1 before training and
the first update is ~0.74x too small (issue 24). On the micro model below (lr 2e-3, 2 ranks x 4) that
wrapper's losses followed fp32 AdamW *with one extra zero-gradient step* (0.0009 apart in 8 steps) and
stood 0.039 from plain fp32 AdamW; bf16 ZeRO 1/2/3 stand 0.002 from it and 0.037 from the extra-step curve.
"""

from __future__ import annotations

import copy
import json
from itertools import product
from pathlib import Path

import pytest
import timm
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from swat_dist.config import load_config
from swat_dist.config_types import ConfigError
from swat_dist.dist import DistEnv

from .test_train_runs import _port

STEPS, LR, WD = 8, 2e-3, 0.05
BASE = ["data.format=synthetic", "model.name=x", "data.batch_size=4", f"optim.lr={LR}", f"optim.weight_decay={WD}",
        "optim.clip_grad=null"]  # fmt: skip
# Every stage x precision the config allows on a CPU (fp16 is refused there), and the defaults.
CASES = [[], *([f"engine.zero_stage={s}", f"engine.precision={p}"] for s, p in product(range(4), ("fp32", "bf16")))]


def _allowed(extra: list[str]) -> bool:
    try:
        load_config([], [*BASE, *extra])
    except ConfigError:
        return False
    return True


def _adam_losses(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, mine: slice, extra_step: bool) -> list:
    """Plain fp32 AdamW on the global batch; the loss of this rank's share before each step."""
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD)
    if extra_step:  # what FP16_UnfusedOptimizer does at construction
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        opt.zero_grad()
    out = []
    for _ in range(STEPS):
        out.append(F.cross_entropy(model(x[mine]), y[mine]).item())
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    return out


def _rank(rank: int, world: int, port: int, result: str) -> None:
    from swat_dist.train import engine as E

    torch.set_num_threads(1)
    env = DistEnv(rank=rank, local_rank=rank, world_size=world, local_world_size=world, master_port=port,
                  launcher="torchrun")  # fmt: skip
    E.init_distributed(env, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(4 * world, 3, 32, 32, generator=gen), torch.randint(0, 10, (4 * world,), generator=gen)
    mine = slice(4 * rank, 4 * rank + 4)
    torch.manual_seed(0)
    base = timm.create_model("swat_deit_micro_patch4_32", num_classes=10, depth=1, drop_path_rate=0.0)
    out: dict = {"plain": _adam_losses(copy.deepcopy(base), x, y, mine, False),
                 "extra": _adam_losses(copy.deepcopy(base), x, y, mine, True), "steps": {}, "losses": {}}  # fmt: skip
    for extra in filter(_allowed, CASES):
        cfg = load_config([], [*BASE, *extra])
        key = f"{cfg.engine.precision} zero{cfg.engine.zero_stage}" + (" (defaults)" if not extra else "")
        model = copy.deepcopy(base)
        engine = E.Engine(model, [{"params": list(model.parameters()), "weight_decay": WD}], cfg, env)
        states = engine.ds.basic_optimizer.state.values()
        out["steps"][key] = sorted({float(s["step"]) for s in states if "step" in s} | {0.0})
        losses = []
        for _ in range(STEPS):
            engine.set_lr(LR)
            loss = F.cross_entropy(engine.forward(x[mine]).float(), y[mine])
            engine.backward(loss)
            engine.step()
            losses.append(loss.item())
        out["losses"][key] = losses
    E.destroy()
    if rank == 0:
        Path(result).write_text(json.dumps(out))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    result = tmp_path_factory.mktemp("adam") / "out.json"
    try:
        mp.spawn(_rank, args=(2, _port(), str(result)), nprocs=2, join=True)
    except mp.ProcessExitedException as err:
        # A 2-rank gloo process on CPU sometimes dies of SIGABRT ("terminate called without an active
        # exception", PLATFORM.md): 1 in ~40 runs of this module here, and it failed one CI run. It is
        # torch/gloo's, not what this module checks, so one more try; any other failure fails at once.
        if err.signal_name != "SIGABRT":
            raise
        mp.spawn(_rank, args=(2, _port(), str(result)), nprocs=2, join=True)
    return json.loads(result.read_text())


def test_no_adam_step_before_training(runs):
    assert len(runs["steps"]) == 8  # the defaults, 4 stages in fp32, 3 in bf16 (stage 0 refuses it)
    assert runs["steps"] == {k: [0.0] for k in runs["steps"]}


def test_losses_follow_fp32_adamw_not_the_extra_step_curve(runs):
    plain, extra = runs["plain"], runs["extra"]
    assert max(abs(a - b) for a, b in zip(plain, extra)) > 0.02  # the two curves are told apart
    for key, losses in runs["losses"].items():
        tol = 1e-4 if key.startswith("fp32") else 1e-2  # bf16: measured 0.002 (2 ranks x 4, 8 steps)
        assert max(abs(a - b) for a, b in zip(losses, plain)) < tol, (key, losses, plain)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_stage_0_refuses_low_precision(precision):
    why = r"engine.zero_stage must be >= 1 with engine.precision .*FP16_UnfusedOptimizer.*\(got 0\)"
    with pytest.raises(ConfigError, match=why):
        load_config([], [*BASE, "engine.zero_stage=0", f"engine.precision={precision}"])
