"""Shared test set-up: registering the models, deterministic CPU runs, the test S3 server."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import torch

import swat_dist  # noqa: F401  (registers the swat_* models)

if TYPE_CHECKING:
    from .data.s3server import S3Server


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


@pytest.fixture(autouse=True)
def _object_store_variables() -> Iterator[None]:
    """AWS_* and MLFLOW_S3_* as they were before each test, whatever it or its fixtures set (an autouse
    fixture is torn down last: after a test's own monkeypatch, which would restore s3_server's values)."""
    before = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "MLFLOW_S3_"))}
    yield
    for k in [k for k in os.environ if k.startswith(("AWS_", "MLFLOW_S3_")) and k not in before]:
        del os.environ[k]
    os.environ.update(before)


@pytest.fixture(scope="session")
def s3_server_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible server on 127.0.0.1 (SeaweedFS, ~5-10 s to start), started by the first test
    that asks for it and stopped at the end of the session. It sets no variables: use :func:`s3_server`."""
    from .data.s3server import start  # boto3: imported only by sessions that run a server test

    server = start(tmp_path_factory.mktemp("s3server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_server(s3_server_session: S3Server) -> Iterator[S3Server]:
    """The session's server, its AWS variables set for this test only: a later test that does not ask for
    it sees the environment it would see alone, whatever the order the tests run in."""
    with s3_server_session.environ():
        yield s3_server_session


# Two threads on a 2-core machine shared with other processes thrash (tests ran 5-20x slower); one
# thread per test process is steady. Tests that need more set it themselves. SWAT_TEST_THREADS runs the
# suite with another count (tests/models/test_portable.py: results must not depend on it).
torch.set_num_threads(int(os.environ.get("SWAT_TEST_THREADS", "1")))
