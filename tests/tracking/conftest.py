"""A real ``mlflow server`` (started through ``swat-dist tracking-server``) on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """Start, kill and restart one server process group on a fixed port and sqlite file."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 90) -> None:
        cmd = [sys.executable, "-m", "swat_dist", "tracking-server", "--port", str(self.port),
               "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
               "--artifacts-destination", str(self.root / "artifacts")]  # fmt: skip
        log = (self.root / "server.log").open("a")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.root / "server.log").read_text()[-3000:]
            try:  # /health answers before the API does: ask the API itself
                url = f"{self.uri}/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.kill()
        raise TimeoutError(f"mlflow server did not answer /health in {timeout_s} s")

    def kill(self) -> None:
        """SIGKILL the wrapper and the server's own process group (mlflow, its workers): an outage, not a
        clean shutdown. A SIGKILL cannot be passed on, so the wrapper's group alone would leave mlflow up."""
        if self.proc is not None and self.proc.poll() is None:
            groups = {self.proc.pid} | {int(s[2]) for s in tree(self.proc.pid).values()}
            for group in groups:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None


def stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after "pid (comm)": state, ppid, pgrp, ...; None once it is gone."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def processes() -> dict[int, list[str]]:
    """Every process's stat fields (see :func:`stat`), by pid; none without /proc (not Linux)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return {}
    return {int(p.name): s for p in proc.iterdir() if p.name.isdigit() and (s := stat(int(p.name)))}


def tree(root: int) -> dict[int, list[str]]:
    """The running (not zombie) descendants of ``root``, with their stat fields."""
    procs, found, todo = processes(), {}, [root]
    while todo:
        parent = todo.pop()
        kids = {pid: s for pid, s in procs.items() if int(s[1]) == parent and s[0] not in "ZX"}
        found.update(kids)
        todo += kids
    return found


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.kill()


@pytest.fixture(autouse=True)
def _no_ambient_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose their store; a developer's MLFLOW_* settings must not leak in."""
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
