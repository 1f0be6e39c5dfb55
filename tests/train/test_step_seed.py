"""Device-side randomness per micro-batch (drop-path, dropout, erasing, mixup): seeded from the micro-batch's
global sample position, on the generator of the device the step runs on (issue 24).

On CUDA those draws come from the CUDA generator, which starts from the same default seed on every rank:
seeding only the CPU one gave every rank the same stochastic-depth masks. These checks run on the CPU
through the same functions the CUDA path calls; tests/gpu/test_cuda.py repeats them on a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from swat_dist.data.loaders import seeds
from swat_dist.data.loaders.plan import TrainPlan, sample_position
from swat_dist.data.loaders.seeds import device_generator, seed_everything
from swat_dist.train.trainer import step_seed


@pytest.mark.parametrize("world,batch", [(1, 4), (2, 4), (3, 2), (8, 16)])
def test_sample_position_is_where_the_plan_starts_the_micro_batch(world, batch):
    order = np.random.default_rng(0).permutation(1000)
    for rank in range(world):
        plan = TrainPlan(order, world, rank, batch)
        for step in range(plan.steps):
            assert plan.batch(step)[0] == order[sample_position(step, world, rank, batch)]


def test_the_seed_follows_the_sample_not_the_rank():
    """2 ranks x 4 at step s hand out what 1 rank x 4 (accumulation 2) does at steps 2s and 2s + 1: the
    same seeds, so an elastic resume keeps the noise; within a layout every rank gets its own."""
    for epoch in range(2):
        two = [[step_seed(0, epoch, sample_position(s, 2, r, 4)) for r in range(2)] for s in range(8)]
        one = [[step_seed(0, epoch, sample_position(2 * s + r, 1, 0, 4)) for r in range(2)] for s in range(8)]
        assert two == one
        assert len({x for row in two for x in row}) == 16  # all different: per rank, per step
    assert step_seed(0, 0, 0) != step_seed(0, 1, 0) != step_seed(1, 1, 0)


def test_seeding_reaches_the_generator_of_the_step_device():
    cpu = torch.device("cpu")
    assert device_generator(cpu) is torch.default_generator
    seed_everything(7, cpu)
    a = torch.rand(5, device=cpu)
    seed_everything(8, cpu)
    b = torch.rand(5, device=cpu)
    seed_everything(7, cpu)
    assert torch.equal(torch.rand(5, device=cpu), a) and not torch.equal(a, b)
    with pytest.raises(ValueError, match="no default generator known for device meta"):
        device_generator(torch.device("meta"))


def test_a_cuda_step_seeds_the_cuda_generator_of_its_device(monkeypatch):
    """The trainer passes the engine's device; a CUDA device's generator is seeded (faked here: no GPU)."""

    class Recorder:
        def __init__(self) -> None:
            self.seeds: list[int] = []

        def manual_seed(self, value: int) -> None:
            self.seeds.append(value)

    made: dict[str, Recorder] = {}
    monkeypatch.setattr(seeds, "device_generator", lambda d: made.setdefault(str(d), Recorder()))
    seed_everything(11, torch.device("cuda", 1))
    seed_everything(12, torch.device("cpu"))  # the CPU generator is seeded anyway: no second call
    assert {k: v.seeds for k, v in made.items()} == {"cuda:1": [11]}
