"""Progress for long work: a tqdm bar on a terminal, short plain lines in a log file.

tqdm redraws its bar with carriage returns; written to a file (a Slurm log, ``> run.log``) every
redraw stays, and one "line" grows to thousands of characters. :func:`progress` looks at the stream
it writes to once, when it is made: a terminal gets the bar; anything else gets :class:`PlainProgress`,
one line at the start, one every ``every`` updates (and at most every ``interval_s`` seconds
otherwise), one at the end. Both take ``update``, ``set_postfix`` and ``close`` and are context
managers, so a caller never asks which it has. ``show=False`` (ranks other than 0) prints nothing.

Used by training (:mod:`.train.trainer`), evaluation (:mod:`.train.evaluate`) and ``data verify``.
No torch import: ``data`` and login-node code may use it.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import IO, Any, Protocol

from tqdm import tqdm


class Progress(Protocol):
    """What callers use of a bar: tqdm's own names, so a tqdm bar is one."""

    def update(self, n: int = 1) -> Any: ...
    def set_postfix(self, **kwargs: Any) -> Any: ...
    def close(self) -> Any: ...
    def __enter__(self) -> Any: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Any: ...


def _is_tty(file: IO[str]) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class PlainProgress:
    """Plain progress lines: ``desc n/total unit | postfix | rate | elapsed, ETA``, never a redraw.

    ``every``: a line each time ``n`` reaches a multiple of it (training: optimizer steps); ``interval_s``:
    otherwise a line when that long has passed since the last one (None: never). ``rate_scale`` and
    ``rate_unit`` turn the rate into another unit (training counts steps, reports images/s).
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        *,
        unit: str = "it",
        file: IO[str],
        every: int | None = None,
        interval_s: float | None = None,
        initial: int = 0,
        rate_scale: float = 1.0,
        rate_unit: str | None = None,
        show: bool = True,
    ) -> None:
        if every is not None and every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.total, self.desc, self.unit, self.file = total, desc, unit, file
        self.every, self.interval_s, self.show = every, interval_s, show
        self.rate_scale, self.rate_unit = rate_scale, rate_unit or unit
        self.n = self._initial = initial
        self._t0 = self._last_t = time.monotonic()
        self._postfix: dict[str, Any] = {}
        self._printed: int | None = None  # the n of the last line
        self._closed = False
        self._print(start=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        due_count = self.every is not None and self.n // self.every > (self.n - n) // self.every
        due_time = self.interval_s is not None and now - self._last_t >= self.interval_s
        if due_count or due_time:
            self._print()

    def set_postfix(self, **kwargs: Any) -> None:
        """Shown on the next line (tqdm shows it at once; a log line waits for its cadence)."""
        self._postfix = {k: v for k, v in kwargs.items() if k != "refresh"}

    def close(self) -> None:
        if not self._closed and self._printed != self.n:
            self._print()
        self._closed = True

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def line(self, start: bool = False) -> str:
        total = f"/{self.total}" if self.total is not None else ""
        parts = [f"{self.desc} {self.n}{total} {self.unit}"]
        if self._postfix:
            parts.append(" ".join(f"{k}={v}" for k, v in self._postfix.items()))
        if not start:
            elapsed = time.monotonic() - self._t0
            done = self.n - self._initial
            rate = done / elapsed if elapsed > 0 else 0.0
            parts.append(f"{rate * self.rate_scale:.1f} {self.rate_unit}/s")
            times = f"{tqdm.format_interval(elapsed)} elapsed"
            left = None if self.total is None else self.total - self.n
            if left and rate > 0:
                times += f", ETA {tqdm.format_interval(left / rate)}"
            parts.append(times)
        return " | ".join(parts)

    def _print(self, start: bool = False) -> None:
        self._printed, self._last_t = self.n, time.monotonic()
        if self.show:
            print(self.line(start), file=self.file, flush=True)


def progress(
    total: int | None,
    desc: str,
    *,
    unit: str = "it",
    show: bool = True,
    every: int | None = None,
    interval_s: float | None = 60.0,
    initial: int = 0,
    rate_scale: float = 1.0,
    rate_unit: str | None = None,
    leave: bool = True,
    file: IO[str] | None = None,
) -> Progress:
    """A tqdm bar when ``file`` (default: ``sys.stderr`` now) is a terminal, else a :class:`PlainProgress`.

    ``every``, ``interval_s``, ``rate_*`` apply to the plain lines only; ``leave`` to the bar only.
    """
    out = file if file is not None else sys.stderr
    if _is_tty(out):
        return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=not show, leave=leave, file=out)
    return PlainProgress(
        total, desc, unit=unit, file=out, every=every, interval_s=interval_s, initial=initial,
        rate_scale=rate_scale, rate_unit=rate_unit, show=show,
    )  # fmt: skip
