"""``swat-dist tracking-server`` stops everything it started when told to: SIGTERM (``kill PID``) or SIGINT
(Ctrl-C) closes the port within seconds, leaves no process of the server's tree (mlflow, uvicorn, the job
runner and its huey consumers) and exits as a signal exit would (143 / 130), without a traceback."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import free_port, processes, tree
from .helpers import ROOT

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")

STOP_S = 10.0  # the grace period (5 s) before SIGKILL, and slack for a loaded machine


def _tree(root: int) -> dict[int, str]:
    """The running descendants of ``root``, each with its start time (a pid the kernel reuses is another process)."""
    return {pid: s[19] for pid, s in tree(root).items()}


def _left(started: dict[int, str], groups: set[int]) -> list[int]:
    """What still runs of the processes seen, or of their process groups (zombies waiting for init do not count)."""
    procs = processes()
    return sorted(pid for pid, s in procs.items() if s[0] not in "ZX"
                  and (started.get(pid) == s[19] or int(s[2]) in groups))  # fmt: skip


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _wait_healthy(proc: subprocess.Popen, port: int, log: Path, timeout_s: float = 120) -> None:
    """MLflow answers /health after ~7 s (20 s or more on a busy 2-core machine)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"mlflow server did not answer /health in {timeout_s} s")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _kill_all(started: dict[int, str], groups: set[int]) -> None:
    for group in groups:
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGKILL)
    for pid in _left(started, set()):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["kill", "ctrl-c"])
def test_a_stop_signal_stops_the_server_and_every_process_it_started(tmp_path, signum, code):
    port, log = free_port(), tmp_path / "server.log"
    cmd = [sys.executable, "-m", "swat_dist", "tracking-server", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
           "--artifacts-destination", str(tmp_path / "artifacts")]  # fmt: skip
    # its own session: whatever it leaves behind is never in pytest's process group. SIGINT as a terminal
    # gives it: a suite started in the background by a non-interactive shell (`cmd &`) inherits SIGINT
    # ignored, and the server rightly keeps an ignored signal ignored (tracking/server.py)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_default_sigint)  # fmt: skip
    started: dict[int, str] = {}
    groups = {proc.pid}
    try:
        _wait_healthy(proc, port, log)
        started = _tree(proc.pid)
        groups |= {int(s[2]) for s in tree(proc.pid).values()}
        assert len(started) >= 2, started  # mlflow and uvicorn at least: a tree, not one process
        sent = time.monotonic()
        proc.send_signal(signum)
        assert proc.wait(timeout=STOP_S) == code, log.read_text()[-3000:]
        while (_answers(port) or _left(started, groups)) and time.monotonic() - sent < STOP_S:
            time.sleep(0.1)
        took = time.monotonic() - sent
        assert not _answers(port), f"port {port} still accepts connections {took:.1f} s after {signum.name}"
        assert not _left(started, groups), f"still running {took:.1f} s after {signum.name}: {_left(started, groups)}"
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        _kill_all(started, groups)
        proc.wait(timeout=30)


STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the child inherits the ignore
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("ready", flush=True)
time.sleep(60)
"""

RUN = "import sys; from swat_dist.tracking.server import run_server; sys.exit(run_server(sys.argv[1:], grace_s=1))"


def test_a_server_that_ignores_sigterm_is_killed_after_the_grace_period():
    """The bounded wait: a tree that ignores SIGTERM is SIGKILLed once the grace period (1 s here) is over."""
    cmd = [sys.executable, "-c", RUN, sys.executable, "-c", STUBBORN]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    started: dict[int, str] = {}
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        started = _tree(proc.pid)
        assert len(started) == 2, started  # the stubborn server and its child
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=STOP_S)
        assert proc.returncode == 143 and time.monotonic() - sent < 5, err
        assert "still running after 1 s: killing" in err and "Traceback" not in err, err
        deadline = time.monotonic() + 5
        while _left(started, set()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _left(started, set())
    finally:
        if proc.poll() is None:
            proc.kill()
        _kill_all(started, set())
        proc.wait(timeout=30)
