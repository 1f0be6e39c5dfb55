"""The background queue: puts never block, order is kept through an outage, one warning per outage,
refused batches are dropped (not retried forever), and close waits a bounded time."""

from __future__ import annotations

import threading
import time

import pytest

from swat_dist.tracking.sender import MAX_METRICS_PER_BATCH, Item, Sender, _short


class Down(ConnectionError):
    pass


class Refused(ValueError):
    pass


class FakeStore:
    """Records what arrived; ``down`` fails every call, ``slow_s`` makes each send hang that long."""

    def __init__(self, down: bool = False, slow_s: float = 0.0) -> None:
        self.down, self.slow_s = down, slow_s
        self.got: list[tuple[str, object]] = []
        self.calls = 0
        self.opens = 0
        self.opened = threading.Event()

    def open(self) -> str:
        self.opens += 1
        if self.down:
            raise Down("no route to host")
        self.opened.set()
        return "run-1"

    def send(self, items: list[Item]) -> None:
        self.calls += 1
        time.sleep(self.slow_s)
        if self.down:
            raise Down("connection refused")
        if items[0].kind == "bad":
            raise Refused("invalid value")
        self.got += [(i.kind, p) for i in items for p in (i.payload if i.kind == "metrics" else [i.payload])]

    def transient(self, err: BaseException) -> bool:
        return isinstance(err, Down)


def metrics(step: int, n: int = 1) -> Item:
    return Item("metrics", [(f"k{i}", float(step), step, 0) for i in range(n)], points=n)


def test_order_survives_an_outage_with_one_warning(capfd):
    store = FakeStore()
    sender = Sender(store, "fake", backoff_s=(0.05, 0.2), linger_s=0.0)
    assert store.opened.wait(5) and sender.run_id == "run-1"
    sender.put(metrics(1))
    store.down = True
    for step in range(2, 40):
        sender.put(metrics(step))
    time.sleep(0.6)  # several retries while down
    store.down = False
    assert sender.close(timeout_s=10) == []
    assert [p[2] for _, p in store.got] == list(range(1, 40))  # every step, once, in order
    err = capfd.readouterr().err
    assert err.count("warning") == 1 and err.count("answers again") == 1, err
    assert store.calls < 40  # coalesced into batches, not one call per step


def test_put_never_waits_on_a_hung_store_and_close_is_bounded():
    store = FakeStore(slow_s=2.0)
    sender = Sender(store, "fake")
    assert store.opened.wait(5)
    start = time.perf_counter()
    for step in range(1, 1001):
        sender.put(metrics(step, 15))
    assert time.perf_counter() - start < 0.5  # ~1 us per put, whatever the store does
    start = time.perf_counter()
    left = sender.close(timeout_s=1.0)
    assert time.perf_counter() - start < 1.5
    assert sum(i.points for i in left) == 15 * 1000  # the first batch is still hanging: nothing lost, reported


def test_store_down_from_the_start_then_back():
    store = FakeStore(down=True)
    sender = Sender(store, "fake", backoff_s=(0.05, 0.1))
    assert sender.attempted.wait(5) and sender.run_id is None
    sender.put(metrics(1))
    store.down = False
    assert sender.close(timeout_s=10) == [] and sender.run_id == "run-1"
    assert store.got == [("metrics", ("k0", 1.0, 1, 0))]


def test_a_long_outage_does_not_kill_the_sender():
    """Over 1,024 failed attempts (~4 h of outage at the default backoff) the doubling backoff overflowed a
    float and the worker thread died; now the store's return still gets every item through."""
    store = FakeStore()
    sender = Sender(store, "fake", backoff_s=(1e-7, 1e-6), linger_s=0.0)
    assert store.opened.wait(5)
    store.down = True
    sender.put(metrics(1))
    deadline = time.monotonic() + 60
    while store.calls < 1500 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.calls >= 1500 and sender._thread.is_alive()
    store.down = False
    sender.put(metrics(2))
    assert sender.close(timeout_s=10) == []
    assert store.got == [("metrics", ("k0", 1.0, 1, 0)), ("metrics", ("k0", 2.0, 2, 0))]


