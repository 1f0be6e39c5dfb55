"""A node-local cache of a remote dataset's shards, bounded in bytes, filled ahead of the plan.

One folder per dataset (``cache_dir/<bucket>/<prefix>``), shared by every rank and loader worker of the
node; the plan says which shard each of them reads next, so the cache knows the future:

- **One download per node.** A shard is fetched under an exclusive ``flock`` on ``.<name>.lock``; whoever
  gets it second finds the file there. flock, not a lock file's existence: a killed process's lock goes
  with it, so nothing is left to clean by hand.
- **Atomic files.** Bytes go to ``.<name>@<host>@<pid>.part`` and are renamed into place once whole and of the
  index's size: a file named like a shard is always complete.
- **The bound is never exceeded.** Space is reserved before a download starts, under ``.cache.lock``:
  complete shards plus every ``.part`` counted at its final size must stay within ``max_bytes``. Parts of
  dead processes are removed there.
- **Eviction follows the plan** (Belady's rule, exact here because the plan is known): the cached shard
  whose next use lies furthest ahead goes first; a prefetch never evicts a shard needed sooner than the
  one it fetches (it skips, and the shard is fetched when due).
- **Prefetch** runs in a thread of each process that reads (each loader worker, or the rank itself with
  0 workers), ``prefetch`` shard groups ahead of the batch being read; the plan does not change, only
  where bytes come from, so every loader guarantee holds as on local disk. With workers the threads live
  in the workers, never in the process that forks them (a fork during a download could copy a held lock).

Left behind on purpose: the zero-byte ``.<name>.lock`` files (removing a lock file others may hold open
is a race; they cost an inode each).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .index import INDEX_NAME, DatasetIndex, parse_index
from .location import CacheSettings, S3Location
from .object_store import ObjectStore

Schedule = Callable[[int], list[int]]  # epoch -> shard ids in the order the plan first reads them
LOCK = ".cache.lock"
_HOST = socket.gethostname().replace("@", "_")
ROOM_WAIT_S = 60.0  # a read waits this long for others' downloads to finish before calling the bound too small


@contextlib.contextmanager
def _flock(path: Path, wait: bool = True) -> Iterator[bool]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as err:
        return err.errno == errno.EPERM
    return True


class ShardCache:
    """``path(name)``: the local copy of shard ``name``, downloaded if absent; ``reading(...)`` steers prefetch."""

    def __init__(self, store: ObjectStore, settings: CacheSettings, sizes: dict[str, int], names: list[str]) -> None:
        self.store, self.settings, self.sizes, self.names = store, settings, sizes, names
        self.folder = settings.root(store.location)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._schedule: Schedule = lambda epoch: list(range(len(names)))  # val: the stored order
        self._orders: dict[int, list[int]] = {}
        self._upcoming: list[int] = []  # shard ids (into names) from the previous group on: the plan's future
        self._ahead: tuple[list[int], int, int] = ([], 0, 0)  # what to prefetch: upcoming[first:end]
        self._pid = -1
        self._wake = threading.Event()
        self.prefetch_error: BaseException | None = None

    def follow(self, schedule: Schedule) -> None:
        """Read in the order ``schedule`` gives (the loader's plan); set before the loader forks its workers."""
        self._schedule, self._orders = schedule, {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}
            self._orders[epoch] = self._schedule(epoch)
        return self._orders[epoch]

    # --- reading -----------------------------------------------------------------------------------------
    def path(self, shard: int) -> Path:
        """Shard ``shard``'s local file, whole; downloads it now if no one has (waits if someone is)."""
        name = self.names[shard]
        final = self.folder / name
        while not final.is_file():
            self._fetch(name, urgent=True)
        return final

    def reading(self, epoch: int, shard: int) -> None:
        """The caller reads ``shard`` now in ``epoch``: move the prefetch window there."""
        order, group = self._order(epoch), self.settings.group
        at = order.index(shard) if shard in order else 0
        start = max(at // group - 1, 0) * group  # the group before stays: a batch may straddle two groups
        upcoming = order[start:] + self._order(epoch + 1)  # the next epoch's first groups follow on
        if upcoming[: 2 * group] == self._upcoming[: 2 * group]:
            return
        current = at // group * group - start
        # one assignment each: the prefetch thread reads them without a lock
        self._ahead = (upcoming, current, current + (self.settings.prefetch + 1) * group)
        self._upcoming = upcoming
        if self.settings.prefetch > 0:
            if self._pid != os.getpid():  # threads do not survive fork: one per reading process
                self._pid = os.getpid()
                threading.Thread(target=self._prefetch_loop, daemon=True, name="shard-prefetch").start()
            self._wake.set()

    def _prefetch_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            upcoming, first, end = self._ahead
            for shard in dict.fromkeys(upcoming[first:end]):  # the current group and ``prefetch`` more
                if self._wake.is_set():
                    break  # the reader moved on: start again from its new position
                name = self.names[shard]
                try:
                    if not (self.folder / name).is_file():
                        self._fetch(name, urgent=False)
                except Exception as err:  # the read that needs it raises the same error, one line, in its place
                    self.prefetch_error = err

    # --- fetching ----------------------------------------------------------------------------------------
    def _next_uses(self) -> Callable[[str], int]:
        """name -> its position in this process's view of the plan's future (furthest = evicted first;
        shards of another split: never, as far as this reader knows)."""
        upcoming = self._upcoming
        first = {self.names[s]: i for i, s in reversed(list(enumerate(upcoming)))}
        return lambda name: first.get(name, len(upcoming) + 1)

    def _fetch(self, name: str, urgent: bool) -> None:
        """Download ``name`` unless present. A prefetch skips a shard someone else is downloading, or one it
        could only fit by evicting shards needed sooner."""
        with _flock(self.folder / f".{name}.lock", wait=urgent) as got:
            if not got or (self.folder / name).is_file():
                return
            part = self._reserve(name, urgent)
            if part is None:
                return
            try:
                self.store.download(name, part, self.sizes[name])
                os.rename(part, self.folder / name)
            finally:
                part.unlink(missing_ok=True)

    def _reserve(self, name: str, urgent: bool) -> Path | None:
        """Make room for ``name`` within the bound and claim it with an empty ``.part`` file; None: skip."""
        need, deadline = self.sizes[name], time.monotonic() + ROOM_WAIT_S
        if need > self.settings.max_bytes:
            raise ValueError(f"{self.store.location.url(name)}: {need:,} bytes, more than data.cache_gb allows")
        while True:
            with _flock(self.folder / LOCK):
                room = self._make_room(name, need, urgent)
                if room:
                    part = self.folder / f".{name}@{_HOST}@{os.getpid()}.part"
                    part.touch()
                    return part
            if not urgent:
                return None
            if time.monotonic() > deadline:  # only reads still in flight hold the space: the bound is too small
                raise ValueError(
                    f"{self.folder}: no room for {name} within data.cache_gb "
                    f"({self.settings.max_bytes / 1e9:g} GB) - raise it or lower data.prefetch"
                )
            time.sleep(0.2)

    def _make_room(self, name: str, need: int, urgent: bool) -> bool:
        """Under the cache lock: evict until ``need`` more bytes fit; False if they cannot (yet)."""
        complete, used = {}, 0
        for entry in os.scandir(self.folder):
            if entry.name.endswith(".part"):
                shard, host, pid = [*entry.name[1 : -len(".part")].split("@"), "", ""][:3]
                # a download that died with its process; only this host's (a cache_dir on a shared file
                # system, against the advice, must not lose another node's downloads here)
                if host == _HOST and pid.isdigit() and not _alive(int(pid)):
                    Path(entry.path).unlink(missing_ok=True)
                    continue
                used += self.sizes.get(shard, entry.stat().st_size)  # counted at its final size
            elif not entry.name.startswith(".") and entry.is_file():
                complete[entry.name] = entry.stat().st_size
                used += complete[entry.name]
        next_use = self._next_uses()
        mine = next_use(name)
        for victim in sorted(complete, key=next_use, reverse=True):
            if used + need <= self.settings.max_bytes:
                break
            if not urgent and next_use(victim) <= mine:
                break  # a prefetch never pushes out what is read before the shard it fetches
            (self.folder / victim).unlink(missing_ok=True)
            used -= complete[victim]
        return used + need <= self.settings.max_bytes


def open_remote(location: S3Location, settings: CacheSettings, split: str) -> tuple[DatasetIndex, ShardCache]:
    """The index of the dataset at ``location`` and a cache for ``split``'s shards, checked before any read:
    the index and the object listing are read from the store (seconds), so a wrong endpoint, bucket,
    credentials, prefix or a deleted shard is a one-line error here, before training starts."""
    store = ObjectStore(location)
    index = parse_index(store.read(INDEX_NAME).decode(), location.url(INDEX_NAME))
    if split not in index.splits:
        return index, ShardCache(store, settings, {}, [])  # the caller reports the missing split
    listed = store.names()
    sizes = {f.path: f.bytes for info in index.splits.values() for f in info.files}
    for f in index.splits[split].files:
        if f.path not in listed:
            raise ValueError(f"{location.url(f.path)}: no such object (index.json lists it)")
        if listed[f.path] != f.bytes:
            raise ValueError(f"{location.url(f.path)}: {listed[f.path]:,} bytes, index.json says {f.bytes:,}")
    files = index.splits[split].files
    biggest = sorted((f.bytes for f in files), reverse=True)
    window = sum(biggest[: (settings.prefetch + 2) * settings.group])  # previous + current + prefetch groups
    if window > settings.max_bytes:
        raise ValueError(
            f"data.cache_gb {settings.max_bytes / 1e9:g}: {location} needs {window / 1e9:.3g} GB for "
            f"data.prefetch {settings.prefetch} + 2 groups of data.shard_group {settings.group} shards; "
            "raise data.cache_gb or lower data.prefetch / data.shard_group"
        )
    return index, ShardCache(store, settings, sizes, [f.path for f in files])
