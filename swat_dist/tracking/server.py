"""Run ``mlflow server`` as a process group of its own, and stop all of it when ``tracking-server`` is told to.

``mlflow server`` is a tree: the ``mlflow`` process, the uvicorn server holding the port, and a job runner
with its huey consumers. Stopping only the process we started leaves the rest listening on the port, so the
tree runs in a session (and process group) of its own, a stop goes to the whole group, and what is still
there after a grace period is killed. The group's id is the pid of the process we started.

Stdlib only: `swat-dist tracking-server` runs on a login node (boto3 is imported only to check an
``s3://`` artifact destination, by :func:`check_artifacts_destination`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# SIGHUP too: in its own session the server no longer gets the terminal's hangup, so a closed SSH session
# must reach it through us. A signal ignored when we start (nohup; `&` in a script ignores SIGINT) stays ignored.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# mlflow, uvicorn and huey exit ~1 s after SIGTERM (measured, 2 cores shared); the rest is for a loaded machine.
STOP_GRACE_S = 5.0
POLL_S = 0.1


def check_artifacts_destination(destination: str) -> None:
    """An ``s3://bucket/prefix`` destination is checked before the server starts: MLflow itself starts
    with any bucket and fails only when a run uploads its first artifact, each upload on its own, after
    training. The server reaches the store as every AWS SDK does (``AWS_ENDPOINT_URL`` or
    ``MLFLOW_S3_ENDPOINT_URL``, keys from ``AWS_*`` or ``~/.aws``), and so does this check; with
    ``--serve-artifacts`` the training jobs upload through the server and need no keys. One listing request
    (up to 5 s of retries where the endpoint does not answer). Other URLs are MLflow's to read."""
    from ..data.sources.location import S3Location, parse_location  # string work only

    try:
        where = parse_location(destination, "--artifacts-destination")
    except ValueError:  # gs://, wasbs://, hdfs://, ...: MLflow has stores for them that we do not read
        return
    if not isinstance(where, S3Location):
        return
    from ..data.sources.object_store import ObjectStore  # boto3: for an s3:// destination only

    saved = os.environ.get("AWS_ENDPOINT_URL")
    if os.environ.get("MLFLOW_S3_ENDPOINT_URL"):  # MLflow's own name wins over AWS_ENDPOINT_URL in its client
        os.environ["AWS_ENDPOINT_URL"] = os.environ["MLFLOW_S3_ENDPOINT_URL"]
    try:
        ObjectStore(where).check()
    except ValueError as err:
        raise ValueError(f"--artifacts-destination {err}") from None
    finally:
        if saved is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = saved


class _Stop(Exception):  # a signal that ends the wait, as KeyboardInterrupt ends one on Ctrl-C
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _OnSignal:
    """The handler of the stop signals: the first ends the wait for the server, a later one (an impatient
    second Ctrl-C) kills the group at once instead of waiting out the grace period."""

    def __init__(self) -> None:
        self.pgid: int | None = None
        self.waiting = True

    def __call__(self, signum: int, _frame: object) -> None:
        if self.waiting:
            self.waiting = False
            raise _Stop(signum)
        if self.pgid is not None:
            _signal_group(self.pgid, signal.SIGKILL)


def run_server(cmd: list[str], grace_s: float = STOP_GRACE_S) -> int:
    """Run ``cmd`` until it exits, or until SIGINT / SIGTERM / SIGHUP stops it and everything it started.

    The stop goes to the server's whole process group (as SIGTERM, see :func:`stop_group`), which gets
    ``grace_s`` to exit before SIGKILL (a second signal skips the wait); a server that ends on its own
    has what it left behind stopped the same way. Returns the server's exit status, or 128 + the signal
    number (130 for Ctrl-C, 143 for ``kill``) as a shell reports a process that a signal ended.
    """
    handler, old = _OnSignal(), {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        if old[s] is not signal.SIG_IGN:
            signal.signal(s, handler)
    try:
        # A signal during Popen itself would leave a started server behind; the window is microseconds.
        proc = subprocess.Popen(cmd, start_new_session=True)
        handler.pgid = proc.pid  # start_new_session: its pid names its group
        try:
            code, why = exit_status(proc.wait()), "the server exited"
            handler.waiting = False  # a signal from here on only hurries the stop below
        except _Stop as stop:
            code, why = 128 + stop.signum, signal.Signals(stop.signum).name
        if group_alive(proc.pid):
            stop_group(proc, why, grace_s)
        return code
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def stop_group(proc: subprocess.Popen, why: str, grace_s: float) -> None:
    """SIGTERM ``proc``'s process group; after ``grace_s`` SIGKILL whatever of it still runs.

    SIGTERM whatever stopped us: it is "stop now, cleanly" to uvicorn, huey and Python alike, while a
    forwarded SIGINT makes each of the ~10 Python processes print a KeyboardInterrupt traceback and tells
    huey to finish its running tasks first (measured: 5 s then SIGKILL, against ~1 s for SIGTERM).
    """
    print(f"[tracking] {why}: stopping the MLflow server and its workers (process group {proc.pid})",
          file=sys.stderr, flush=True)  # fmt: skip
    _signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while group_alive(proc.pid) and time.monotonic() < deadline:
        proc.poll()  # reap the leader: a zombie still counts as a member of its group
        time.sleep(POLL_S)
    if group_alive(proc.pid):
        print(f"[tracking] still running after {grace_s:.0f} s: killing the MLflow server's processes",
              file=sys.stderr, flush=True)  # fmt: skip
        _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is already gone
        os.killpg(pgid, signum)


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still runs. Zombies do not count: an orphan of the group waits
    for init to reap it (up to ~2 s measured here), long after it closed its sockets."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal (it changed user): it exists
        return True
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: killpg's answer, zombies included
        return True
    return any(_live_member(p / "stat", pgid) for p in proc.iterdir() if p.name.isdigit())


def _live_member(stat: Path, pgid: int) -> bool:
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ...
    except (OSError, IndexError):  # it exited while we looked
        return False
    return fields[0] not in ("Z", "X") and int(fields[2]) == pgid


def exit_status(code: int) -> int:
    """A Popen return code as a shell reports it: -N (ended by signal N) becomes 128 + N."""
    return 128 - code if code < 0 else code
