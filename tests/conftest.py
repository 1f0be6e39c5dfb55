"""Shared test set-up: registering the models, deterministic CPU runs."""

import os

import pytest
import torch

import swat_dist  # noqa: F401  (registers the swat_* models)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``gpu`` tests need CUDA: skipped, and said so, where there is none (CI, the 2-core machines)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run launch/gpu_check.sh on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# Two threads on a 2-core machine shared with other processes thrash (tests ran 5-20x slower); one
# thread per test process is steady. Tests that need more set it themselves. SWAT_TEST_THREADS runs the
# suite with another count (tests/models/test_portable.py: results must not depend on it).
torch.set_num_threads(int(os.environ.get("SWAT_TEST_THREADS", "1")))
