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
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any


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


# Used by the shipped datasets (digits, synthetic): whole-folder builds that are cheap to redo.
MARKER = "dataset.json"  # written last inside the staging folder: its presence means "complete"


def write_once(
    dst: str | Path, kind: str, options: dict[str, Any], fill: Callable[[Path], dict[str, Any]]
) -> tuple[dict[str, Any], bool]:
    """Build a dataset with ``fill(staging)`` in a :class:`StagedFolder`, then rename it to ``dst``.

    Returns ``(summary, written)``: ``fill``'s summary and True, or, when ``dst`` already holds this
    ``kind`` with these ``options``, the stored summary and False. Anything else at ``dst`` (other
    options, other files) is a one-line ``ValueError``: we never delete what we did not write.
    """
    dst = Path(dst)
    if dst.exists():
        done = _complete(dst, kind, options)
        if done is not None:
            return done, False
    # Files are not fsynced one by one (convert does): these data sets are cheap to write again.
    with StagedFolder(dst) as staged:
        summary = fill(staged.path)
        marker = {"kind": kind, "options": options, "summary": summary}
        (staged.path / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n")
        staged.commit()  # replaces an empty dst folder; a non-empty one was refused above
    return summary, True


def _complete(dst: Path, kind: str, options: dict[str, Any]) -> dict[str, Any] | None:
    """The stored summary if ``dst`` is this exact dataset, None if it is an empty folder, else raise."""
    if not dst.is_dir():
        raise ValueError(f"{dst} exists and is not a folder")
    marker = dst / MARKER
    if not marker.is_file():
        if any(dst.iterdir()):
            raise ValueError(f"{dst} exists and is not a {kind} dataset (no {MARKER}); remove it or pick another DST")
        return None
    try:
        found = json.loads(marker.read_text())
        same = found["kind"] == kind and found["options"] == options
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"{marker}: unreadable; remove {dst} or pick another DST") from None
    if not same:
        theirs, ours = _show(found["options"]), _show(options)
        raise ValueError(f"{dst} holds {found['kind']} with {theirs}, not {ours}; remove it or pick another DST")
    return dict(found["summary"])


def _show(options: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(options.items())) if isinstance(options, dict) else str(options)