def test_close_of_a_run_never_opened_returns_after_one_last_attempt():
    """Nowhere to send: close tries to open the run once more (a server started late is still caught) and
    then returns everything unsent at once, instead of waiting out its timeout."""
    store = FakeStore(down=True)
    sender = Sender(store, "fake")  # the default backoff: 1 s, then 2, 4 ... 15
    assert sender.attempted.wait(5) and sender.run_id is None
    sender.put(metrics(1, 3))
    before = store.opens
    start = time.perf_counter()
    left = sender.close(timeout_s=30)
    assert time.perf_counter() - start < 3  # at most one backoff (1 s) and one attempt
    assert sum(i.points for i in left) == 3 and sender.run_id is None
    assert store.opens > before  # the last attempt was made


def test_close_after_the_store_went_away_mid_run_still_waits_its_timeout():
    """With a run open, the store may come back: close keeps retrying for the whole (bounded) timeout."""
    store = FakeStore()
    sender = Sender(store, "fake", backoff_s=(0.05, 0.1), linger_s=0.0)
    assert store.opened.wait(5)
    store.down = True
    sender.put(metrics(1))
    start = time.perf_counter()
    left = sender.close(timeout_s=1.0)
    assert 0.9 < time.perf_counter() - start < 2.0 and [i.points for i in left] == [1]


def test_a_long_error_keeps_its_start_and_its_cause_cut_between_words_and_redacted():
    url = "https://bob:hunter2@host:5000/api/2.0/mlflow/experiments/get-by-name"
    err = ConnectionError(f"API request to {url} failed with exception " + "padding " * 40
                          + "Failed to establish a new connection: [Errno 111] Connection refused")  # fmt: skip
    text = _short(err)
    assert text.startswith("ConnectionError: API request to https://bob:***@host") and "hunter2" not in text
    assert text.endswith("[Errno 111] Connection refused") and " ... " in text and len(text) < 240
    words = set(str(err).replace("hunter2", "***").split()) | {"ConnectionError:", "..."}
    assert set(text.split()) <= words  # whole words only: none cut in half
    assert _short(ConnectionError("short  and\nsimple")) == "ConnectionError: short and simple"


def test_a_refused_batch_is_dropped_and_the_rest_goes_through(capfd):
    store = FakeStore()
    sender = Sender(store, "fake")
    sender.put(metrics(1, 3))
    sender.put(Item("bad", None))
    sender.put(metrics(2))
    assert sender.close(timeout_s=10) == []
    assert [p[2] for _, p in store.got] == [1, 1, 1, 2]
    assert "refused ['bad']" in capfd.readouterr().err


@pytest.mark.parametrize("sizes", [[600, 600], [1, MAX_METRICS_PER_BATCH], [10] * 250])
def test_batches_respect_mlflows_limit(sizes):
    store = FakeStore(slow_s=0.01)
    seen: list[int] = []
    real_send = store.send
    store.send = lambda items: (seen.append(sum(i.points for i in items)), real_send(items))[1]  # type: ignore[method-assign]
    sender = Sender(store, "fake")
    for step, n in enumerate(sizes, 1):
        sender.put(metrics(step, n))
    assert sender.close(timeout_s=20) == []
    assert max(seen) <= MAX_METRICS_PER_BATCH and sum(seen) == sum(sizes)


def test_lingering_sends_one_batch_per_second_not_one_per_step():
    store = FakeStore()
    sender = Sender(store, "fake", linger_s=0.5)
    assert store.opened.wait(5)
    for step in range(1, 51):  # 50 steps logged 10 ms apart: 0.5 s
        sender.put(metrics(step, 14))
        time.sleep(0.01)
    assert sender.close(timeout_s=10) == []
    assert [p[2] for _, p in store.got] == [s for s in range(1, 51) for _ in range(14)]
    assert store.calls <= 3, store.calls  # 700 values in one or two batches (plus a remainder at close)
