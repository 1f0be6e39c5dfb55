"""A rank that fails says why first: one line on stderr, the traceback in the run folder (:class:`Start`).

Printed before any teardown, because teardown is where a failed multi-rank job used to go silent: the
failing rank waited in a barrier while the others waited in the step's all-reduce, and nothing was printed
until the 30-minute collective timeout (issue 27). The peers of a failed rank then fail too, in their next
collective; their line says so instead of repeating a transport error as if it were the cause.

Said once: an error every rank raises alike (a data path, a model setting) is printed by rank 0 only. Each
failing rank posts what it would say in the process group's store (a key-value server every rank already
talks to: torchrun's agent, else rank 0); a rank other than 0 waits up to :data:`HEAR_S` for rank 0's post
and stays silent if it is the same, else prints its own - so a failure of rank 1 alone still prints, up to
:data:`HEAR_S` later. Without the store (before the group exists, or if rank 0 has gone) every rank prints.
Under torchrun each failing rank also writes its line to torchelastic's error file, so torchrun's summary
names the cause instead of "To enable traceback see: ..."; torchrun's own Python traceback
(``ChildFailedError``, raised by the launcher process whenever a worker exits non-zero) cannot be avoided
from a worker.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import traceback
from datetime import timedelta
from pathlib import Path

from ..dist import DistEnv, tell_launcher

# What a collective raises when another rank has gone (gloo, NCCL): the cause is that rank's own line.
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "NCCL communicator was aborted",
              "ncclRemoteError", "Broken pipe")  # fmt: skip
HEAR_S = 5.0  # how long a rank other than 0 waits for rank 0's post before printing its own line
_KEY = "swat_dist/failed/"


class Start:
    """Whether a failure leaves the run folder behind. A start that fails before it is set up (a bad data
    path at loader build, a model setting) in a folder it made leaves nothing, as timm
    (which makes its folder after the loaders) and Lightning (at its first log) do: its tracebacks go to
    temporary files named in the printed line, and rank 0 removes the folder once the group is left. Set up
    (the tracker is next: an MLflow run may point at the folder), or in a folder that was there, everything
    stays and the tracebacks go to ``RUN/failures/``. Cost: one broadcast per start."""

    SOLE = {"config.yaml", "run.lock"}  # what a start writes before it is set up; anything else is kept

    def __init__(self) -> None:
        self.made: list[Path] = []  # rank 0: the run folder and each missing parent, innermost first
        self.fresh = False  # every rank: the folder did not exist when this start began
        self.set_up = False

    def look(self, run_dir: Path, env: DistEnv) -> None:
        from .. import collectives

        if env.is_main:
            self.made = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
        self.fresh = bool(collectives.broadcast_object(bool(self.made) if env.is_main else None))

    @property
    def leaves_nothing(self) -> bool:
        return self.fresh and not self.set_up

    def clean_up(self, env: DistEnv) -> None:
        """Rank 0, after a failure: remove the folders this start made, if they hold nothing else."""
        if not (env.is_main and self.leaves_nothing):
            return
        with contextlib.suppress(OSError):
            run_dir = self.made[0]
            if run_dir.is_dir():
                entries = list(run_dir.iterdir())
                if any(e.name not in self.SOLE and not (e.is_dir() and not any(e.iterdir())) for e in entries):
                    return  # something we did not expect: a user would want to see it
                for e in entries:
                    e.rmdir() if e.is_dir() else e.unlink()
            for folder in self.made:  # innermost first; a parent something else wrote into stays
                folder.rmdir()


class RankFailed(RuntimeError):
    """This rank raised ``__cause__``; its line is printed (:func:`report`) and the group is left."""


def _where(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"


def _said(err: BaseException) -> tuple[str, str]:
    """(``Type: first message line``, ``file:line``) of what went wrong. A DataLoader worker's exception
    arrives re-raised with the worker's traceback as its text: the worker's own last line and frame then."""
    text = str(err).strip()
    if "Original Traceback" in text:
        files = re.findall(r'File "([^"]+)", line (\d+)', text)
        where = f"{Path(files[-1][0]).name}:{files[-1][1]}" if files else _where(err)
        return text.splitlines()[-1], where
    return f"{type(err).__name__}: {(text.splitlines() or [''])[0]}", _where(err)


def lost_peer(err: BaseException) -> bool:
    return any(mark in str(err) for mark in _PEER_GONE)


def line(err: BaseException, rank: int) -> str:
    """One line: the rank, the exception and where it was raised (its first message line only)."""
    what, where = _said(err)
    if lost_peer(err):
        return (f"swat-dist train: rank {rank} stopped: another rank left the job ({what}); "
                "the first failing rank's line above says why")  # fmt: skip
    return f"swat-dist train: rank {rank} failed: {what} ({where})"


_LOST = "another rank left"


def _what(err: BaseException) -> str:
    """What a failure says whatever the rank: compared across ranks to print it once."""
    return _LOST if lost_peer(err) else " ".join(_said(err))


def _said_by_rank0(what: str, heard: str | None) -> bool:
    """Rank 0 printed the same, or printed something while we only lost a peer (its line, or the cause's, is
    above: at 512 ranks, 511 "another rank left" lines would bury it)."""
    return heard == what or (heard is not None and what == _LOST)


def _rank0_says(what: str, env: DistEnv) -> str | None:
    """Post ``what`` in the group's store; on a rank other than 0, what rank 0 posted (None: nothing heard)."""
    if not env.distributed:
        return None
    try:
        import torch.distributed as tdist

        store = tdist.distributed_c10d._get_default_store()  # no public getter in torch 2.14
        key = f"{_KEY}{env.elastic_attempt}/"  # torchrun's store outlives a restart of its workers
        store.set(f"{key}{env.rank}", what)
        if env.rank == 0:
            return None
        store.wait([f"{key}0"], timedelta(seconds=HEAR_S))
        return bytes(store.get(f"{key}0")).decode()
    except Exception:  # no group yet, rank 0 silent (not failing) or gone: print our own line
        return None


