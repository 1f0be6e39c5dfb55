"""Shared test set-up: registering the models, deterministic CPU runs."""

import pytest
import torch

import swat_dist  # noqa: F401  (registers the swat_* models)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# Two threads on a 2-core machine shared with other processes thrash (tests ran 5-20x slower); one
# thread per test process is steady. Tests that need more set it themselves.
torch.set_num_threads(1)
