"""The sweep's MLflow parent run: opened by the sweep's driver before anything is queued, ended by the
driver when it waits for the elements (local executor, ``--wait``), or else by the element that finishes
last (:func:`end_parent_when_all_done`, called from the job in :mod:`.submit`).

Below both :mod:`.submit` and :mod:`.sweep_submit`: it reads the sweep's records (:mod:`.sweep`) and imports
the tracker only when it runs (no mlflow at import: login-node code).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .sweep import SweepPlan, ended_summary, read_manifest


def open_parent(sweep: SweepPlan) -> dict[str, str] | None:
    """Open (or, on a re-run, continue) the parent run: the record the manifest keeps, None when tracking is off."""
    from ..tracking.tracker import open_sweep_parent

    old = (read_manifest(sweep.sweep_dir) or {}).get("tracking") or {}
    return open_sweep_parent(sweep.base, sweep.sweep_dir, sweep.name, sweep.grid, old.get("parent_run_id"))


def end_parent(sweep: SweepPlan, tracking: dict[str, str] | None, failed: list[str]) -> None:
    """The driver's end of the parent run: FAILED when an element failed, else FINISHED."""
    if tracking is None:
        return
    from ..tracking.tracker import end_sweep_parent

    end_sweep_parent(sweep.base, sweep.sweep_dir, tracking["parent_run_id"], "FAILED" if failed else "FINISHED")


def end_parent_when_all_done(cfg: Any, run_dir: Path) -> None:
    """Called by an element that has just finished: when every element of its sweep has, end the parent run.

    A sweep submitted without ``--wait`` has no driver left to do it, so the last element to finish does;
    each writes its own summary.json first, so the last one sees all of them (two at once: both end it,
    which is harmless). A sweep with a failed element stays RUNNING until that element is re-run."""
    sweep_dir = run_dir.parent
    manifest = read_manifest(sweep_dir) or {}
    parent = (manifest.get("tracking") or {}).get("parent_run_id")
    if not parent or run_dir.name not in manifest.get("elements", {}):
        return
    if all(ended_summary(sweep_dir / name) is not None for name in manifest["elements"]):
        from ..tracking.tracker import end_sweep_parent

        end_sweep_parent(cfg, sweep_dir, parent, "FINISHED")
