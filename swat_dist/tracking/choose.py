"""Which tracker a rank gets, decided once at start (STYLE.md 8): MLflow on rank 0, the null one elsewhere.

The training side hands over plain values (the step and run id of the checkpoint it resumes, a weight
exporter), so tracking never imports training code.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..dist import DistEnv
from .base import NullTracker, Tracker

if TYPE_CHECKING:
    from .tracker import MlflowTracker

Exporter = Callable[[], list[Path]]


def make_tracker(
    cfg: Config, env: DistEnv, run_dir: Path, *, step: int = 0, run_id: str | None = None,
    resume_from: Path | None = None, exporter: Exporter | None = None,
) -> Tracker:  # fmt: skip
    """Rank 0's MLflow tracker; every other rank (and ``tracking.backend: none``) gets the null one.

    ``step``/``run_id``: those of the checkpoint ``resume_from`` (None for a fresh start). Resuming this
    run's own checkpoint continues its MLflow run and replays the ``metrics.jsonl`` lines up to that step
    (the store skips those it has); a checkpoint of another run folder starts a new run. A URI MLflow
    cannot use is reported once, and training goes on untracked. With several nodes and
    ``tracking.system_metrics``, every rank takes part in one broadcast of the run id, and local rank 0 of
    each other node logs its node's system metrics into that run. ``exporter`` writes the weights that
    ``tracking.log_weights`` uploads at the end.
    """
    t = cfg.tracking
    main = env.is_main and t.backend == "mlflow"
    tracker = _main_tracker(cfg, env, run_dir, step, run_id, resume_from, exporter) if main else None
    if t.backend == "mlflow" and t.system_metrics and env.num_nodes > 1:
        shared = _broadcast(tracker.run_id if tracker is not None else None)
        if not env.is_main and env.local_rank == 0 and shared is not None:
            from .tracker import NodeWatch

            NodeWatch(cfg, env, run_dir, shared)  # lives until the process exits (atexit)
    return tracker if tracker is not None else NullTracker()


def _main_tracker(
    cfg: Config, env: DistEnv, run_dir: Path, step: int, run_id: str | None, resume_from: Path | None,
    exporter: Exporter | None,
) -> MlflowTracker | None:  # fmt: skip
    from .tracker import open_tracker

    ours = resume_from is not None and run_dir.resolve() in resume_from.resolve().parents
    replay = logged_before(run_dir / "metrics.jsonl", step) if ours else []
    reuse_file = cfg.checkpoint.resume != "none" and (ours or resume_from is None)
    try:
        tracker = open_tracker(cfg, env, run_dir, run_id if ours else None, replay, reuse_file)
    except (ValueError, ImportError) as err:  # a URI MLflow cannot use; mlflow missing from this environment
        print(f"[tracking] warning: {err}; training goes on without tracking", file=sys.stderr)
        return None
    if cfg.tracking.log_weights and exporter is not None:
        tracker.exporter = exporter
    return tracker


def _broadcast(run_id: str | None) -> str | None:
    """Rank 0's run id on every rank (one small collective, once per job start)."""
    from ..collectives import broadcast_object

    return broadcast_object(run_id)


def logged_before(path: Path, step: int) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` up to the checkpoint's step, evaluations at that step included: the
    store keeps one of an evaluation the resumed run repeats, and keeps one the resumed run does not."""
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["step"] <= step]
