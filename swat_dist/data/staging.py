"""Build an output folder beside its destination, then move it into place with one rename.

``DST`` never holds a partial result: everything is written to ``.DST.partial`` (same parent, so the same
filesystem and an atomic ``rename``), files are fsynced, and the folder is renamed to ``DST`` only after
the writer has put its completion marker (``index.json``) inside. A run that dies - even by SIGKILL -
leaves at most ``.DST.partial`` (or, if it dies between the two renames of a replacement, ``.DST.old``),
both removed by the next run before it starts. A lock file ``.DST.lock`` (``flock``, released by the
kernel when its holder dies) keeps two runs from building the same destination at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path
from types import TracebackType


def fsync_file(path: Path) -> None:
    """Flush ``path`` to disk: a renamed folder must not outlive its contents after a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # some filesystems cannot fsync a directory; the rename still stands, only its durability is weaker
    with contextlib.suppress(OSError):
        fsync_file(path)


class StagedFolder:
    """Context manager: ``path`` to write into, :meth:`commit` to publish it as ``dst``.

    Leaving the context without a commit (an error, Ctrl-C, a rejected result) removes ``path``.
    """

    def __init__(self, dst: Path) -> None:
        self.dst = dst
        self.path = dst.parent / f".{dst.name}.partial"
        self._old = dst.parent / f".{dst.name}.old"
        self._lock_path = dst.parent / f".{dst.name}.lock"
        self._lock_fd: int | None = None

    def __enter__(self) -> StagedFolder:
        self.dst.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ValueError(f"{self.dst}: another conversion is writing it (lock {self._lock_path} is held)") from None
        self._lock_fd = fd
        for stale in (self.path, self._old):  # leftovers of a run that was killed: never complete, ours by name
            shutil.rmtree(stale, ignore_errors=True)
        self.path.mkdir()
        return self

    def commit(self) -> None:
        """Replace ``dst`` (absent, an empty folder, or a dataset the caller decided to overwrite)."""
        _fsync_dir(self.path)
        if self.dst.exists():
            os.rename(self.dst, self._old)
        os.rename(self.path, self.dst)
        _fsync_dir(self.dst.parent)
        shutil.rmtree(self._old, ignore_errors=True)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._lock_fd is not None:
            self._lock_path.unlink(missing_ok=True)
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None
