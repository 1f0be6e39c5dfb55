"""Preemption as a flag: the signal handler only records that a stop was asked for; the loop does the rest.

Slurm warns a job before its time limit or a preemption with a signal (``--signal=USR2@LEAD``; USR2
because NCCL owns USR1). Doing work inside a signal handler is what breaks other tools: submitit's
``checkpoint()`` runs on rank 0 only, so it cannot drive a collective DeepSpeed save, and a handler that
does I/O can interrupt a collective half-way. Here the handler sets a flag and returns. The trainer ORs
the flag into the small all-reduce it already does per micro-batch, so every rank learns of the stop at
the same micro-batch, finishes that optimizer step, writes one collective checkpoint and leaves
:meth:`Trainer.fit`. What happens next (requeue through submitit, or a clean exit) is the launcher's job,
which is why the handler that was installed before ours (submitit's) is kept: :func:`previous` returns it.

Cost: nothing per step beyond one more float in an all-reduce that happens anyway.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

Handler = Callable[[int, FrameType | None], Any] | int | None

_asked: dict[str, int | None] = {"signal": None}
_interrupts = {"count": 0}  # SIGINTs seen: the second one exits at once
_previous: dict[int, Handler] = {}


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # No I/O, no locks, no logging: only a store, so it is safe at any point of the interrupted code.
    _asked["signal"] = signum


def signal_number(name: str | int) -> int:
    """``'USR2'``, ``'SIGUSR2'`` or ``12`` -> the signal number; ValueError naming the setting otherwise."""
    if isinstance(name, int):
        return int(signal.Signals(name))
    key = name.upper() if name.upper().startswith("SIG") else "SIG" + name.upper()
    try:
        return int(signal.Signals[key])
    except KeyError:
        raise ValueError(f"signal: {name!r} is not a signal name (e.g. USR2, TERM)") from None


def install(sig: str | int = "USR2") -> int:
    """Make ``sig`` set the stop flag in this process; keep the handler it replaces (see :func:`previous`)."""
    signum = signal_number(sig)
    old = signal.signal(signum, _on_signal)
    if old is not _on_signal:  # installing twice must not lose the original handler
        _previous[signum] = old
    return signum


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    # Ctrl-C or kill: a stop request like a preemption's; the first stop signal is the one reported.
    # A second Ctrl-C is "now": os._exit skips the save and every cleanup, by design (no traceback either).
    if signum == signal.SIGINT:
        _interrupts["count"] += 1
        if _interrupts["count"] >= 2:
            os._exit(128 + signal.SIGINT)
    if _asked["signal"] is None:
        _asked["signal"] = signum


def install_interrupts() -> None:
    """SIGINT and SIGTERM stop ``swat-dist train`` like a preemption: the flag, one collective save at the
    next optimizer step, a clean exit (130 / 143). Under torchrun a Ctrl-C reaches every rank as SIGINT and
    torchrun then sends SIGTERM (30 s before SIGKILL): one stop, not two. A second SIGINT exits at once."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_interrupt)


def requested() -> bool:
    """True once a stop signal arrived in this process (the trainer agrees on it across ranks)."""
    return _asked["signal"] is not None


def received() -> int | None:
    """The number of the stop signal that arrived, if any."""
    return _asked["signal"]


def previous(signum: int) -> Handler:
    """The handler :func:`install` replaced for ``signum`` (e.g. submitit's requeue handler)."""
    return _previous.get(signum)


def request(signum: int = int(signal.SIGUSR2)) -> None:
    """Ask for a stop without a signal (tests, or code that decides to stop)."""
    _asked["signal"] = signum


def reset() -> None:
    """Forget a stop request (a new run in the same process)."""
    _asked["signal"] = None
    _interrupts["count"] = 0
