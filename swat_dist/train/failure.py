"""A rank that fails says why first: one line on stderr, the traceback in the run folder.

Printed before any teardown, because teardown is where a failed multi-rank job used to go silent: the
failing rank waited in a barrier while the others waited in the step's all-reduce, and nothing was printed
until the 30-minute collective timeout (issue 27). The peers of a failed rank then fail too, in their next
collective; their line says so instead of repeating a transport error as if it were the cause.
"""

from __future__ import annotations

import contextlib
import re
import sys
import traceback
from pathlib import Path

from ..dist import DistEnv

# What a collective raises when another rank has gone (gloo, NCCL): the cause is that rank's own line.
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "NCCL communicator was aborted",
              "ncclRemoteError", "Broken pipe")  # fmt: skip


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


def report(err: BaseException, env: DistEnv, run_dir: Path) -> RankFailed:
    """Print ``err``'s line, write its traceback to ``RUN/failures/rankNNNNN.txt`` (best effort: the
    failure may be that the folder cannot be written) and return the exception to raise instead."""
    text = line(err, env.rank)
    # one write, newline included: print() writes the text and its end separately, and the lines of two
    # ranks failing at once ran together in a shared log
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
    path = run_dir / "failures" / f"rank{env.rank:05d}.txt"
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n\n" + "".join(traceback.format_exception(err)))
    failed = RankFailed(text)
    failed.__cause__ = err
    return failed
