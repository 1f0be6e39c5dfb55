"""Deliver tracking calls from a background thread so that no training step waits on the network.

The training thread only appends to an in-memory queue (microseconds). One daemon thread opens the run,
then sends the queue head in order, coalescing consecutive metric records into batches. When a send
fails with a transient error (server down, timeout, locked database) the head stays queued, one warning
is printed for the outage, and the thread retries with a capped exponential backoff; when the store
answers again everything queued goes out in order. Errors the store will never accept (a bad value) drop
that one batch with a warning instead of blocking the queue forever. ``close`` waits a bounded time for
the queue to drain, and no longer than one last attempt when the run was never opened.

Costs: memory grows with an outage (~200 bytes per metric value: a 1-hour outage at 15 metrics every 10
steps of 5 steps/s is ~5 MB); ``metrics.jsonl`` keeps every value on disk regardless.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..redact import redact_text

MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit
SHORT_ERROR_CHARS = 200  # of an error's text in a warning (an MLflow connection error is ~370)


@dataclass
class Item:
    """One queued call: ``kind`` is metrics | params | tags | artifacts | end."""

    kind: str
    payload: Any
    points: int = field(default=0)  # metric values in it (for coalescing and the final report)


class Backend(Protocol):
    """A tracking store seen from the worker thread; every call may raise."""

    def open(self) -> str: ...

    def send(self, items: list[Item]) -> None: ...

    def transient(self, err: BaseException) -> bool: ...


def warn(message: str) -> None:
    print(f"[tracking] warning: {message}", file=sys.stderr, flush=True)


def note(message: str) -> None:
    print(f"[tracking] {message}", file=sys.stderr, flush=True)


class Sender:
    """The queue and its worker thread. ``put`` never blocks on the store; ``close`` waits a bounded time."""

    def __init__(
        self, backend: Backend, where: str, backoff_s: tuple[float, float] = (1.0, 15.0), linger_s: float = 1.0
    ) -> None:
        self.backend, self.where, self.linger_s = backend, where, linger_s
        self.run_id: str | None = None
        self.dropped = 0  # metric values refused by the store for good
        self.attempted = threading.Event()  # set after the first attempt to open the run, good or bad
        self._queue: deque[Item] = deque()
        self._points = 0  # metric values in the queue
        self._cond = threading.Condition()
        self._closing = False
        self._backoff_lo, self._backoff_hi = backoff_s
        self._down_since: float | None = None
        self._attempts = 0  # failed attempts in the current outage
        self._thread = threading.Thread(target=self._work, name="swat-tracking", daemon=True)
        self._thread.start()

    def put(self, item: Item) -> None:
        with self._cond:
            self._queue.append(item)
            self._points += item.points
            self._cond.notify()

    def pending(self) -> list[Item]:
        with self._cond:
            return list(self._queue)

    def close(self, timeout_s: float) -> list[Item]:
        """Let the worker drain the queue for at most ``timeout_s``; return what it could not send.

        A run never opened gets one more attempt (the backoff is cut to its shortest once closing), then
        everything comes back unsent without waiting out ``timeout_s``."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout_s)
        return self.pending()

    # -- the worker thread -------------------------------------------------------------------------

    def _work(self) -> None:
        if not self._open():
            return  # closing, and no run to send to: ``close`` returns at once with everything queued
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                self._linger()
                batch = self._head()
            try:
                self.backend.send(batch)
            except Exception as err:
                if self.backend.transient(err):
                    self._failed(err, "sending")
                    self._pause()
                    continue
                self.dropped += sum(i.points for i in batch)
                warn(f"{self.where} refused {[i.kind for i in batch]} ({_short(err)}); dropped, training goes on")
            self._recovered()
            with self._cond:
                for _ in batch:
                    self._points -= self._queue.popleft().points

    def _open(self) -> bool:
        """Open the run, retrying through an outage; False once an attempt begun after ``close`` failed too.

        A store that never answered gets that one last try (a server started late is still caught), not
        the whole flush timeout: with nowhere to send, waiting cannot deliver anything.
        """
        while True:
            closing = self._closing  # read before the attempt: one full attempt after close, not a cut-short one
            try:
                self.run_id = self.backend.open()
                self._recovered()
                return True
            except Exception as err:  # any failure of the store must not end the thread
                self._failed(err, "opening the run")
            finally:
                self.attempted.set()
            if closing:
                return False
            self._pause()

    def _linger(self) -> None:
        """Let a batch fill for up to ``linger_s`` (the lock is held; ``wait`` releases it). One store round
        trip per second instead of one per logged step: with a sqlite store and a step logged every 40 ms,
        sending at once cost a quarter of the training throughput on 2 CPU cores (GIL and CPU)."""
        deadline = time.monotonic() + self.linger_s
        while not self._closing and self._points < MAX_METRICS_PER_BATCH and self._queue[-1].kind == "metrics":
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _head(self) -> list[Item]:
        """The queue's first item, plus the metric items right behind it while a batch has room."""
        batch = [self._queue[0]]
        if batch[0].kind != "metrics":
            return batch
        points = batch[0].points
        for item in itertools.islice(self._queue, 1, None):  # stops at the first misfit: O(batch), not O(queue)
            if item.kind != "metrics" or points + item.points > MAX_METRICS_PER_BATCH:
                break
            batch.append(item)
            points += item.points
        return batch

    def _failed(self, err: BaseException, doing: str) -> None:
        if self._down_since is None:  # one warning per outage, not one per retry
            self._down_since = time.monotonic()
            warn(
                f"{doing} to {self.where} failed ({_short(err)}); training goes on, metrics stay queued "
                "and are retried in the background"
            )
        self._attempts += 1

    def _recovered(self) -> None:
        if self._down_since is not None:
            note(f"{self.where} answers again after {time.monotonic() - self._down_since:.0f} s; sending the queue")
            self._down_since, self._attempts = None, 0

    def _pause(self) -> None:
        """Sleep before the next retry: 1, 2, 4 ... s capped, and only the shortest once ``close`` waits."""
        # the exponent is capped: 2.0 ** 1024 overflows, and with the default backoff (1 s .. 15 s) an outage
        # reaches that many attempts in ~4 h, which killed this thread and with it every later metric
        delay = min(self._backoff_hi, self._backoff_lo * 2.0 ** min(max(self._attempts - 1, 0), 60))
        with self._cond:
            if self._closing:
                delay = min(delay, self._backoff_lo)
            self._cond.wait(delay)


def _short(err: BaseException, limit: int = SHORT_ERROR_CHARS) -> str:
    """An error as one line of a warning, credentials redacted. A long one keeps its start and its end, cut
    at spaces: a chained error names its cause last (MLflow's connection errors end in "[Errno 111]
    Connection refused", after 300 characters of URLs), and a word cut in half reads as a typo."""
    text = redact_text(" ".join(str(err).split()))
    if len(text) > limit:
        half = limit // 2
        head = text[: half + 1].rsplit(" ", 1)[0]  # the +1: a space right at the cut keeps the word before it
        tail = text[-half - 1 :].split(" ", 1)[-1]
        text = f"{head} ... {tail}"
    return f"{type(err).__name__}: {text}"
