"""Where checkpoints are and which is the latest: path logic only (no torch), so the login-node commands
(``swat-dist submit``, ``jobs``) and the trainer read the ``latest`` pointer the same way."""

from __future__ import annotations

import re
from pathlib import Path

TAG = re.compile(r"^step_(\d+)$")


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def step_of(tag: str) -> int:
    """The optimizer step a tag (``step_00000120``) was saved at."""
    match = TAG.match(tag)
    if match is None:
        raise ValueError(f"{tag!r} is not a checkpoint tag (step_<digits>)")
    return int(match.group(1))


def latest_tag(ckpt_dir: Path) -> str | None:
    pointer = ckpt_dir / "latest"
    return pointer.read_text().strip() if pointer.is_file() else None


def resolve(run_dir: Path, resume: str) -> Path | None:
    """The checkpoint folder ``resume`` names: 'auto' (the run's latest, if any), 'none', or a path
    (a tag folder, or a checkpoints folder / run folder with a ``latest`` pointer)."""
    if resume == "none":
        return None
    if resume == "auto":
        tag = latest_tag(run_dir / "checkpoints")
        return run_dir / "checkpoints" / tag if tag else None
    path = Path(resume)
    for folder in (path, path / "checkpoints"):
        tag = latest_tag(folder)
        if tag:
            return folder / tag
    if (path / "meta.json").is_file():
        return path
    raise ValueError(f"{resume!r} is not a checkpoint folder, a checkpoints folder or a run folder with a 'latest'")