def _keep_traceback(err: BaseException, text: str, env: DistEnv, run_dir: Path, in_run: bool) -> Path | None:
    """Write the traceback to ``RUN/failures/rankNNNNN.txt`` (``in_run``), else to a temporary file (a start
    whose folder is removed: :class:`Start`). Best effort: the folder may be what failed."""
    body = text + "\n\n" + "".join(traceback.format_exception(err))
    with contextlib.suppress(OSError):
        if in_run:
            path = run_dir / "failures" / f"rank{env.rank:05d}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
            return path
        fd, name = tempfile.mkstemp(prefix=f"swat-dist-{run_dir.name}-rank{env.rank:05d}-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(body)
        return Path(name)
    return None


def report(err: BaseException, env: DistEnv, run_dir: Path, in_run: bool = True) -> RankFailed:
    """Print ``err``'s line (once for the ranks that fail alike), keep its traceback (:func:`_keep_traceback`)
    and return the exception to raise instead. ``in_run=False``: a start whose folder goes; the line then
    names the traceback's file."""
    text = line(err, env.rank)
    kept = _keep_traceback(err, text, env, run_dir, in_run)
    shown = text if in_run or kept is None else f"{text}; traceback: {kept}"
    tell_launcher(env, text)
    what = _what(err)
    if env.rank == 0 or not _said_by_rank0(what, _rank0_says(what, env)):
        # one write, newline included: print() writes the text and its end separately, and the lines of two
        # ranks failing at once ran together in a shared log
        sys.stderr.write(shown + "\n")
        sys.stderr.flush()
    if env.rank == 0:
        _rank0_says(what, env)  # after printing: the others wait for this post, not for our line
    failed = RankFailed(text)
    failed.__cause__ = err
    return failed
