"""The one atomic-write helper: every file that must never look complete when it is not goes through it.

Used by the converters (index, reports, SHA256SUMS), the run folder (config.yaml, summary.json) and the
tracking run-id file; :func:`as_if_opened` gives the files other writers make private (safetensors) the
usual mode. Torch-free, so login-node code can use it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; files on a shared cluster must be readable like any other file (0644).
        as_if_opened(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def as_if_opened(path: str | Path) -> None:
    """Give ``path`` the mode ``open()`` would have (0666 less the umask: 0644 usually). For files written
    through a private temporary file (mkstemp, safetensors' ``save_file``), which are 0600 otherwise: a
    run's weights on a shared cluster must be readable like any other file. Not for files holding secrets."""
    umask = os.umask(0)  # reading the umask means setting it; set straight back
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
