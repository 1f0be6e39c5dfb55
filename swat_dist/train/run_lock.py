"""One run per folder: rank 0 holds ``RUN/run.lock`` for the run's life, and a second start is refused.

Two trainings in one ``output_dir`` delete each other's step folders and append to one ``metrics.jsonl``.
The lock is a file, not ``flock`` (absent or unreliable on NFS), and it says who holds it: host, pid, the
process's start time, Slurm job id and restart count. So a refusal names the holder, and a lock left by a
killed process (SIGKILL, a lost node: nothing ran to remove it) is told apart from a live one:

- same Slurm job id, lower restart count: an earlier attempt of this job (a requeue, perhaps now on another
  node; Slurm ends every task of an attempt before it requeues): taken over;
- same host, pid not running (or running another process, told by its start time): taken over;
- anything else may be alive: refused in one line. A holder on another host cannot be checked from here
  (pids are per host), and the line says how to remove its lock once you know it is gone.

Created with ``O_CREAT | O_EXCL`` (exclusive on local filesystems and NFSv3+), its record written and fsynced
at once; a requeue's takeover rewrites it with :func:`~swat_dist.files.atomic_write`. Removed when the run
ends (any return or exception), if it still holds our record. Advisory: it stops our own starts, not
someone deleting files. Cost: a few small file operations and one broadcast per start.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import collectives
from ..dist import DistEnv
from ..files import atomic_write

LOCK = "run.lock"
WRITE_GRACE_S = 2.0  # an O_EXCL create is followed at once by its ~200-byte record: wait this long for it


class FolderInUse(ValueError):
    """Another run holds (or may hold) the run folder; raised on every rank."""


@dataclass(frozen=True)
class Held:
    path: Path
    record: dict[str, Any]


def _start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, /proc/PID/stat field 22); None without /proc. A pid the
    kernel gave to another process since has another start."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _running(pid: int, started: int | None) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence only
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    now = _start_ticks(pid)
    return started is None or now is None or now == started


def record_of(env: DistEnv) -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": _start_ticks(pid), "job_id": env.job_id,
            "restart": env.restart_count, "since": time.strftime("%Y-%m-%d %H:%M:%S %z")}  # fmt: skip


def _text(record: dict[str, Any]) -> str:
    return json.dumps(record) + "\n"


def _create(path: Path, record: dict[str, Any]) -> bool:
    """Create ``path`` holding ``record`` unless it exists; True when it is ours."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(_text(record))
        f.flush()
        os.fsync(f.fileno())
    return True


def _read(path: Path) -> dict[str, Any] | None:
    """The lock's record; None when the lock is gone. A FolderInUse when it stays unreadable."""
    deadline = time.monotonic() + WRITE_GRACE_S
    while True:
        try:
            record = json.loads(path.read_text())
            if isinstance(record, dict) and {"host", "pid"} <= record.keys():
                return record
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise FolderInUse(
                f"run folder {path.parent} has a lock {path} whose holder cannot be read (a start that died "
                f"while writing it?): if no run is using the folder, remove it (rm {path}) and start again"
            )
        time.sleep(0.1)


def _who(record: dict[str, Any]) -> str:
    job = f", Slurm job {record['job_id']}" if record.get("job_id") else ""
    return f"pid {record['pid']} on {record['host']}{job}, since {record.get('since', '?')}"


def _stale(held: dict[str, Any], me: dict[str, Any]) -> str | None:
    """Why ``held`` is a lock nobody holds any more, or None when its holder may be alive."""
    if held.get("job_id") and held["job_id"] == me["job_id"] and int(held.get("restart") or 0) < me["restart"]:
        return f"an earlier attempt (restart {held.get('restart') or 0}) of this Slurm job"
    if held["host"] == me["host"] and not _running(int(held["pid"]), held.get("started")):
        return "that process is no longer running"
    return None


def _refusal(path: Path, held: dict[str, Any], me: dict[str, Any]) -> str:
    line = (f"run folder {path.parent} is in use by {_who(held)}: two runs in one folder delete each other's "
            "checkpoints; give this run another output_dir (or name=), or wait for that one to end")  # fmt: skip
    if held["host"] != me["host"]:
        line += (f"; {me['host']} cannot check a pid on {held['host']}: if that run is gone (killed, its node "
                 f"lost), remove the lock (rm {path}) and start again")  # fmt: skip
    return line


def _take_over(path: Path, held: dict[str, Any], me: dict[str, Any], why: str) -> bool:
    """Replace the stale lock ``held`` by ours; False when another start changed it first (look again)."""
    if held.get("job_id") and held["job_id"] == me["job_id"]:
        # our own job's earlier attempt: no other job can claim the lock meanwhile, so rewrite it in place
        atomic_write(path, _text(me))
    else:
        # Moved aside, then created afresh: of several starts that judged it stale only one moves it. One
        # that read it before another's takeover and moves it after would move a live lock: it sees the
        # record differ and puts it back (a link: exclusive, never over a third start's lock).
        aside = path.with_name(f".{path.name}.stale-{me['host']}-{me['pid']}")
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            return False
        try:
            if _read(aside) != held:
                os.link(aside, path)
                return False
        except FileExistsError:
            return False
        finally:
            aside.unlink(missing_ok=True)
        if not _create(path, me):
            return False
    print(f"[swat-dist] took over {path} from {_who(held)}: {why}", flush=True)
    return True


def acquire(run_dir: Path, env: DistEnv) -> Held:
    """Take ``run_dir/run.lock`` for this process; FolderInUse (one line, naming the holder) when a run that
    may be alive holds it."""
    path, me = run_dir / LOCK, record_of(env)
    run_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(5):  # each pass loses only to another start that changed the lock meanwhile
        if _create(path, me):
            return Held(path, me)
        held = _read(path)
        if held is None:  # released between our two calls
            continue
        why = _stale(held, me)
        if why is None:
            raise FolderInUse(_refusal(path, held, me))
        if _take_over(path, held, me, why):
            return Held(path, me)
    raise FolderInUse(f"run folder {run_dir}: other starts keep changing {path}; is more than one run starting?")


def release(held: Held | None) -> None:
    """Remove the lock if it is still ours (a lock taken over from us is the new holder's)."""
    if held is None:
        return
    try:
        if json.loads(held.path.read_text()) == held.record:
            held.path.unlink()
    except (OSError, ValueError):
        pass


def take(run_dir: Path, env: DistEnv) -> Held | None:
    """Collective: rank 0 takes the lock and every rank learns the outcome, so all start or all stop (with
    the same FolderInUse) at once, none waiting in a later collective. Rank 0 gets what :func:`release` takes."""
    held, refusal = None, None
    if env.is_main:
        try:
            held = acquire(run_dir, env)
        except FolderInUse as err:
            refusal = str(err)
        except OSError as err:  # an unwritable folder: every rank stops, none waits for rank 0
            refusal = f"cannot create {run_dir / LOCK}: {err}"
    refusal = collectives.broadcast_object(refusal)
    if refusal is not None:
        raise FolderInUse(refusal)
    return held
