"""Shared test set-up: registering the models, deterministic CPU runs."""

import os
import signal
from collections.abc import Iterator

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


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


@pytest.fixture(autouse=True)
def _signal_handlers() -> Iterator[None]:
    """Each test starts with the session's handlers: code run in-process (a job unpickled, a local sweep, a
    training) installs its own, and a later test's forked workers would inherit them."""
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    yield
    for s, handler in before.items():
        if handler is not None and signal.getsignal(s) is not handler:
            signal.signal(s, handler)


# Two threads on a 2-core machine shared with other processes thrash (tests ran 5-20x slower); one
# thread per test process is steady. Tests that need more set it themselves. SWAT_TEST_THREADS runs the
# suite with another count (tests/models/test_portable.py: results must not depend on it).
torch.set_num_threads(int(os.environ.get("SWAT_TEST_THREADS", "1")))
